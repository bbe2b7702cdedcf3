"""SIGTERM: connect-spoa stops accepting, answers what is in flight, disconnects and exits 0."""
import signal

import spoa_support as ss


def test_sigterm_drains_and_exits_zero(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    spoa = st["spoa"]
    spoa.signal(signal.SIGTERM)
    rc = spoa.popen.wait(15)
    assert rc == 0, spoa.log()
    assert "draining" in spoa.log()
    # The listener is gone, and HAProxy fails closed without its agent.
    assert not ss.harness.port_open(st["spoa_port"])
    assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
