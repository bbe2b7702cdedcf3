"""Last-known-good snapshots across a restart during an agent outage.

A running mesh (web -> redis, both proxies run by connect-certsync, with HAProxy and connect-spoa); the
agent is made unreachable; every process of both proxies is killed with SIGKILL and started again.
Traffic flows again from the snapshots alone, and intentions still hold: the allowed caller (web) passes,
a denied caller (evil) and a caller never seen (stranger) do not. Then the agent comes back with changes
made meanwhile (redis's leaf rotated, a new intention allowing evil, a new redis instance): each is
applied while a stream of new connections and a long-lived one run without a single failure.
"""
import os
import signal
import time

import harness
import spoa_support
from certsync_support import (Mesh, Traffic, call, ddir, passing, ready_servers, register,  # noqa: F401
                              served_serial, start_certsync)


def pids_of(data_dir):
    """Live processes whose command line names data_dir: connect-certsync, HAProxy's master and
    workers, connect-spoa (zombies have an empty command line and are left out)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if data_dir.encode() in cmd:
            pids.append(int(p))
    return pids


def kill_everything(data_dirs):
    pids = [p for d in data_dirs for p in pids_of(d)]
    assert len(pids) >= 2 * 4, "expected certsync, haproxy master+worker, connect-spoa per proxy: %r" % pids
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    harness.wait_until(lambda: not any(pids_of(d) for d in data_dirs), 10, what="every process gone")


def norm_serial(s):
    return (s or "").replace(":", "").lower().lstrip("0")


def test_restart_during_outage_serves_from_snapshots(procs, sim, ddir, tmp_path):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    ca = os.path.join(str(tmp_path), "roots.pem")
    with open(ca, "w") as f:
        f.write(spoa_support.roots_pem(sim))
    evil = spoa_support.client_cert(sim, tmp_path, "evil")
    stranger = spoa_support.client_cert(sim, tmp_path, "stranger")
    st, _, out = sim.api("POST", "/v1/connect/intentions",
                         {"SourceName": "evil", "DestinationName": "redis", "Action": "deny"})
    assert st == 200, out
    deny_id = out["ID"]

    # Decisions connect-spoa of redis has seen: web allowed, evil denied (the new intention took effect).
    harness.wait_until(lambda: spoa_support.mtls_call(m.redis_port, ca, evil[0], evil[1]) is None, 10,
                       what="evil denied")
    harness.wait_until(lambda: call(m.local) == b"ping\n", 10, what="web allowed after the intention change")
    for d in (m.web_dir, m.redis_dir):
        harness.wait_until(lambda: os.path.exists(os.path.join(d, "certsync.snapshot")), 10,
                           what="certsync snapshot in %s" % d)
    decisions = os.path.join(m.redis_dir, "decisions.snapshot")

    def both_decided():
        # (an answer to a question asked before the intention change is not cached: ask again)
        assert spoa_support.mtls_call(m.redis_port, ca, evil[0], evil[1]) is None
        assert call(m.local) == b"ping\n"
        return spoa_support.file_has(decisions, "/svc/web", "/svc/evil")
    harness.wait_until(both_decided, 15, interval=0.3, what="both decisions in connect-spoa's snapshot")
    assert oct(os.stat(decisions).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.join(m.redis_dir, "certsync.snapshot")).st_mode & 0o777) == "0o600"
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/redis")
    old_serial = norm_serial(leaf["SerialNumber"])

    sim.control("PUT", "/_sim/outage", {"Seconds": 600})
    outage = True
    try:
        assert not harness.port_open(sim.http_port)
        kill_everything([m.web_dir, m.redis_dir])
        assert call(m.local, timeout=1) is None

        t0 = time.monotonic()
        redis2 = start_certsync(procs, sim, m.redis_dir, ["-sidecar-for", "redis"], name="certsync-redis-2")
        web2 = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web"], name="certsync-web-2")
        harness.wait_until(lambda: call(m.local, timeout=1) == b"ping\n", 15, interval=0.02,
                           what="traffic from the snapshots")
        elapsed = time.monotonic() - t0
        print("traffic flowed %.2f s after the restart (target: within 2 s)" % elapsed)
        for p in (redis2, web2):
            log = p.log()
            assert "serving proxy" in log and "from the snapshot" in log, log[-3000:]
        # connect-spoa logs into its certsync's stream
        assert "restored 2 cached decisions" in redis2.log(), redis2.log()[-3000:]

        # Intentions hold with the agent still away.
        for _ in range(3):
            assert call(m.local) == b"ping\n"
            assert spoa_support.mtls_call(m.redis_port, ca, evil[0], evil[1]) is None
            assert spoa_support.mtls_call(m.redis_port, ca, stranger[0], stranger[1]) is None
        assert served_serial(m.redis_dir) is not None
        assert norm_serial(served_serial(m.redis_dir)) == old_serial

        # Meanwhile: redis's leaf is rotated (the control API stays up during the outage).
        rot = sim.control("POST", "/_sim/leaf/rotate", {"Service": "redis"})
        new_serial = norm_serial(rot["SerialNumber"])
        assert new_serial != old_serial

        traffic = Traffic(m.local)
        sim.control("DELETE", "/_sim/outage")
        outage = False
        # More changes the daemons have not seen: evil's deny replaced by a new allow intention, and
        # redis gets a second instance.
        st, _, out = sim.api("DELETE", "/v1/connect/intentions/%s" % deny_id)
        assert st == 200, out
        st, _, out = sim.api("POST", "/v1/connect/intentions",
                             {"SourceName": "evil", "DestinationName": "redis", "Action": "allow"})
        assert st == 200, out
        register(sim, {"Name": "redis", "ID": "redis-b", "Port": m.echo,
                       "Connect": {"SidecarService": {"Port": m.redis_port, "Address": "127.0.0.2"}}})
        passing(sim, "redis-b-sidecar-proxy")

        harness.wait_until(lambda: norm_serial(served_serial(m.redis_dir)) == new_serial, 30,
                           what="rotated leaf served")
        harness.wait_until(lambda: "127.0.0.2:%d" % m.redis_port in ready_servers(m.web_dir), 30,
                           what="new instance in web's upstream")
        harness.wait_until(lambda: spoa_support.mtls_call(m.redis_port, ca, evil[0], evil[1]) == b"ping\n", 30,
                           what="evil allowed by the new intention")
        harness.wait_until(lambda: spoa_support.mtls_call(m.redis_port, ca, stranger[0], stranger[1]) == b"ping\n",
                           30, what="stranger asked about again and allowed")
        time.sleep(1)  # let the stream run across the last change
        ok, failed = traffic.stop()
        assert failed == [], failed[:5]
        assert ok > 10
        assert "the agent answers: its watches take over from the snapshot" in web2.log()
        assert redis2.alive() and web2.alive()
    finally:
        if outage:
            sim.control("DELETE", "/_sim/outage")
