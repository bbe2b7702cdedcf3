"""Leaf and CA rotation under continuous traffic: no failed connection; a leaf rotation goes through the
runtime API (same worker pid, no reload), and a leaf rotation after a CA rotation still takes effect."""
import signal

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


def _first(lines, needle, after=-1):
    """Index of the first line after `after` that holds needle, -1 when none."""
    return next((i for i, line in enumerate(lines) if i > after and needle in line), -1)


def test_ca_change_order(procs, sim, ddir):  # noqa: F811
    """Roots and a leaf of the new CA: the CA bundle is written and loaded by a reload while the leaf
    file still holds the current leaf; the new leaf is written and put in through the runtime API only
    after that reload succeeded (runtime.h, "Order"), whichever watch answered first."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    sim.control("POST", "/_sim/ca/rotate", {})
    serials = {}
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % svc)
        assert st == 200
        serials[svc] = leaf["SerialNumber"]
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf" % svc)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the CA rotation")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    for svc, c, d in (("redis", m.redis, m.redis_dir), ("web", m.web, m.web_dir)):
        lines = c.log().splitlines()
        reload_at = _first(lines, "reloading haproxy: CA roots changed")
        roots_at = _first(lines, "wrote %s/ca.pem (3 certificate(s))" % d)
        reloaded_at = _first(lines, "haproxy reloaded", reload_at)
        wrote_at = _first(lines, "wrote %s/leaf.pem (serial %s)" % (d, serials[svc]))
        in_use_at = _first(lines, "leaf certificate serial %s in use (runtime API, no reload)" % serials[svc])
        assert -1 not in (reload_at, roots_at, reloaded_at, wrote_at, in_use_at), "\n".join(lines[-60:])
        assert roots_at < reload_at < reloaded_at < wrote_at < in_use_at, \
            (svc, roots_at, reload_at, reloaded_at, wrote_at, in_use_at)
        assert c.log().count("reloading haproxy") == 1, "one reload for the CA change, none for the leaf"


def test_ca_rotations_back_to_back(procs, sim, ddir):  # noqa: F811
    """Three CA rotations in a row under traffic, the next one as soon as the previous leaves serve: no
    failed connection, one reload per rotation and proxy, and each new leaf in service."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    for _ in range(3):
        sim.control("POST", "/_sim/ca/rotate", {})
        for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
            harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30,
                               what="%s new leaf after CA rotation" % svc)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the rotations")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    for c in (m.redis, m.web):
        assert c.log().count("reloading haproxy: CA roots changed") == 3
        assert c.log().count("reloading haproxy") == 3


def test_leaf_before_roots(procs, sim, ddir):  # noqa: F811
    """The new leaf reaches web before the new roots (web's roots request is held up by the agent): the
    leaf waits for its CA's roots, then the reload with the roots, then the leaf by the runtime API."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/ca/roots", "LatencyMs": 1500, "Count": 1})
    m.web.signal(signal.SIGHUP)      # web asks again for everything: its roots request takes the delay
    harness.wait_until(lambda: sim.control("GET", "/_sim/fault") == [], 10, what="delay taken")
    sim.control("POST", "/_sim/ca/rotate", {})
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/web")
    serial = leaf["SerialNumber"]
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf" % svc)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the CA rotation")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    lines = m.web.log().splitlines()
    waited_at = _first(lines, "leaf certificate serial %s: its CA is not in the bundle" % serial)
    roots_at = _first(lines, "wrote %s/ca.pem (3 certificate(s))" % m.web_dir)
    reload_at = _first(lines, "reloading haproxy: CA roots changed")
    reloaded_at = _first(lines, "haproxy reloaded", reload_at)
    wrote_at = _first(lines, "wrote %s/leaf.pem (serial %s)" % (m.web_dir, serial))
    in_use_at = _first(lines, "leaf certificate serial %s in use (runtime API, no reload)" % serial)
    assert -1 not in (waited_at, roots_at, reload_at, reloaded_at, wrote_at, in_use_at), "\n".join(lines[-60:])
    assert waited_at < roots_at < reload_at < reloaded_at < wrote_at < in_use_at


def test_leaf_without_roots_goes_in(procs, sim, ddir):  # noqa: F811
    """web cannot get the new roots at all: its new leaf waits a bounded time, then goes in by the runtime
    API anyway (no reload). Its cross-signed intermediate lets redis's and web's old-root workers accept
    the new-CA leaves: no failed connection. The roots come back later: one reload then."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/ca/roots", "Status": 500, "Body": "down"})
    m.web.signal(signal.SIGHUP)
    harness.wait_until(lambda: "CA roots: HTTP error" in m.web.log(), 10, what="web's roots watch failing")
    sim.control("POST", "/_sim/ca/rotate", {})
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf" % svc)
    assert "reloading haproxy" not in m.web.log()      # web still runs with the old roots only
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic with the new leaves, web on old roots")
    sim.control("DELETE", "/_sim/fault", {})
    harness.wait_until(lambda: "reloading haproxy: CA roots changed" in m.web.log(), 30, what="web reloads")
    harness.wait_until(lambda: "haproxy reloaded" in m.web.log(), 30, what="web reloaded")
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after web's reload")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
