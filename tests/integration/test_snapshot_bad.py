"""Snapshots that must not be used: truncated, corrupt, of an unknown format version, of another proxy,
not a snapshot at all, or pointing at certificate files that changed. At start each is reported with a
warning and the proxy starts cleanly from the agent (and writes a good snapshot again); with the agent
unreachable such a snapshot is never served: the proxy waits for the agent.
"""
import os
import shutil

import harness
from certsync_support import Mesh, call, ddir, start_certsync  # noqa: F401 - ddir is a fixture

SNAP = "certsync.snapshot"


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def flip_middle(data):
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x20]) + data[i + 1:]


def version_2(data):
    # array(6), the magic string (fixstr or str8), then the version as a positive fixint
    off = 1 + (1 + (data[1] & 0x1f) if (data[1] & 0xe0) == 0xa0 else 2 + data[2])
    assert data[off] == 1, data[:off + 1]
    return data[:off] + b"\x02" + data[off + 1:]


def test_bad_snapshots_are_ignored_with_a_warning(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    path = os.path.join(m.web_dir, SNAP)
    harness.wait_until(lambda: os.path.exists(path) and os.path.exists(os.path.join(m.redis_dir, SNAP)), 10,
                       what="snapshots written")
    good = read(path)
    foreign = read(os.path.join(m.redis_dir, SNAP))
    cases = [
        ("truncated", good[:len(good) * 2 // 3], "corrupt: truncated or malformed msgpack"),
        ("flipped byte", flip_middle(good), "corrupt: checksum mismatch"),
        ("version 2", version_2(good), "unknown format version: format version 2"),
        ("another proxy", foreign, "of another proxy"),
        ("not a snapshot", b"{\"Proxy\": \"web-sidecar-proxy\"}\n", "corrupt"),
        ("empty", b"", "corrupt: empty"),
    ]
    for n, (name, data, expect) in enumerate(cases):
        m.web.stop()
        write(path, data)
        web = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web"], name="certsync-web-%d" % n)
        m.web = web
        harness.wait_until(lambda: "ignoring the snapshot" in web.log(), 10, what="%s: a warning" % name)
        line = [ln for ln in web.log().splitlines() if "ignoring the snapshot" in ln][0]
        assert "[WARN]" in line and expect in line, (name, line)
        m.wait_flowing()
        # a clean start from the agent, which also replaces the bad file with a good snapshot
        harness.wait_until(lambda: read(path)[:1] == good[:1] and len(read(path)) > 100, 10,
                           what="%s: snapshot rewritten" % name)
        assert web.alive(), web.log()[-3000:]

    # connect-spoa's decision snapshot, damaged: a warning, an empty cache, decisions from the agent.
    dec = os.path.join(m.redis_dir, "decisions.snapshot")
    harness.wait_until(lambda: os.path.exists(dec), 10, what="decision snapshot written")
    m.redis.stop()
    write(dec, flip_middle(read(dec)))
    redis = start_certsync(procs, sim, m.redis_dir, ["-sidecar-for", "redis"], name="certsync-redis-2")
    m.redis = redis
    m.wait_flowing()
    line = [ln for ln in redis.log().splitlines() if "ignoring the decision snapshot" in ln]
    assert line and "[WARN]" in line[0] and "corrupt: checksum mismatch" in line[0], redis.log()[-3000:]


def test_bad_snapshot_is_never_served_during_an_outage(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    path = os.path.join(m.web_dir, SNAP)
    harness.wait_until(lambda: os.path.exists(path), 10, what="snapshot written")
    leaf = os.path.join(m.web_dir, "leaf.pem")
    sim.control("PUT", "/_sim/outage", {"Seconds": 600})
    try:
        # a valid snapshot whose leaf file was replaced meanwhile (another key): unusable
        m.web.stop()
        harness.wait_until(lambda: call(m.local, timeout=1) is None, 15, what="web's proxy stopped")
        shutil.copyfile(os.path.join(m.redis_dir, "leaf.pem"), leaf)
        web = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web"], name="certsync-web-2")
        harness.wait_until(lambda: "the agent is unreachable; ignoring the snapshot" in web.log(), 15,
                           what="the snapshot refused")
        assert "leaf file %s changed since the snapshot" % leaf in web.log()
        for _ in range(5):
            assert call(m.local, timeout=1) is None
        assert "haproxy started" not in web.log()

        # a corrupt snapshot during the outage: nothing served either
        web.stop()
        write(path, flip_middle(read(path)))
        web = start_certsync(procs, sim, m.web_dir, ["-sidecar-for", "web"], name="certsync-web-3")
        harness.wait_until(lambda: "no usable snapshot" in web.log(), 15, what="no usable snapshot")
        assert "corrupt: checksum mismatch" in web.log()
        assert call(m.local, timeout=1) is None
    finally:
        sim.control("DELETE", "/_sim/outage")
    # the agent is back: a clean start from it
    m.web = web
    m.wait_flowing()
