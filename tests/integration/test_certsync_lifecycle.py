"""Lifecycle: SIGTERM stops the children and exits 0; a deregistered proxy exits 0; -once writes the files
and exits; clear errors for a missing proxy and bad flags; -help documents flags and environment."""
import os
import signal
import subprocess

import harness
from certsync_support import Mesh, ddir, deregister, register, start_certsync  # noqa: F401


def test_sigterm_stops_children(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    m.web.signal(signal.SIGTERM)
    assert m.web.popen.wait(30) == 0
    assert "stopping" in m.web.log()
    # nothing of web's is left listening
    harness.wait_until(lambda: not harness.port_open(m.local), 10, what="upstream listener closed")
    assert not harness.port_open(m.web_port)


def test_deregistered_exits_0(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    deregister(sim, "redis-sidecar-proxy")
    assert m.redis.popen.wait(60) == 0
    assert "deregistered" in m.redis.log()


def test_once(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir, start=False)
    p = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web", "-once"], name="once")
    assert p.popen.wait(30) == 0, p.log()
    for f in ("leaf.pem", "ca.pem", "haproxy.cfg", "spoe.conf"):
        assert os.path.getsize(os.path.join(m.web_dir, f)) > 0
    assert oct(os.stat(os.path.join(m.web_dir, "leaf.pem")).st_mode & 0o777) == "0o600"
    chk = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", os.path.join(m.web_dir, "haproxy.cfg")],
                         capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    # no HAProxy was started
    assert not harness.port_open(m.local)


def test_once_unknown_proxy_fails(procs, sim, ddir):  # noqa: F811
    p = start_certsync(procs, sim, ddir("nope"), ["-proxy-id", "nope-proxy", "-once"], name="once")
    assert p.popen.wait(30) != 0
    assert "nope-proxy" in p.log()


def test_sidecar_none_is_a_clear_error(procs, sim, ddir):  # noqa: F811
    register(sim, {"Name": "lonely", "Port": 1})
    p = start_certsync(procs, sim, ddir("lonely"), ["-sidecar-for", "lonely"], name="sidecar")
    assert p.popen.wait(30) != 0
    assert "-sidecar-for lonely" in p.log()


def test_flags_and_help():
    b = harness.bin_path("connect-certsync")
    out = subprocess.run([b, "-help"], capture_output=True, text=True)
    assert out.returncode == 0
    for word in ("-proxy-id", "-sidecar-for", "-http-addr", "-token", "-token-file", "-data-dir", "-haproxy-bin",
                 "-spoa-bin", "-template-dir", "-log-level", "-once", "-stats-addr", "CONNECT_PROXY_ID",
                 "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"):
        assert word in out.stdout, word
    bad = subprocess.run([b, "-no-such-flag"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown flag" in bad.stderr
    env = dict(os.environ, CONNECT_PROXY_ID="", CONSUL_PROXY_ID="")
    none = subprocess.run([b], capture_output=True, text=True, env=env)
    assert none.returncode != 0 and "-proxy-id" in none.stderr
