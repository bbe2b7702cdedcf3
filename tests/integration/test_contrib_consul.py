"""Every Consul service definition in contrib/consul/ is loaded by the agent simulator as a config file
(--config-file, as `consul agent -config-file` would) and the proxy it describes is run against it; each test
proves traffic flows end to end for what the definition promises.

What the tests change in a definition, and why (nothing else is touched):
- fixed ports (the service's own port, bind_port, local_bind_port, an unmanaged proxy's port) become free
  ports, since fixed ones would clash on a shared machine; the local app behind each is an echo server
  (or a small HTTP server for protocol http);
- managed-custom-command.json names absolute paths: its binary becomes build/connect-certsync, its -data-dir
  a short directory under /tmp and its -stats-addr a free port;
- the bare command "connect-certsync" is run as written: the simulator's PATH gets build/ in front (and
  /usr/sbin, for the default "haproxy"), and TMPDIR a short directory, which is where the proxy's default
  data dir goes.
The simulator runs with ACLs off, so intentions default to allow (Consul's dev agent does the same).
"""
import json
import os
import signal
import tempfile
import urllib.request

import pytest

import harness
import spoa_support
from certsync_support import call, ddir, passing, register, start_certsync  # noqa: F401 - ddir is a fixture

CONTRIB = os.path.join(harness.TOP, "contrib", "consul")
TESTED = {"managed-minimal.json", "managed-custom-command.json", "managed-upstreams.json",
          "managed-prepared-query.json", "sidecar-service.json", "unmanaged-1.2-proxy-destination.json",
          "unmanaged-1.3-proxy.json"}


def load(name):
    with open(os.path.join(CONTRIB, name)) as f:
        return json.load(f)


def write_defs(tmp_path, defs):
    """Writes each (name, definition) into tmp_path; returns the --config-file arguments."""
    args = []
    for name, d in defs:
        p = os.path.join(str(tmp_path), "def-" + name)
        with open(p, "w") as f:
            json.dump(d, f)
        args += ["--config-file", p]
    return args


@pytest.fixture
def managed_env(monkeypatch, ddir):  # noqa: F811
    """The environment the simulator (the "agent") runs with, so that a managed proxy's bare command
    "connect-certsync" resolves to our build and its default data dir is short. Returns that TMPDIR."""
    tmpdir = ddir("tmp")
    bindir = os.path.dirname(os.path.abspath(harness.bin_path("connect-certsync")))
    monkeypatch.setenv("PATH", ":".join([bindir, os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    monkeypatch.setenv("TMPDIR", tmpdir)
    for k in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONNECT_PROXY_ID", "CONSUL_PROXY_ID"):
        monkeypatch.delenv(k, raising=False)
    return tmpdir


@pytest.fixture
def launched(procs):
    """Stops a --launch-managed simulator itself (it SIGINTs its proxies, which stop HAProxy and
    connect-spoa) and then kills whatever of theirs is left: managed proxies run in their own sessions, out
    of reach of the procs fixture."""
    sims = []
    yield sims
    pids = []
    for sim in sims:
        try:
            for pid in sim.control("GET", "/_sim/state", timeout=5).get("managed", {}):
                proc = sim.control("GET", "/_sim/proxy/%s" % pid, timeout=5).get("Process") or {}
                if proc.get("Pid"):
                    pids.append(proc["Pid"])
        except (AssertionError, OSError, ValueError):
            pass
    for sim in sims:
        sim.proc.stop(timeout=20)
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def start_launching_sim(procs, tmp_path, launched, defs, args=()):
    """A simulator that loads defs and runs their managed proxies (--launch-managed)."""
    data = tempfile.mkdtemp(prefix="sim-", dir=str(tmp_path))
    sim = harness.start_sim(procs, tmp_path, args=["--launch-managed", "--data-dir", data] +
                            write_defs(tmp_path, defs) + list(args))
    sim.data_dir = data
    launched.append(sim)
    return sim


def managed_log(sim, proxy_id):
    path = os.path.join(sim.data_dir, "proxy", "logs", "%s-stderr.log" % proxy_id)
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def service_port(sim, sid):
    st, _, svcs = sim.api("GET", "/v1/agent/services")
    assert st == 200 and sid in svcs, svcs
    return svcs[sid]["Port"]


def caller(sim, tmp_path, service="web"):
    """(roots path, cert path, key path) of a caller of the mesh, certificate made by the simulator's CA."""
    ca = os.path.join(str(tmp_path), "roots.pem")
    with open(ca, "w") as f:
        f.write(spoa_support.roots_pem(sim))
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, service)
    return ca, cert, key


def wait_mtls(port, ca, cert, key, what, logs=lambda: ""):
    try:
        harness.wait_until(lambda: spoa_support.mtls_call(port, ca, cert, key, b"contrib\n") == b"contrib\n", 40,
                           what=what)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, logs()[-4000:]))


