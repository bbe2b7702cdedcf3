"""README "Metrics and logs": every series the section names exists in a real scrape, and the ones that
count what operators watch (connections, bytes, denials, agent errors) move when that happens.

HAProxy's exporter: two sidecar proxies (web -> redis, certsync_support.Mesh) run with -stats-addr on free
ports. connect-spoa's -metrics-addr: a standalone connect-spoa behind HAProxy (spoa_support.setup_stack).
"""
import os
import re
import urllib.request

import harness
import spoa_support
from certsync_support import Mesh, call, ddir  # noqa: F401 - ddir is a fixture

README = os.path.join(harness.TOP, "README.md")


def readme_series(prefix):
    """[(name, {label: value})] named in backticks in README's "Metrics and logs" section. A backticked label
    set alone (`{result="deny"}`) belongs to the series named before it."""
    with open(README) as f:
        text = f.read()
    start = text.index("\n## Metrics and logs")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    out = []
    last = None
    for tok in re.findall(r"`([^`]+)`", section):
        m = re.fullmatch(r"([a-z_]+)?(\{[^}]*\})?", tok)
        if not m or not (m.group(1) or m.group(2)):
            continue
        name = m.group(1)
        if name is None:
            if last is None:
                continue
            name = last
        elif not name.startswith(("haproxy_", "connect_spoa_")):
            continue
        last = name
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if name.startswith(prefix):
            out.append((name, labels))
    return out


def scrape(port):
    """{(name, frozenset(labels)): value} of a Prometheus text endpoint."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def find(metrics, name, **labels):
    """Values of the series called name (or its histogram _bucket/_count) whose labels include labels."""
    want = set(labels.items())
    return [v for (n, ls), v in metrics.items()
            if n in (name, name + "_bucket", name + "_count") and want <= set(ls)]


def value(metrics, name, **labels):
    vals = find(metrics, name, **labels)
    assert len(vals) == 1, (name, labels, vals)
    return vals[0]


def test_haproxy_series(procs, sim, tmp_path, ddir):  # noqa: F811
    web_stats, redis_stats = harness.free_port(), harness.free_port()
    m = Mesh(procs, sim, ddir, web_args=["-sidecar-for", "web", "-stats-addr", "127.0.0.1:%d" % web_stats],
             redis_args=["-sidecar-for", "redis", "-stats-addr", "127.0.0.1:%d" % redis_stats])
    m.wait_flowing()
    assert call(m.local, b"x" * 1000) == b"x" * 1000
    # a caller whose certificate does not verify (none at all): a connection, never a session
    ca = str(tmp_path / "roots.pem")
    with open(ca, "w") as f:
        f.write(spoa_support.roots_pem(sim))
    before = scrape(redis_stats)
    assert spoa_support.mtls_call(m.redis_port, ca) is None
    after = scrape(redis_stats)
    assert value(after, "haproxy_frontend_connections_total", proxy="inbound") >= \
        value(before, "haproxy_frontend_connections_total", proxy="inbound") + 1
    assert value(after, "haproxy_frontend_sessions_total", proxy="inbound") == \
        value(before, "haproxy_frontend_sessions_total", proxy="inbound")
    # a deny intention: web's next calls are refused by redis's inbound frontend and counted there
    spoa_support.intention(sim, "web", "redis", "deny")
    harness.wait_until(lambda: call(m.local) is None, 20, what="deny takes effect")
    redis, web = scrape(redis_stats), scrape(web_stats)
    assert value(redis, "haproxy_frontend_requests_denied_total", proxy="inbound") >= 1
    assert value(redis, "haproxy_frontend_bytes_in_total", proxy="inbound") >= 1000
    assert value(redis, "haproxy_backend_sessions_total", proxy="local_app") >= 2
    assert value(redis, "haproxy_server_status", proxy="spoa", server="spoa", state="UP") == 1
    # web's upstream redis is upstream 0: backend redis_0 behind frontend up_redis_0
    assert value(web, "haproxy_frontend_connections_total", proxy="up_redis_0") >= 3
    assert value(web, "haproxy_backend_bytes_out_total", proxy="redis_0") >= 1000
    assert value(web, "haproxy_backend_active_servers", proxy="redis_0") == 1
    # and every HAProxy series the README names is there
    named = readme_series("haproxy_")
    assert len(named) >= 10, named
    both = dict(web)
    both.update(redis)
    for name, labels in named:
        labels = {k: v.replace("up_<backend>", "up_redis_0").replace("<backend>", "redis_0")
                  for k, v in labels.items()}
        assert find(both, name, **labels), "README names %s%s, not in the scrape" % (name, labels)


def test_connect_spoa_series(procs, sim, tmp_path):
    mport = harness.free_port()
    st = spoa_support.setup_stack(procs, sim, tmp_path, spoa_args=["-metrics-addr", "127.0.0.1:%d" % mport])
    spoa_support.intention(sim, "api", "db", "deny")
    web = spoa_support.client_cert(sim, tmp_path, "web")
    api = spoa_support.client_cert(sim, tmp_path, "api")
    assert spoa_support.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
    assert spoa_support.mtls_call(st["port"], st["ca"], api[0], api[1]) is None
    # the agent fails authorize calls: a caller not cached yet is refused, and the failure is counted
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/authorize", "Status": 500})
    other = spoa_support.client_cert(sim, tmp_path, "billing")
    assert spoa_support.mtls_call(st["port"], st["ca"], other[0], other[1]) is None
    m = scrape(mport)
    assert value(m, "connect_spoa_decisions_total", result="allow") == 1
    assert value(m, "connect_spoa_decisions_total", result="deny") + \
        value(m, "connect_spoa_decisions_total", result="error") == 2
    assert value(m, "connect_spoa_agent_errors_total") >= 1
    assert value(m, "connect_spoa_agent_requests_total") >= 3
    assert value(m, "connect_spoa_spop_connections") >= 1
    named = readme_series("connect_spoa_")
    assert len(named) >= 8, named
    for name, labels in named:
        assert find(m, name, **labels), "README names %s%s, not in the scrape" % (name, labels)
