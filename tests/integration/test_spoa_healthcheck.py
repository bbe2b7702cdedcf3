"""HAProxy's `option spop-check` health checks pass against connect-spoa; a stopped agent goes DOWN."""
import spoa_support as ss


def _state(stats):
    for line in ss.stats_cmd(stats, "show servers state spoa-backend").splitlines():
        f = line.split()
        if len(f) > 5 and f[1] == "spoa-backend" and f[3] == "spoa1":
            return int(f[5])     # srv_op_state: 2 = running (UP)
    return None


def test_spop_health_checks_pass(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    assert ss.spoa_server_up(st["stats"])
    assert _state(st["stats"]) == 2
    st["spoa"].stop()
    ss.harness.wait_until(lambda: not ss.spoa_server_up(st["stats"]), 15, what="spoa server DOWN")
    # Without the agent, HAProxy fails closed.
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
