"""A caller denied by an intention is closed without data; the deny reason is logged."""
import spoa_support as ss


def test_denied_caller_closed_without_data(procs, sim, tmp_path):
    ss.intention(sim, "web", "db", "deny")
    ss.intention(sim, "api", "db", "allow")
    st = ss.setup_stack(procs, sim, tmp_path)
    web_cert, web_key, web_uri = ss.client_cert(sim, tmp_path, "web")
    api_cert, api_key, _ = ss.client_cert(sim, tmp_path, "api")
    assert ss.mtls_call(st["port"], st["ca"], web_cert, web_key) is None
    # The same proxy lets an allowed caller through: the deny is about the caller, not the stack.
    assert ss.mtls_call(st["port"], st["ca"], api_cert, api_key) == b"ping\n"
    # Denied again from the cache.
    assert ss.mtls_call(st["port"], st["ca"], web_cert, web_key) is None
    log = st["spoa"].log()
    assert "caller=%s target=db result=deny" % web_uri in log
    assert "Matched intention: DENY default/web => default/db" in log


def test_certificate_without_spiffe_identity_denied(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    # Signed by the right CA (so TLS accepts it) but with two URI SANs: connect-spoa refuses it.
    td = sim.api("GET", "/v1/agent/connect/ca/roots")[2]["TrustDomain"]
    uris = ["spiffe://%s/ns/default/dc/dc1/svc/web" % td, "spiffe://%s/ns/default/dc/dc1/svc/api" % td]
    cert, key, _ = ss.client_cert(sim, tmp_path, "web", URIs=uris)
    assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
    assert "2 URI SANs" in st["spoa"].log()