def wait_upstream(port, what, logs=lambda: ""):
    try:
        harness.wait_until(lambda: call(port) == b"ping\n", 40, what=what)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, logs()[-4000:]))


def minimal_redis(echo):
    """managed-minimal.json with its fixed service port (6379) replaced by the echo server's port."""
    d = load("managed-minimal.json")
    d["service"]["port"] = echo
    return d


def start_managed(procs, sim, ddir, proxy_id, name):  # noqa: F811
    """connect-certsync for a managed proxy, started here with the environment the agent gives it."""
    env = sim.control("GET", "/_sim/proxy/%s" % proxy_id)["Env"]
    return start_certsync(procs, sim, ddir(name), [], name=name, env=env)


def test_every_definition_is_tested():
    assert set(n for n in os.listdir(CONTRIB) if n.endswith(".json")) == TESTED


def test_managed_minimal(procs, tmp_path, managed_env, launched):
    """The bare command "connect-certsync", no flags: the agent starts it with CONNECT_PROXY_ID; it finds
    HAProxy on PATH and connect-spoa next to itself, keeps its files in $TMPDIR/haproxy-connect-<proxy id>
    and serves mutual TLS for redis on the port the agent allocated."""
    echo = spoa_support.start_echo(procs)
    sim = start_launching_sim(procs, tmp_path, launched, [("managed-minimal.json", minimal_redis(echo))])
    assert sim.control("GET", "/_sim/proxy/redis-proxy")["Command"] == ["connect-certsync"]
    ca, cert, key = caller(sim, tmp_path)
    wait_mtls(service_port(sim, "redis-proxy"), ca, cert, key, "mTLS call to the managed redis proxy",
              lambda: managed_log(sim, "redis-proxy"))
    assert os.path.exists(os.path.join(managed_env, "haproxy-connect-redis-proxy", "leaf.pem"))


