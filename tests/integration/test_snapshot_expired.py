"""A certificate past its expiry is never served from a snapshot: with the agent unreachable and the
snapshot's leaf expired, connect-certsync says so and waits for the agent instead of starting HAProxy."""
import datetime
import os

import harness
from certsync_support import ddir, passing, register, start_certsync  # noqa: F401 - ddir is a fixture
from cryptography import x509


def not_after(path):
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return cert.not_valid_after.replace(tzinfo=datetime.timezone.utc).timestamp()


def test_expired_leaf_is_not_served_from_a_snapshot(procs, tmp_path, ddir):  # noqa: F811
    sim = harness.start_sim(procs, tmp_path, args=["--leaf-cert-ttl", "6s"])
    port = harness.free_port()
    register(sim, {"Name": "redis", "Port": harness.free_port(), "Connect": {"SidecarService": {"Port": port}}})
    passing(sim, "redis-sidecar-proxy")
    d = ddir("redis")
    cs = start_certsync(procs, sim, d, ["-sidecar-for", "redis"], name="certsync-redis")
    harness.wait_until(lambda: "haproxy started" in cs.log() and os.path.exists(os.path.join(d, "certsync.snapshot")),
                       20, what="proxy serving, snapshot written")
    sim.control("PUT", "/_sim/outage", {"Seconds": 600})
    try:
        cs.stop()
        leaf = os.path.join(d, "leaf.pem")
        expiry = not_after(leaf)
        # let the last leaf written (and recorded in the snapshot) expire
        harness.wait_until(lambda: datetime.datetime.now(datetime.timezone.utc).timestamp() > expiry + 1, 30,
                           interval=0.2, what="the leaf to expire")
        cs = start_certsync(procs, sim, d, ["-sidecar-for", "redis"], name="certsync-redis-2")
        harness.wait_until(lambda: "ignoring the snapshot" in cs.log(), 15, what="the snapshot refused")
        line = [ln for ln in cs.log().splitlines() if "ignoring the snapshot" in ln][0]
        assert "[WARN]" in line and "expired" in line, line
        assert "haproxy started" not in cs.log()
        assert not harness.port_open(port)
    finally:
        sim.control("DELETE", "/_sim/outage")
    # the agent is back: a fresh leaf, and the proxy serves
    harness.wait_until(lambda: "haproxy started" in cs.log(), 30, what="a clean start from the agent")
    harness.wait_until(lambda: harness.port_open(port), 10, what="inbound listener")
