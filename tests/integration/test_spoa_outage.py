"""Agent unreachable: a caller allowed before is still allowed (cache, stale-if-error); an unknown caller
is denied with the cause in the reason."""
import spoa_support as ss


def test_agent_outage_keeps_known_callers_denies_unknown(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    web_cert, web_key, _ = ss.client_cert(sim, tmp_path, "web")
    new_cert, new_key, new_uri = ss.client_cert(sim, tmp_path, "billing")
    assert ss.mtls_call(st["port"], st["ca"], web_cert, web_key) == b"ping\n"
    sim.control("PUT", "/_sim/outage", {"Seconds": 120})
    try:
        # Connections to the agent are refused now.
        assert not ss.harness.port_open(sim.http_port)
        for _ in range(3):
            assert ss.mtls_call(st["port"], st["ca"], web_cert, web_key) == b"ping\n"
        assert ss.mtls_call(st["port"], st["ca"], new_cert, new_key) is None
        log = st["spoa"].log()
        assert "caller=%s target=db result=deny reason=\"agent unreachable" % new_uri in log
    finally:
        sim.control("DELETE", "/_sim/outage")
    # The agent is back: the new caller is asked about again and allowed.
    ss.harness.wait_until(lambda: ss.mtls_call(st["port"], st["ca"], new_cert, new_key) == b"ping\n", 10,
                          what="unknown caller allowed after the outage")
