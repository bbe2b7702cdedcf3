"""Bad input never breaks what serves: odd JSON from the agent, a new listener port already in use, an
invalid template: a clear error, and the last good configuration keeps serving."""
import os
import shutil
import signal
import socket

import harness
from certsync_support import Mesh, call, ddir, register, reloads, start_certsync  # noqa: F401

TOP = harness.TOP


def _web_upstreams(m, local):
    return {"Name": "web", "Port": harness.free_port(), "Connect": {"SidecarService": {
        "Port": m.web_port, "Proxy": {"Upstreams": [{"DestinationName": "redis", "LocalBindPort": local}]}}}}


def test_odd_json_from_agent(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    for path, body in (("/v1/agent/service/web-sidecar-proxy", '{"Kind": "connect-proxy", "Port": "x"'),
                       ("/v1/health/connect/redis", '[{"Node": 7}]'),
                       ("/v1/agent/connect/ca/leaf/web", '{"CertPEM": "-----BEGIN CERTIFICATE-----\\nAAA"}')):
        sim.control("PUT", "/_sim/fault", {"Path": path, "Status": 200, "Body": body})
    # make every watch ask again (a blocking query would otherwise sit out the fault)
    m.web.signal(signal.SIGHUP)
    harness.wait_until(lambda: "refused" in m.web.log(), 20, what="a clear error for the odd answers")
    for _ in range(10):
        assert call(m.local) == b"ping\n"
    sim.control("DELETE", "/_sim/fault")
    assert m.web.alive()


def test_port_in_use_keeps_old_config(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    r0 = reloads(m.web_dir)
    register(sim, _web_upstreams(m, busy.getsockname()[1]))
    harness.wait_until(lambda: "not applied" in m.web.log(), 30, what="a clear error for the port in use")
    # the old listener still serves; the master kept the old worker
    assert call(m.local) == b"ping\n"
    assert reloads(m.web_dir) >= r0
    busy.close()
    assert m.web.alive()


def test_invalid_template_keeps_old_config(procs, sim, ddir, tmp_path):  # noqa: F811
    tdir = tmp_path / "templates"
    shutil.copytree(os.path.join(TOP, "haproxy-templates"), tdir)
    m = Mesh(procs, sim, ddir, start=False)
    m.redis = start_certsync(procs, sim, m.redis_dir, ["-sidecar-for", "redis"], name="certsync-redis")
    m.web = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web", "-template-dir", str(tdir)],
                           name="certsync-web")
    m.wait_flowing()
    cfg = (tdir / "haproxy.cfg.tmpl").read_text()
    (tdir / "haproxy.cfg.tmpl").write_text(cfg.replace("{{local_backend}}", "{{no_such_variable}}", 1))
    m.web.signal(signal.SIGHUP)
    harness.wait_until(lambda: "cannot render the configuration" in m.web.log(), 20, what="template error")
    assert "no_such_variable" in m.web.log()
    assert call(m.local) == b"ping\n"
    # a template that renders but that HAProxy refuses: `haproxy -c` output is the error
    (tdir / "haproxy.cfg.tmpl").write_text(cfg.replace("    mode tcp\n", "    mode tcp\n    no-such-keyword 1\n", 1))
    m.web.signal(signal.SIGHUP)
    harness.wait_until(lambda: "no-such-keyword" in m.web.log(), 20, what="haproxy -c error")
    assert call(m.local) == b"ping\n"
    assert m.web.alive()
