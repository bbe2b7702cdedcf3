"""Managed proxies (Consul 1.2-1.5): the docs' example (web with upstream redis on a local port) and the
minimal definition ("connect": {"proxy": {}}), started with the environment Consul gives a managed proxy."""
import harness
import spoa_support
from certsync_support import call, ddir, register, start_certsync  # noqa: F401 - ddir is a fixture


def _start_managed(procs, sim, ddir, proxy_id, name):  # noqa: F811
    env = sim.control("GET", "/_sim/proxy/%s" % proxy_id)["Env"]
    return start_certsync(procs, sim, ddir(name), [], name=name, env=env)


def test_managed_docs_example(procs, sim, ddir):  # noqa: F811
    echo = spoa_support.start_echo(procs)
    local = harness.free_port()
    # redis: the minimal managed definition (port allocated by the agent, defaults for everything)
    register(sim, {"Name": "redis", "Port": echo, "Connect": {"Proxy": {}}})
    # web: the docs' example, upstream redis on a local port (1.2 snake_case Config.upstreams)
    register(sim, {"Name": "web", "Port": harness.free_port(), "Connect": {"Proxy": {"Config": {
        "bind_port": harness.free_port(),
        "upstreams": [{"destination_name": "redis", "local_bind_port": local}]}}}})
    sim.control("PUT", "/_sim/health", {"ServiceID": "redis-proxy", "Status": "passing"})
    redis = _start_managed(procs, sim, ddir, "redis-proxy", "certsync-redis")
    web = _start_managed(procs, sim, ddir, "web-proxy", "certsync-web")
    harness.wait_until(lambda: call(local) == b"ping\n", 30, what="traffic web -> redis (managed)")
    # the proxy token from the environment is what the daemons send
    reqs = sim.control("GET", "/_sim/requests?path=/v1/agent/connect/proxy/web-proxy")
    token = sim.control("GET", "/_sim/proxy/web-proxy")["ProxyToken"]
    assert reqs and all(r["Token"] == token for r in reqs), reqs
    assert "managed proxy web-proxy" in web.log()
    assert redis.alive() and web.alive()
