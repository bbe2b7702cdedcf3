"""Unmanaged connect-proxy registrations with -proxy-id: Consul 1.3+ (Proxy{...}, /v1/agent/service/<id>)
and Consul 1.2 (ProxyDestination; no /v1/agent/service/<id>: falls back to /v1/agent/services)."""
import harness
import spoa_support
from certsync_support import call, ddir, passing, register, start_certsync  # noqa: F401 - ddir is a fixture


def _mesh_unmanaged(procs, sim, ddir, v12):  # noqa: F811
    echo = spoa_support.start_echo(procs)
    local = harness.free_port()
    redis_port, web_port = harness.free_port(), harness.free_port()
    register(sim, {"Name": "redis", "Port": echo})
    register(sim, {"Name": "web", "Port": harness.free_port()})
    if v12:
        register(sim, {"Name": "redis-proxy", "Kind": "connect-proxy", "ProxyDestination": "redis",
                       "Port": redis_port})
        # 1.2 unmanaged proxies have no upstreams in their registration; web's is the server side here too
        register(sim, {"Name": "web-proxy", "Kind": "connect-proxy", "ProxyDestination": "web", "Port": web_port})
    else:
        register(sim, {"Name": "redis-proxy", "Kind": "connect-proxy", "Port": redis_port,
                       "Proxy": {"DestinationServiceName": "redis", "DestinationServiceID": "redis",
                                 "LocalServicePort": echo}})
        register(sim, {"Name": "web-proxy", "Kind": "connect-proxy", "Port": web_port,
                       "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web",
                                 "LocalServicePort": harness.free_port(),
                                 "Upstreams": [{"DestinationName": "redis", "LocalBindPort": local}]}})
    passing(sim, "redis-proxy")
    redis = start_certsync(procs, sim, ddir("redis"), ["-proxy-id", "redis-proxy"], name="certsync-redis")
    web = start_certsync(procs, sim, ddir("web"), ["-proxy-id", "web-proxy"], name="certsync-web")
    return redis, web, local, redis_port


def test_unmanaged_13(procs, sim, ddir):  # noqa: F811
    redis, web, local, _ = _mesh_unmanaged(procs, sim, ddir, v12=False)
    harness.wait_until(lambda: call(local) == b"ping\n", 30, what="traffic web -> redis (1.3+)")
    assert "/v1/agent/services" not in web.log()


def test_unmanaged_12(procs, tmp_path, ddir):  # noqa: F811
    sim = harness.start_sim(procs, tmp_path, args=["--consul-version", "1.2.3"], name="consul-sim-12")
    redis, web, _, redis_port = _mesh_unmanaged(procs, sim, ddir, v12=True)
    harness.wait_until(lambda: "polling /v1/agent/services" in redis.log(), 20, what="1.2 fallback")
    # the 1.2 proxy serves mutual TLS for redis with the destination's port from /v1/agent/services
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "web")
    ca = tmp_path / "roots.pem"
    ca.write_text(spoa_support.roots_pem(sim))
    harness.wait_until(lambda: spoa_support.mtls_call(redis_port, str(ca), cert, key) == b"ping\n", 30,
                       what="mTLS call to the 1.2 unmanaged proxy")
    assert web.alive() and redis.alive()
