"""SIGHUP drops the cached decisions: the next connection asks the agent again; the daemon keeps running."""
import signal

import spoa_support as ss


def _authorize_calls(sim):
    return len(sim.control("GET", "/_sim/requests?path=/v1/agent/connect/authorize"))


def test_sighup_flushes_cache(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    assert _authorize_calls(sim) == 1
    st["spoa"].signal(signal.SIGHUP)
    ss.harness.wait_until(lambda: "SIGHUP" in st["spoa"].log(), 10, what="SIGHUP handled")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    assert _authorize_calls(sim) == 2
    assert st["spoa"].alive()
