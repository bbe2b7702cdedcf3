"""An allowed caller's connection goes through HAProxy's SPOE check to the echo service."""
import spoa_support as ss


def test_allowed_caller_echoes(procs, sim, tmp_path):
    ss.intention(sim, "web", "db", "allow")
    st = ss.setup_stack(procs, sim, tmp_path)
    cert, key, uri = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key, b"hello db\n") == b"hello db\n"
    # Again (now from the cache), still echoed.
    assert ss.mtls_call(st["port"], st["ca"], cert, key, b"again\n") == b"again\n"
    # The daemon logged its decision for this caller at debug.
    assert "caller=%s target=db result=allow" % uri in st["spoa"].log()