def test_managed_custom_command(procs, tmp_path, managed_env, launched, ddir):  # noqa: F811
    """A daemon-mode command with its own flags and protocol http: HTTP requests with a caller certificate
    reach the app, the access log (debug level) names the caller, and -stats-addr serves /metrics."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.txt").write_text("api says hello\n")
    app = harness.free_port()
    procs.start("http-app", [harness.PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                             str(site), str(app)])
    harness.wait_until(lambda: harness.port_open(app), 10, what="http app")
    d = load("managed-custom-command.json")
    cmd = d["service"]["connect"]["proxy"]["command"]
    assert cmd[0] == "/usr/local/bin/connect-certsync"
    cmd[0] = os.path.abspath(harness.bin_path("connect-certsync"))
    cmd[cmd.index("-haproxy-bin") + 1] = spoa_support.HAPROXY
    data_dir = ddir("api")
    cmd[cmd.index("-data-dir") + 1] = data_dir
    stats = harness.free_port()
    cmd[cmd.index("-stats-addr") + 1] = "127.0.0.1:%d" % stats
    d["service"]["port"] = app
    sim = start_launching_sim(procs, tmp_path, launched, [("managed-custom-command.json", d)])
    ca, cert, key = caller(sim, tmp_path)
    inbound = service_port(sim, "api-proxy")
    ctx = spoa_support.mtls_context(ca, cert, key)

    def get():
        with urllib.request.urlopen("https://127.0.0.1:%d/index.txt" % inbound, context=ctx, timeout=5) as r:
            return r.status, r.read()
    try:
        res = harness.wait_until(get, 40, what="HTTPS call to the managed api proxy")
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, managed_log(sim, "api-proxy")[-4000:]))
    assert res == (200, b"api says hello\n")
    harness.wait_until(lambda: 'source=web "GET /index.txt HTTP/1.1"' in managed_log(sim, "api-proxy"), 15,
                       what="HTTP access log line in the managed proxy's log")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % stats, timeout=5) as r:
        metrics = r.read().decode()
    assert 'haproxy_frontend_http_responses_total{proxy="inbound",code="2xx"}' in metrics
    assert os.path.exists(os.path.join(data_dir, "haproxy.cfg"))


def test_managed_upstreams(procs, tmp_path, managed_env, launched):
    """web (managed, explicit listener, local service address, timeouts, an upstream redis on a local port)
    and redis (managed-minimal.json): a plain client of web's upstream port reaches redis's app over mutual
    TLS, and a mesh caller reaches web's app on bind_port."""
    redis_echo = spoa_support.start_echo(procs)
    web_echo = spoa_support.start_echo(procs)
    d = load("managed-upstreams.json")
    p = d["service"]["connect"]["proxy"]
    assert p["config"]["bind_port"] == 20000 and p["upstreams"][0]["local_bind_port"] == 1234
    d["service"]["port"] = web_echo
    p["config"]["bind_port"] = harness.free_port()
    p["config"]["local_service_address"] = "127.0.0.1:%d" % web_echo
    local = harness.free_port()
    p["upstreams"][0]["local_bind_port"] = local
    sim = start_launching_sim(procs, tmp_path, launched, [("managed-minimal.json", minimal_redis(redis_echo)),
                                                          ("managed-upstreams.json", d)])
    passing(sim, "redis-proxy")
    wait_upstream(local, "web's upstream redis (managed)",
                  lambda: managed_log(sim, "web-proxy") + managed_log(sim, "redis-proxy"))
    ca, cert, key = caller(sim, tmp_path, "api")
    wait_mtls(p["config"]["bind_port"], ca, cert, key, "mTLS call to web's bind_port",
              lambda: managed_log(sim, "web-proxy"))
    # the definition's address and timeouts are the ones HAProxy runs with
    with open(os.path.join(managed_env, "haproxy-connect-web-proxy", "haproxy.cfg")) as f:
        cfg = f.read()
    assert "bind 0.0.0.0:%d ssl " % p["config"]["bind_port"] in cfg
    assert "timeout client 10000" in cfg                # handshake_timeout_ms
    assert "timeout connect 1000\n" in cfg             # local_connect_timeout_ms
    assert "server app 127.0.0.1:%d" % web_echo in cfg  # local_service_address
    assert "timeout connect 2000" in cfg                # the upstream's connect_timeout_ms


def test_managed_prepared_query(procs, tmp_path, ddir):  # noqa: F811
    """web's upstream is the prepared query redis-nearest; both proxies (web, and redis from
    managed-minimal.json) are started here with the environment the agent gives a managed proxy
    (GET /_sim/proxy/<id>) instead of being launched by the simulator, so the query exists first."""
    echo = spoa_support.start_echo(procs)
    d = load("managed-prepared-query.json")
    up = d["service"]["connect"]["proxy"]["upstreams"][0]
    assert up["destination_type"] == "prepared_query" and up["local_bind_port"] == 1235
    d["service"]["port"] = harness.free_port()
    local = harness.free_port()
    up["local_bind_port"] = local
    sim = harness.start_sim(procs, tmp_path, args=write_defs(tmp_path, [
        ("managed-minimal.json", minimal_redis(echo)), ("managed-prepared-query.json", d)]))
    st, _, out = sim.api("POST", "/v1/query", {"Name": up["destination_name"],
                                               "Service": {"Service": "redis", "Near": "_agent"}})
    assert st == 200, out
    passing(sim, "redis-proxy")
    cs_redis = start_managed(procs, sim, ddir, "redis-proxy", "certsync-redis")
    cs_web = start_managed(procs, sim, ddir, "web-proxy", "certsync-web")
    wait_upstream(local, "web's prepared-query upstream", lambda: cs_web.log() + cs_redis.log())
    assert sim.control("GET", "/_sim/requests?path=/v1/query/%s/execute" % up["destination_name"])


