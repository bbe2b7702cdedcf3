"""Leaf and CA rotation under continuous traffic: no failed connection; a leaf rotation goes through the
runtime API (same worker pid, no reload), and a leaf rotation after a CA rotation still takes effect."""
import harness
from certsync_support import Mesh, Traffic, ddir, served_serial, worker_pids  # noqa: F401 - ddir is a fixture


def _serial_hex(sim, service):
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % service)
    assert st == 200
    return leaf["SerialNumber"].replace(":", "").upper().lstrip("0")


def _served(d):
    s = served_serial(d)
    return s.upper().lstrip("0") if s else s


def test_leaf_rotation_no_reload(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    pid_redis, pid_web = worker_pids(m.redis_dir)[0], worker_pids(m.web_dir)[0]
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        before = _served(d)
        sim.control("POST", "/_sim/leaf/rotate", {"Service": svc})
        new = _serial_hex(sim, svc)
        assert new != before
        harness.wait_until(lambda: _served(d) == new, 20, what="%s serves the new leaf" % svc)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the rotation")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    # no reload: the same worker serves
    assert worker_pids(m.redis_dir)[0] == pid_redis
    assert worker_pids(m.web_dir)[0] == pid_web
    assert "no reload" in m.redis.log()


def _ca_rotation(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    sim.control("POST", "/_sim/ca/rotate", {})
    # every leaf is re-issued under the new root; both proxies pick theirs up
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf after CA rotation" % svc)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the CA rotation")
    # a leaf rotation after the CA change still takes effect (the 2.6 ca-file trap)
    sim.control("POST", "/_sim/leaf/rotate", {"Service": "redis"})
    new = _serial_hex(sim, "redis")
    harness.wait_until(lambda: _served(m.redis_dir) == new, 20, what="leaf rotation after CA rotation")
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the second rotation")
    ok, failed = t.stop()   # also checks that the long-lived connection survived the reloads
    return ok, failed, m


def test_ca_rotation(procs, sim, ddir):  # noqa: F811
    """The CA change goes through a seamless reload (runtime.h: the only path safe on 2.6.12):
    established connections survive, traffic resumes, a later leaf rotation takes effect."""
    ok, failed, _ = _ca_rotation(procs, sim, ddir)
    assert ok > 0


def test_ca_rotation_zero_failures(procs, sim, ddir):  # noqa: F811
    """Not one failed connection across the CA change: the new worker starts with the upstream's known
    instances as enabled servers (haproxy.cfg), not with empty slots waiting for the runtime API."""
    ok, failed, _ = _ca_rotation(procs, sim, ddir)
    assert failed == [], failed[:5]


def _lines(log, *needles):
    """Index of the first log line holding each needle (in order of the needles), -1 when missing."""
    lines = log.splitlines()
    out = []
    for n in needles:
        out.append(next((i for i, line in enumerate(lines) if n in line), -1))
    return out


def test_ca_change_order(procs, sim, ddir):  # noqa: F811
    """Roots and a leaf of the new CA arrive together: the CA bundle is written and loaded by a reload
    that still serves the current leaf; the new leaf goes in through the runtime API only after the
    reload succeeded (runtime.h, "Order"). Both proxies end up serving a leaf of the new CA."""
    ok, failed, m = _ca_rotation(procs, sim, ddir)
    assert failed == [], failed[:5]
    for c in (m.redis, m.web):
        log = c.log()
        reload_at, held_at, reloaded_at, in_use_at = _lines(
            log, "reloading haproxy: CA roots changed", "held back until haproxy runs with the new CA roots",
            "haproxy reloaded", "in use (runtime API, no reload)")
        assert -1 not in (reload_at, held_at, reloaded_at, in_use_at), log[-3000:]
        assert held_at < reloaded_at < in_use_at, (held_at, reloaded_at, in_use_at)
        assert reload_at < reloaded_at
        assert log.count("reloading haproxy") == 1, "one reload for the CA change, none for the leaves"
