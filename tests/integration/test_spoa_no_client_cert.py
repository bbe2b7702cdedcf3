"""A caller without a client certificate is refused by TLS (verify required): it never reaches SPOE."""
import spoa_support as ss


def test_no_client_certificate_refused(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    assert ss.mtls_call(st["port"], st["ca"]) is None
    # A certificate from a CA HAProxy does not trust: refused by TLS as well.
    cert, key, _ = ss.client_cert(sim, tmp_path, "web", Signer="rogue")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
    # No decision was asked for.
    assert "result=" not in st["spoa"].log()
    # The stack itself works.
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