def test_sidecar_service(procs, tmp_path, ddir):  # noqa: F811
    """connect.sidecar_service with an upstream, run with -sidecar-for web (the sidecar's port is the one the
    agent allocated); redis is managed-minimal.json."""
    echo = spoa_support.start_echo(procs)
    web_echo = spoa_support.start_echo(procs)
    web = load("sidecar-service.json")
    web["service"]["port"] = web_echo
    local = harness.free_port()
    web["service"]["connect"]["sidecar_service"]["proxy"]["upstreams"][0]["local_bind_port"] = local
    sim = harness.start_sim(procs, tmp_path, args=write_defs(tmp_path, [
        ("sidecar-service.json", web), ("managed-minimal.json", minimal_redis(echo))]))
    passing(sim, "redis-proxy")
    cs_redis = start_managed(procs, sim, ddir, "redis-proxy", "certsync-redis")
    cs_web = start_certsync(procs, sim, ddir("web"), ["-sidecar-for", "web"], name="certsync-web")
    wait_upstream(local, "the sidecar's upstream redis", lambda: cs_web.log() + cs_redis.log())
    # the sidecar also serves web's inbound side on its allocated port, forwarding to web's port
    ca, cert, key = caller(sim, tmp_path, "api")
    wait_mtls(service_port(sim, "web-sidecar-proxy"), ca, cert, key, "mTLS call to web's sidecar", cs_web.log)


def test_unmanaged_12_proxy_destination(procs, tmp_path, ddir):  # noqa: F811
    """A Consul 1.2 connect-proxy registration (proxy_destination): run with -proxy-id on a 1.2 agent, it
    serves mutual TLS for redis and forwards to the redis service's port."""
    echo = spoa_support.start_echo(procs)
    d = load("unmanaged-1.2-proxy-destination.json")
    assert d["service"]["port"] == 21000
    d["service"]["port"] = harness.free_port()
    sim = harness.start_sim(procs, tmp_path, args=["--consul-version", "1.2.3"] + write_defs(
        tmp_path, [("unmanaged-1.2-proxy-destination.json", d)]))
    register(sim, {"Name": "redis", "Port": echo})
    cs = start_certsync(procs, sim, ddir("redis"), ["-proxy-id", "redis-proxy"], name="certsync-redis")
    ca, cert, key = caller(sim, tmp_path)
    wait_mtls(d["service"]["port"], ca, cert, key, "mTLS call to the 1.2 unmanaged proxy", cs.log)


def test_unmanaged_13_proxy(procs, tmp_path, ddir):  # noqa: F811
    """A Consul 1.3+ connect-proxy registration (proxy{...} with an upstream), run with -proxy-id web-proxy:
    a mesh caller reaches web's app at local_service_address:local_service_port, and web's upstream reaches
    redis (managed-minimal.json)."""
    web_echo = spoa_support.start_echo(procs)
    redis_echo = spoa_support.start_echo(procs)
    d = load("unmanaged-1.3-proxy.json")
    p = d["service"]["proxy"]
    assert d["service"]["port"] == 21001 and p["local_service_port"] == 8080
    d["service"]["port"] = harness.free_port()
    p["local_service_port"] = web_echo
    local = harness.free_port()
    p["upstreams"][0]["local_bind_port"] = local
    sim = harness.start_sim(procs, tmp_path, args=write_defs(tmp_path, [
        ("unmanaged-1.3-proxy.json", d), ("managed-minimal.json", minimal_redis(redis_echo))]))
    register(sim, {"Name": "web", "Port": web_echo})
    passing(sim, "redis-proxy")
    cs_redis = start_managed(procs, sim, ddir, "redis-proxy", "certsync-redis")
    cs_web = start_certsync(procs, sim, ddir("web"), ["-proxy-id", "web-proxy"], name="certsync-web")
    ca, cert, key = caller(sim, tmp_path, "api")
    wait_mtls(d["service"]["port"], ca, cert, key, "mTLS call to the 1.3 unmanaged web proxy", cs_web.log)
    wait_upstream(local, "web-proxy's upstream redis", lambda: cs_web.log() + cs_redis.log())
