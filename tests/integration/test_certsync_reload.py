"""Reloads other than the CA change lose no connection either: the rendered haproxy.cfg holds the known
upstream instances as enabled servers, so a new worker serves them from its first connection.

- slot doubling (more instances than slots) under continuous traffic: zero failures, one reload, the new
  worker's file has every instance enabled; instances leaving later change slots (and the file) without
  a reload;
- an upstream added (new listener, reload) under continuous traffic on the first upstream: zero
  failures, and the new upstream is served by the servers of the file (no runtime call for it);
- `-once` output runs as is in an operator's own HAProxy and carries traffic to the upstream.
"""
import os
import re

import harness
import spoa_support
from certsync_support import (Mesh, Traffic, call, ddir, deregister, passing, ready_servers,  # noqa: F401
                              register, reloads, start_certsync)


def _instance(sim, sid, addr, port):
    """Another registration of a redis proxy: a loopback alias address of the real one (it binds
    0.0.0.0), so every instance answers with redis's leaf and the traffic through it succeeds."""
    register(sim, {"ID": sid, "Name": sid, "Kind": "connect-proxy", "Port": port, "Address": addr,
                   "Proxy": {"DestinationServiceName": "redis", "LocalServicePort": 1},
                   "Check": {"TTL": "1h"}})
    passing(sim, sid)


def _servers(cfg_text, backend):
    """[(name, address, enabled)] of the server lines of one backend in a rendered haproxy.cfg."""
    out, inside = [], False
    for line in cfg_text.splitlines():
        if line.startswith("backend "):
            inside = line.split()[1] == backend
            continue
        m = re.match(r"    server (\S+) (\S+)( disabled)? ssl ", line) if inside else None
        if m:
            out.append((m.group(1), m.group(2), m.group(3) is None))
    return out


def _cfg(d):
    with open(os.path.join(d, "haproxy.cfg")) as f:
        return f.read()


def test_slot_doubling_zero_failures(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    harness.wait_until(lambda: reloads(m.web_dir) is not None, 10, what="master answers")
    r0 = reloads(m.web_dir)
    first = "127.0.0.1:%d" % m.redis_port
    assert [s for s in _servers(_cfg(m.web_dir), "redis_0") if s[2]] == [("slot1", first, True)]
    nslots = len(_servers(_cfg(m.web_dir), "redis_0"))
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    want = {first}
    for i in range(nslots):        # one more instance than slots: the backend doubles (a reload)
        addr = "127.0.0.%d" % (i + 2)
        _instance(sim, "redis-x%d" % i, addr, m.redis_port)
        want.add("%s:%d" % (addr, m.redis_port))
    harness.wait_until(lambda: ready_servers(m.web_dir) == want, 30, what="all instances in slots")
    harness.wait_until(lambda: reloads(m.web_dir) == r0 + 1, 10, what="one reload")
    # the new worker started from a file that has every instance enabled, slot1 still the first one
    servers = _servers(_cfg(m.web_dir), "redis_0")
    assert len(servers) == 2 * nslots
    assert servers[0] == ("slot1", first, True)
    assert {s[1] for s in servers if s[2]} == want
    assert all(s[1] == "0.0.0.0:0" for s in servers if not s[2])
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 30, 30, what="traffic after the reload")
    # instances leaving: runtime only (no reload), and the file on disk follows
    for i in range(nslots):
        deregister(sim, "redis-x%d" % i)
    harness.wait_until(lambda: ready_servers(m.web_dir) == {first}, 30, what="instances removed")
    harness.wait_until(lambda: [s for s in _servers(_cfg(m.web_dir), "redis_0") if s[2]] ==
                       [("slot1", first, True)], 10, what="haproxy.cfg follows the instances")
    assert len(_servers(_cfg(m.web_dir), "redis_0")) == 2 * nslots     # slots never shrink
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 20, 30, what="traffic after the removals")
    ok, failed = t.stop()
    assert failed == [], failed[:5]
    assert reloads(m.web_dir) == r0 + 1
    assert m.web.log().count("reloading haproxy") == 1


def test_upstream_added_zero_failures(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    harness.wait_until(lambda: reloads(m.web_dir) is not None, 10, what="master answers")
    r0 = reloads(m.web_dir)
    t = Traffic(m.local)
    harness.wait_until(lambda: t.ok >= 20, 30, what="traffic running")
    echo2 = spoa_support.start_echo(procs)
    cache_port = harness.free_port()
    register(sim, {"Name": "cache", "Port": echo2, "Connect": {"SidecarService": {"Port": cache_port}}})
    passing(sim, "cache-sidecar-proxy")
    start_certsync(procs, sim, ddir("cache"), ["-sidecar-for", "cache"], name="certsync-cache")
    local2 = harness.free_port()
    register(sim, {"Name": "web", "Port": harness.free_port(), "Connect": {"SidecarService": {
        "Port": m.web_port, "Proxy": {"Upstreams": [
            {"DestinationName": "redis", "LocalBindPort": m.local},
            {"DestinationName": "cache", "LocalBindPort": local2}]}}}})
    harness.wait_until(lambda: call(local2) == b"ping\n", 30, what="the new upstream serves")
    harness.wait_until(lambda: reloads(m.web_dir) == r0 + 1, 10, what="one reload")
    n = t.ok
    harness.wait_until(lambda: t.ok >= n + 30, 30, what="traffic after the reload")
    ok, failed = t.stop()          # also: the long-lived connection opened before the reload works
    assert failed == [], failed[:5]
    # The reload waited for the new upstream's first answer: its instance is in the file, enabled,
    # and no runtime call had to set it.
    assert _servers(_cfg(m.web_dir), "cache_1")[0] == ("slot1", "127.0.0.1:%d" % cache_port, True)
    assert "server cache_1/slot1 -> " not in m.web.log()
    assert reloads(m.web_dir) == r0 + 1


def test_once_runs_in_an_operators_haproxy(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir, start=False)
    m.redis = start_certsync(procs, sim, m.redis_dir, ["-sidecar-for", "redis"], name="certsync-redis")
    once = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web", "-once"], name="once")
    assert once.popen.wait(30) == 0, once.log()
    cfg = _cfg(m.web_dir)
    assert _servers(cfg, "redis_0")[0] == ("slot1", "127.0.0.1:%d" % m.redis_port, True)
    assert all(s[1] == "0.0.0.0:0" for s in _servers(cfg, "redis_0")[1:])
    # the operator runs HAProxy on the written files alone: no certsync, no runtime API call
    procs.start("operator-haproxy", [spoa_support.HAPROXY, "-db", "-f", os.path.join(m.web_dir, "haproxy.cfg")])
    harness.wait_until(lambda: call(m.local) == b"ping\n", 30, what="traffic through the -once config")
    for i in range(10):
        assert call(m.local, b"op%d\n" % i) == b"op%d\n" % i
