"""connect-spoa writes its decision snapshot in a forked writer process, behind real HAProxy.

With the test hook HC_SPOA_SNAPSHOT_TEST_STOP=1 (spoa/cache_snapshot.h) every writer stops itself
(SIGSTOP) after encoding and before writing, so the test holds a write in progress as long as it likes,
with no timing involved:
- while a writer is held, decisions are still answered (allow and deny), a change meanwhile starts no
  second writer, and the released writer leaves a complete file that a restarted connect-spoa loads;
- a writer killed with SIGKILL leaves the old file byte for byte and no temp file, is logged once (not
  once per failure), and the next tick retries;
- SIGTERM with a writer held still writes the last decisions; no writer is left, and none is ever a
  zombie.
"""
import os
import signal

import harness
import spoa_support as ss

HOOK = "HC_SPOA_SNAPSHOT_TEST_STOP"


def children(pid):
    """{child pid: state letter} of the processes whose parent is pid (from /proc/*/stat)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out[int(name)] = fields[0]
    return out


def held_writer(spoa, not_in=()):
    """Waits for a writer of spoa stopped by the hook (state T) that is not one of not_in; its pid."""
    def one():
        held = [p for p, s in children(spoa.pid).items() if s == "T" and p not in not_in]
        return held[0] if len(held) == 1 else None
    return harness.wait_until(one, 15, what="a held snapshot writer")


def gone(pid):
    """True once pid no longer exists: exited and reaped (a zombie still has /proc/<pid>)."""
    return not os.path.exists("/proc/%d" % pid)


def no_zombies(spoa):
    assert "Z" not in children(spoa.pid).values(), children(spoa.pid)


def release(spoa, pid):
    os.kill(pid, signal.SIGCONT)
    harness.wait_until(lambda: gone(pid), 15, what="writer %d reaped" % pid)
    no_zombies(spoa)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_decisions_answered_while_a_write_is_held(procs, sim, tmp_path, monkeypatch):
    monkeypatch.setenv(HOOK, "1")
    snap = os.path.join(str(tmp_path), "decisions.snapshot")
    # The intention first: one created later would make the watch drop cached decisions (a change).
    ss.intention(sim, "evil", "db", "deny")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-snapshot", snap])
    spoa = st["spoa"]
    assert HOOK + "=1 (a test hook)" in spoa.log()
    web = ss.client_cert(sim, tmp_path, "web")
    evil = ss.client_cert(sim, tmp_path, "evil")

    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
    w1 = held_writer(spoa)
    # The writer is stopped in the middle of a save; connect-spoa answers anyway, again and again.
    for _ in range(5):
        assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
        assert ss.mtls_call(st["port"], st["ca"], evil[0], evil[1]) is None
    assert not os.path.exists(snap)
    # evil's decision changed the cache during the write: noted, and no second writer is started.
    harness.wait_until(lambda: "the cache changed during a write" in spoa.log(), 15, what="change noted")
    assert children(spoa.pid) == {w1: "T"}

    # Released, the first writer writes the cache as it was at its fork: web only.
    release(spoa, w1)
    harness.wait_until(lambda: ss.file_has(snap, "/svc/web"), 15, what="first snapshot")
    assert not ss.file_has(snap, "/svc/evil")
    # The next tick writes the change made meanwhile.
    release(spoa, held_writer(spoa, not_in=(w1,)))
    harness.wait_until(lambda: ss.file_has(snap, "/svc/web", "/svc/evil"), 15, what="second snapshot")
    assert children(spoa.pid) == {}

    # The file is whole: a connect-spoa started during an agent outage restores both decisions.
    sim.control("PUT", "/_sim/outage", {"Seconds": 600})
    try:
        spoa.popen.kill()
        spoa.popen.wait(10)
        spoa, _ = ss.start_spoa(procs, sim, target="db", args=["-snapshot", snap], name="connect-spoa-2",
                                port=st["spoa_port"])
        assert "restored 2 cached decisions" in spoa.log(), spoa.log()
        harness.wait_until(lambda: ss.spoa_server_up(st["stats"]), 15, what="spoa server UP again")
        assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
        assert ss.mtls_call(st["port"], st["ca"], evil[0], evil[1]) is None
    finally:
        sim.control("DELETE", "/_sim/outage")


def test_killed_writer_retry_and_final_save(procs, sim, tmp_path, monkeypatch):
    monkeypatch.setenv(HOOK, "1")
    snap = os.path.join(str(tmp_path), "decisions.snapshot")
    ss.intention(sim, "evil", "db", "deny")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-snapshot", snap])
    spoa = st["spoa"]
    web = ss.client_cert(sim, tmp_path, "web")
    evil = ss.client_cert(sim, tmp_path, "evil")
    api = ss.client_cert(sim, tmp_path, "api")

    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
    release(spoa, held_writer(spoa))
    harness.wait_until(lambda: ss.file_has(snap, "/svc/web"), 15, what="first snapshot")
    before = read(snap)

    # Two writers killed in a row: the old file stays as it was, no temp file is left, one warning.
    assert ss.mtls_call(st["port"], st["ca"], evil[0], evil[1]) is None
    killed = []
    for _ in range(2):
        w = held_writer(spoa, not_in=killed)
        os.kill(w, signal.SIGKILL)
        # Reaped by connect-spoa (which is alive): its ev_child callback has run.
        harness.wait_until(lambda: gone(w), 15, what="killed writer reaped")
        no_zombies(spoa)
        killed.append(w)
        assert read(snap) == before
        assert [f for f in os.listdir(str(tmp_path)) if ".tmp." in f] == []
    harness.wait_until(lambda: "the writer (pid %d) was killed by signal 9" % killed[0] in spoa.log(), 15,
                       what="the failure logged")
    # The failure is logged when writes start failing, not for each failure.
    assert spoa.log().count("cannot write the decision snapshot") == 1, spoa.log()
    # The next tick retries; that one completes, and says so.
    release(spoa, held_writer(spoa, not_in=killed))
    harness.wait_until(lambda: ss.file_has(snap, "/svc/web", "/svc/evil"), 15, what="snapshot after retry")
    assert "decision snapshot written again" in spoa.log()

    # SIGTERM while a writer is held: connect-spoa stops it and writes the last decision itself.
    assert ss.mtls_call(st["port"], st["ca"], api[0], api[1]) == b"ping\n"
    w = held_writer(spoa, not_in=killed)
    spoa.popen.send_signal(signal.SIGTERM)
    assert spoa.popen.wait(30) == 0, spoa.log()
    assert "stopped the background writer (pid %d)" % w in spoa.log(), spoa.log()
    assert "(at exit)" in spoa.log(), spoa.log()
    assert ss.file_has(snap, "/svc/web", "/svc/evil", "/svc/api")
    harness.wait_until(lambda: gone(w), 15, what="held writer gone")
    assert [f for f in os.listdir(str(tmp_path)) if ".tmp." in f] == []
