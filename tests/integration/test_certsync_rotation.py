"""Leaf and CA rotation under continuous traffic: no failed connection; a leaf rotation goes through the
runtime API (same worker pid, no reload), a usual CA rotation too (the new leaves carry the cross-signed
root), and a leaf rotation after a CA rotation still takes effect. The reload path of a CA change (a new
CA that does not chain to the loaded bundle) keeps its order: roots file, reload, then the new leaf."""
import signal

import harness
from certsync_support import Mesh, Traffic, ddir, reloads, served_serial, worker_pids  # noqa: F401 - fixture


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
    m.before = {d: (worker_pids(d)[0], reloads(d)) for d in (m.redis_dir, m.web_dir)}
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
    ok, failed = t.stop()   # also checks that the long-lived connection survived
    return ok, failed, m


def test_ca_rotation(procs, sim, ddir):  # noqa: F811
    """A CA rotation needs no reload (the new leaves chain to the loaded old root through the cross-signed
    certificate): established connections survive, traffic goes on, a later leaf rotation takes effect
    (the 2.6.12 ca-file trap of runtime.c is never entered: no ca-file is committed)."""
    ok, failed, m = _ca_rotation(procs, sim, ddir)
    assert ok > 0
    for d in (m.redis_dir, m.web_dir):
        assert (worker_pids(d)[0], reloads(d)) == m.before[d], "same worker, no reload"


def test_ca_rotation_zero_failures(procs, sim, ddir):  # noqa: F811
    """Not one failed connection across the CA change and the leaf rotation after it."""
    ok, failed, m = _ca_rotation(procs, sim, ddir)
    assert failed == [], failed[:5]
    for c in (m.redis, m.web):
        assert "reloading haproxy" not in c.log()


def _first(lines, needle, after=-1):
    """Index of the first line after `after` that holds needle, -1 when none."""
    return next((i for i, line in enumerate(lines) if i > after and needle in line), -1)


def _rotate_served(sim, m):
    sim.control("POST", "/_sim/ca/rotate", {})
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf" % svc)


def test_ca_change_order(procs, sim, ddir):  # noqa: F811
    """The reload path: a second rotation's new root is cross-signed by the first rotation's root, which
    the workers (no reload for the first rotation) did not load: its leaves do not chain to the loaded
    bundle. The roots come first (the agent holds up both proxies' leaf requests): the CA bundle is
    written and loaded by a reload while the leaf file still holds the current leaf; the new leaf is
    written and put in through the runtime API only after that reload succeeded (runtime.h, "Order")."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    _rotate_served(sim, m)
    assert "reloading haproxy" not in m.redis.log() + m.web.log()
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/ca/leaf/", "LatencyMs": 1500, "Count": 2})
    m.web.signal(signal.SIGHUP)
    m.redis.signal(signal.SIGHUP)
    harness.wait_until(lambda: sim.control("GET", "/_sim/fault") == [], 10, what="delays taken")
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
        reload_at = _first(lines, "reloading haproxy: CA roots changed (the active root does not chain")
        roots_at = _first(lines, "wrote %s/ca.pem (5 certificate(s))" % d)
        reloaded_at = _first(lines, "haproxy reloaded", reload_at)
        wrote_at = _first(lines, "wrote %s/leaf.pem (serial %s)" % (d, serials[svc]))
        in_use_at = _first(lines, "leaf certificate serial %s in use (runtime API, no reload)" % serials[svc])
        assert -1 not in (reload_at, roots_at, reloaded_at, wrote_at, in_use_at), "\n".join(lines[-60:])
        assert roots_at < reload_at < reloaded_at < wrote_at < in_use_at, \
            (svc, roots_at, reload_at, reloaded_at, wrote_at, in_use_at)
        assert c.log().count("reloading haproxy") == 1, "one reload for the CA change, none for the leaf"


def test_ca_rotations_back_to_back(procs, sim, ddir):  # noqa: F811
    """Three CA rotations in a row under traffic, the next one as soon as the previous leaves serve: no
    failed connection and each new leaf in service. Reloads: none for the first (cross-signed by the
    loaded root), one for the second (cross-signed by a root the workers did not load), none for the
    third (its signer, the second root, is loaded by then): exactly one per proxy."""
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
        assert c.log().count("reloading haproxy: CA roots changed") == 1
        assert c.log().count("reloading haproxy") == 1
        assert c.log().count("CA roots changed: no reload") == 2


def test_leaf_before_roots(procs, sim, ddir):  # noqa: F811
    """Second rotation; the new leaf reaches web before the new roots (web's roots request is held up by
    the agent). Served with the bundle's cross-signed certificates after Consul's chain, it chains to web's
    loaded first root: it goes in at once by the runtime API (redis, still on that root too, accepts it).
    The roots then come: the new active root does not chain to the loaded bundle: one reload."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    _rotate_served(sim, m)
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/ca/roots", "LatencyMs": 1500, "Count": 1})
    m.web.signal(signal.SIGHUP)      # web asks again for everything: its roots request takes the delay
    harness.wait_until(lambda: sim.control("GET", "/_sim/fault") == [], 10, what="delay taken")
    sim.control("POST", "/_sim/ca/rotate", {})
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/web")
    serial = leaf["SerialNumber"]
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        harness.wait_until(lambda: _served(d) == _serial_hex(sim, svc), 30, what="%s new leaf" % svc)
    harness.wait_until(lambda: "haproxy reloaded" in m.web.log(), 30, what="web reloads for the new roots")
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the CA rotation")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    lines = m.web.log().splitlines()
    in_use_at = _first(lines, "leaf certificate serial %s in use (runtime API, no reload)" % serial)
    roots_at = _first(lines, "wrote %s/ca.pem (5 certificate(s))" % m.web_dir)
    reload_at = _first(lines, "reloading haproxy: CA roots changed (the active root does not chain")
    assert -1 not in (in_use_at, roots_at, reload_at), "\n".join(lines[-60:])
    assert in_use_at < roots_at < reload_at
    assert "serial %s held back" % serial not in m.web.log()
    assert m.web.log().count("reloading haproxy") == 1


def test_leaf_without_roots_goes_in(procs, sim, ddir):  # noqa: F811
    """web cannot get the new roots at all: its new leaf chains to the loaded old root (cross-signed) and
    goes in by the runtime API at once (no reload, no wait). That intermediate lets redis's and web's
    old-root workers accept the new-CA leaves: no failed connection. The roots come back later: the
    bundle file is updated, still no reload (nothing the worker trusts was removed)."""
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
    assert "its CA is not in the bundle" not in m.web.log()
    pid = worker_pids(m.web_dir)[0]
    sim.control("DELETE", "/_sim/fault", {})
    harness.wait_until(lambda: "CA roots changed: no reload" in m.web.log(), 30, what="web's new roots")
    with open("%s/ca.pem" % m.web_dir) as f:
        assert f.read().count("BEGIN CERTIFICATE") == 3
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after web's roots")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    assert "reloading haproxy" not in m.web.log()
    assert worker_pids(m.web_dir)[0] == pid
