"""connect-spoa -snapshot on its own, behind real HAProxy: killed (SIGKILL) and started again during an
agent outage, it still allows the caller it allowed before and denies the caller it denied; a caller it
never saw is denied. The same restart without -snapshot denies everyone (what the snapshot is for)."""
import os

import harness
import spoa_support as ss


def restart_spoa(procs, sim, st, args, name):
    st["spoa"].popen.kill()
    st["spoa"].popen.wait(10)
    spoa, _ = ss.start_spoa(procs, sim, target="db", args=args, name=name, port=st["spoa_port"])
    harness.wait_until(lambda: ss.spoa_server_up(st["stats"]), 15, what="spoa server UP again")
    st["spoa"] = spoa
    return spoa


def test_decisions_survive_a_restart_during_an_outage(procs, sim, tmp_path):
    snap = os.path.join(str(tmp_path), "decisions.snapshot")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-snapshot", snap])
    web = ss.client_cert(sim, tmp_path, "web")
    evil = ss.client_cert(sim, tmp_path, "evil")
    stranger = ss.client_cert(sim, tmp_path, "stranger")
    ss.intention(sim, "evil", "db", "deny")

    def decided():
        assert ss.mtls_call(st["port"], st["ca"], evil[0], evil[1]) is None
        assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
        return ss.file_has(snap, "/svc/web", "/svc/evil")
    harness.wait_until(decided, 15, interval=0.3, what="both decisions written to the snapshot")
    assert oct(os.stat(snap).st_mode & 0o777) == "0o600"

    sim.control("PUT", "/_sim/outage", {"Seconds": 600})
    try:
        spoa = restart_spoa(procs, sim, st, ["-snapshot", snap], "connect-spoa-2")
        assert "restored 2 cached decisions" in spoa.log(), spoa.log()
        for _ in range(3):
            assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
            assert ss.mtls_call(st["port"], st["ca"], evil[0], evil[1]) is None
            assert ss.mtls_call(st["port"], st["ca"], stranger[0], stranger[1]) is None

        # Without its snapshot a restarted connect-spoa knows nobody while the agent is away.
        spoa = restart_spoa(procs, sim, st, [], "connect-spoa-3")
        assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) is None
    finally:
        sim.control("DELETE", "/_sim/outage")
    harness.wait_until(lambda: ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n", 15,
                       what="web allowed once the agent is back")


def test_damaged_decision_snapshot_is_ignored(procs, sim, tmp_path):
    snap = os.path.join(str(tmp_path), "decisions.snapshot")
    with open(snap, "wb") as f:
        f.write(b"\x96\xd9\x1ehaproxy-connect spoa decisions\x01")   # cut short after the version
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-snapshot", snap])
    log = st["spoa"].log()
    assert "ignoring the decision snapshot" in log and "corrupt" in log, log
    web = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) == b"ping\n"
    # the damaged file is replaced by a good one within a second or so
    harness.wait_until(lambda: ss.file_has(snap, "/svc/web"), 10, what="a good snapshot written")
