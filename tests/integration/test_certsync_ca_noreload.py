"""CA rotation under continuous traffic without an HAProxy reload: Consul's new leaves carry the new root
cross-signed by the old one, so the bundle the worker loaded accepts them (ours and the peer's); the new
bundle is written for the next reload, the new leaf goes in by the runtime API. A root removed from the
bundle (Consul pruning a rotated-out root) is one reload: the worker must stop trusting it."""
import os
import re
import urllib.request

import harness
from certsync_support import Mesh, Traffic, ddir, reloads, served_serial, worker_pids  # noqa: F401 - fixture


def _serial_hex(sim, service):
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % service)
    assert st == 200
    return leaf["SerialNumber"].replace(":", "").upper().lstrip("0")


def _served(d):
    s = served_serial(d)
    return s.upper().lstrip("0") if s else s


def _bundle(d):
    with open(os.path.join(d, "ca.pem")) as f:
        return f.read().count("BEGIN CERTIFICATE")


def _state(m):
    return {d: (worker_pids(d)[0], reloads(d)) for d in (m.redis_dir, m.web_dir)}


def _rotate_and_wait(sim, m):
    sim.control("POST", "/_sim/ca/rotate", {})
    for svc, d in (("redis", m.redis_dir), ("web", m.web_dir)):
        new = _serial_hex(sim, svc)
        harness.wait_until(lambda: _served(d) == new, 30, what="%s serves its new-CA leaf" % svc)


def _allowed(addr):
    """connect-spoa's allow count from its /metrics (connect_spoa_decisions_total{result="allow"})."""
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=5) as r:
        text = r.read().decode()
    got = re.search(r'^connect_spoa_decisions_total\{result="allow"\} (\d+)$', text, re.M)
    assert got, text[:500]
    return int(got.group(1))


def test_ca_rotation_without_reload(procs, sim, ddir):  # noqa: F811
    """Also the operator's view of it: redis's connect-spoa serves metrics at -spoa-metrics-addr (its
    allow count grows with the traffic), and web's upstream frontend logs one tcplog-like line per
    connection with upstream=redis."""
    metrics = "127.0.0.1:%d" % harness.free_port()
    m = Mesh(procs, sim, ddir, redis_args=["-sidecar-for", "redis", "-spoa-metrics-addr", metrics])
    m.wait_flowing()
    harness.wait_until(lambda: _allowed(metrics) >= 1, 10, what="connect-spoa metrics")
    allowed = _allowed(metrics)
    before = _state(m)
    old_serials = {d: _served(d) for d in (m.redis_dir, m.web_dir)}
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    _rotate_and_wait(sim, m)
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic with the new-CA leaves")
    ok, failed = t.stop()       # also pings the long-lived connection opened before the rotation
    assert failed == [], failed[:5]
    for d in (m.redis_dir, m.web_dir):
        assert _served(d) != old_serials[d]
        assert _bundle(d) == 3, "the new bundle (old root, new root, cross-signed) is on disk"
    assert _state(m) == before, "same worker pid, no reload (master show proc)"
    for c in (m.redis, m.web):
        log = c.log()
        assert "reloading haproxy" not in log
        assert "CA roots changed: no reload" in log
        assert "in use (runtime API, no reload)" in log
    # connect-spoa (started by connect-certsync with -metrics-addr) counted the callers it allowed
    assert _allowed(metrics) >= allowed + ok // 2
    # web's upstream frontend: "<ip>:<port> [<date>] up_redis_0 redis_0/slotN Tw/Tc/Tt bytes -- ... upstream=redis"
    up = re.compile(r"^127\.0\.0\.1:\d+ \[[^\]]+\] up_redis_0~? redis_0/slot\d+ -?\d+/-?\d+/\d+ \d+ \S+ "
                    r"[\d/]+ \d+/\d+ upstream=redis$", re.M)
    assert len(up.findall(m.web.log())) >= ok // 2, m.web.log()[-2000:]
    assert "Connect from" not in m.web.log()


def test_ca_prune_reloads_once(procs, sim, ddir):  # noqa: F811
    """Rotation (no reload), then Consul prunes the old root: exactly one reload per proxy, no failed
    connection, and the new worker loaded the bundle without the old root."""
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    before = _state(m)
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    _rotate_and_wait(sim, m)
    assert _state(m) == before
    pruned = sim.control("POST", "/_sim/ca/prune", {"OlderThanSeconds": 0})["Pruned"]
    assert len(pruned) == 1
    for c, d in ((m.redis, m.redis_dir), (m.web, m.web_dir)):
        harness.wait_until(lambda: "haproxy reloaded" in c.log(), 30, what="reload for the pruned root")
        harness.wait_until(lambda: _bundle(d) == 2, 10, what="bundle without the old root")
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the prune")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    after = _state(m)
    for d in (m.redis_dir, m.web_dir):
        assert after[d][1] == before[d][1] + 1, "exactly one reload"
        assert after[d][0] != before[d][0]
    for c in (m.redis, m.web):
        log = c.log()
        assert log.count("reloading haproxy") == 1
        assert "reloading haproxy: CA roots changed (1 trusted certificate(s) removed" in log
    # a second prune finds nothing: no roots change, no reload
    assert sim.control("POST", "/_sim/ca/prune", {"OlderThanSeconds": 0})["Pruned"] == []
