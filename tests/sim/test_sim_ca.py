"""CA roots, leaf certificates and CA rotation with a cross-signed intermediate."""
import datetime
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import simutil


def test_roots_shape(msim):
    for path in ("/v1/agent/connect/ca/roots", "/v1/connect/ca/roots"):
        status, h, body = msim.api("GET", path)
        assert status == 200
        assert int(h["X-Consul-Index"]) >= 1
        assert h["X-Consul-KnownLeader"] == "true"
        assert h["X-Consul-LastContact"] == "0"
        assert set(body) == {"ActiveRootID", "TrustDomain", "Roots"}
        assert body["TrustDomain"].endswith(".consul") and len(body["TrustDomain"]) == 36 + 7
        active = [r for r in body["Roots"] if r["Active"]]
        assert len(active) == 1 and active[0]["ID"] == body["ActiveRootID"]
        r = active[0]
        for k in ("ID", "Name", "SerialNumber", "SigningKeyID", "NotBefore", "NotAfter", "RootCert",
                  "IntermediateCerts", "Active", "CreateIndex", "ModifyIndex"):
            assert k in r, k
        assert isinstance(r["SerialNumber"], int)
        assert r["IntermediateCerts"] is None
        cert = x509.load_pem_x509_certificate(r["RootCert"].encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Consul CA %d" % r["SerialNumber"]
        assert simutil.uris(cert) == ["spiffe://" + body["TrustDomain"]]
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        assert cert.not_valid_after - cert.not_valid_before >= datetime.timedelta(days=3649)
        assert r["ID"] == ":".join("%02x" % b for b in cert.fingerprint(__import__(
            "cryptography.hazmat.primitives.hashes", fromlist=["SHA1"]).SHA1()))
    assert "X-Cache" in msim.api("GET", "/v1/agent/connect/ca/roots")[1]


def test_leaf_shape_and_certificate(msim, tmp_path):
    _, _, roots = msim.api("GET", "/v1/agent/connect/ca/roots")
    td = roots["TrustDomain"]
    status, h, leaf = msim.api("GET", "/v1/agent/connect/ca/leaf/leafsvc")
    assert status == 200
    assert int(h["X-Consul-Index"]) == leaf["ModifyIndex"]
    assert h["X-Cache"] == "MISS"
    assert set(leaf) == {"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter",
                         "ValidBefore", "CreateIndex", "ModifyIndex"}
    assert leaf["Service"] == "leafsvc"
    assert leaf["ServiceURI"] == "spiffe://%s/ns/default/dc/dc1/svc/leafsvc" % td
    assert leaf["PrivateKeyPEM"].startswith("-----BEGIN EC PRIVATE KEY-----")
    key = serialization.load_pem_private_key(leaf["PrivateKeyPEM"].encode(), None)
    assert key.curve.name == "secp256r1"
    chain = simutil.certs(leaf["CertPEM"])
    assert len(chain) == 1
    cert = chain[0]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "leafsvc"
    assert simutil.uris(cert) == [leaf["ServiceURI"]]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku and ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    serial = ":".join("%02x" % b for b in cert.serial_number.to_bytes(
        max(1, (cert.serial_number.bit_length() + 7) // 8), "big"))
    assert leaf["SerialNumber"] == serial and leaf["SerialNumber"] == leaf["SerialNumber"].lower()
    nb = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    na = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    assert datetime.timedelta(seconds=30) < simutil.now() - nb < datetime.timedelta(minutes=5)
    assert na - nb == datetime.timedelta(hours=72)
    assert leaf["ValidAfter"] == nb.strftime("%Y-%m-%dT%H:%M:%SZ")
    root = x509.load_pem_x509_certificate(roots["Roots"][0]["RootCert"].encode())
    assert simutil.signed_by(cert, root)
    ok, out = simutil.openssl_verify(tmp_path, roots["Roots"][0]["RootCert"], leaf["CertPEM"])
    assert ok, out
    # Cached: the same certificate again, now a cache hit.
    status, h2, again = msim.api("GET", "/v1/agent/connect/ca/leaf/leafsvc")
    assert again["SerialNumber"] == leaf["SerialNumber"] and h2["X-Cache"] == "HIT"


def test_leaf_ttl_option(start_sim):
    s = start_sim("--leaf-cert-ttl", "2h")
    _, _, leaf = s.api("GET", "/v1/agent/connect/ca/leaf/web")
    cert = simutil.certs(leaf["CertPEM"])[0]
    assert cert.not_valid_after - cert.not_valid_before == datetime.timedelta(hours=2)


def test_leaf_blocks_until_rotation(msim):
    _, h, leaf = msim.api("GET", "/v1/agent/connect/ca/leaf/blocksvc")
    idx = simutil.index_of(h)
    # An old index answers at once.
    status, _, same = msim.api("GET", "/v1/agent/connect/ca/leaf/blocksvc?index=%d&wait=1m" % (idx - 1))
    assert same["SerialNumber"] == leaf["SerialNumber"]
    # The current index times out with the same certificate.
    status, h2, same = msim.api("GET", "/v1/agent/connect/ca/leaf/blocksvc?index=%d&wait=200ms" % idx)
    assert status == 200 and same["SerialNumber"] == leaf["SerialNumber"] and simutil.index_of(h2) == idx
    # A waiting request returns the new certificate when the leaf is re-issued.
    result = {}

    def waiter():
        result["r"] = msim.api("GET", "/v1/agent/connect/ca/leaf/blocksvc?index=%d&wait=5m" % idx)

    t = threading.Thread(target=waiter)
    t.start()
    rot = msim.control("POST", "/_sim/leaf/rotate", {"Service": "blocksvc"})
    t.join(60)
    assert not t.is_alive()
    status, h3, new = result["r"]
    assert new["SerialNumber"] == rot["SerialNumber"] != leaf["SerialNumber"]
    assert simutil.index_of(h3) > idx


def test_ca_rotation_cross_signed(start_sim, tmp_path):
    s = start_sim()
    _, h, roots1 = s.api("GET", "/v1/agent/connect/ca/roots")
    old_root_pem = roots1["Roots"][0]["RootCert"]
    _, _, leaf1 = s.api("GET", "/v1/agent/connect/ca/leaf/web")
    idx = simutil.index_of(h)
    result = {}

    def waiter():
        result["roots"] = s.api("GET", "/v1/agent/connect/ca/roots?index=%d&wait=5m" % idx)

    t = threading.Thread(target=waiter)
    t.start()
    rot = s.control("POST", "/_sim/ca/rotate")
    t.join(60)
    _, h2, roots2 = result["roots"]
    assert simutil.index_of(h2) > idx
    assert roots2["ActiveRootID"] == rot["ActiveRootID"] != roots1["ActiveRootID"]
    assert roots2["TrustDomain"] == roots1["TrustDomain"]
    assert len(roots2["Roots"]) == 2
    old = [r for r in roots2["Roots"] if r["ID"] == roots1["ActiveRootID"]][0]
    new = [r for r in roots2["Roots"] if r["ID"] == rot["ActiveRootID"]][0]
    assert old["Active"] is False and new["Active"] is True
    assert len(new["IntermediateCerts"]) == 1
    cross = x509.load_pem_x509_certificate(new["IntermediateCerts"][0].encode())
    new_cert = x509.load_pem_x509_certificate(new["RootCert"].encode())
    old_cert = x509.load_pem_x509_certificate(old_root_pem.encode())
    assert cross.subject == new_cert.subject and cross.issuer == old_cert.subject
    assert cross.public_key().public_numbers() == new_cert.public_key().public_numbers()
    assert simutil.signed_by(cross, old_cert)
    # The leaf was re-issued by the new root, with the cross-signed cert appended.
    _, _, leaf2 = s.api("GET", "/v1/agent/connect/ca/leaf/web")
    assert leaf2["SerialNumber"] != leaf1["SerialNumber"]
    chain = simutil.certs(leaf2["CertPEM"])
    assert len(chain) == 2
    assert simutil.signed_by(chain[0], new_cert) and not simutil.signed_by(chain[0], old_cert)
    ok, out = simutil.openssl_verify(tmp_path, new["RootCert"], leaf2["CertPEM"], "new")
    assert ok, out
    # A peer that still trusts only the old root accepts the new leaf through the cross-signed cert.
    ok, out = simutil.openssl_verify(tmp_path, old_root_pem, leaf2["CertPEM"], "old")
    assert ok, out
    # ... and a certificate without that intermediate is rejected by it (the check can fail).
    only_leaf = leaf2["CertPEM"].split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    ok, _ = simutil.openssl_verify(tmp_path, old_root_pem, only_leaf, "bare")
    assert not ok


def test_test_certs(msim, tmp_path):
    _, _, roots = msim.api("GET", "/v1/agent/connect/ca/roots")
    root_pem = [r for r in roots["Roots"] if r["Active"]][0]["RootCert"]
    c = msim.control("POST", "/_sim/cert", {"Service": "web"})
    assert c["URI"] == "spiffe://%s/ns/default/dc/dc1/svc/web" % roots["TrustDomain"]
    assert c["RootPEM"] == root_pem
    assert simutil.openssl_verify(tmp_path, root_pem, c["CertPEM"], "a")[0]
    rogue = msim.control("POST", "/_sim/cert", {"Service": "web", "Signer": "rogue"})
    assert not simutil.openssl_verify(tmp_path, root_pem, rogue["CertPEM"], "b")[0]
    assert simutil.openssl_verify(tmp_path, rogue["RootPEM"], rogue["CertPEM"], "c")[0]
    foreign = msim.control("POST", "/_sim/cert", {"Service": "web", "TrustDomain": "other.consul",
                                                  "Datacenter": "dc9"})
    assert foreign["URI"] == "spiffe://other.consul/ns/default/dc/dc9/svc/web"
    assert simutil.uris(simutil.certs(foreign["CertPEM"])[0]) == [foreign["URI"]]
    two = msim.control("POST", "/_sim/cert", {"Service": "web", "URIs": ["spiffe://a/x", "spiffe://b/y"]})
    assert simutil.uris(simutil.certs(two["CertPEM"])[0]) == ["spiffe://a/x", "spiffe://b/y"]
    none = msim.control("POST", "/_sim/cert", {"Service": "web", "URIs": []})
    assert simutil.uris(simutil.certs(none["CertPEM"])[0]) == []
    expired = msim.control("POST", "/_sim/cert", {"Service": "web", "Expired": True})
    cert = simutil.certs(expired["CertPEM"])[0]
    assert cert.not_valid_after.replace(tzinfo=datetime.timezone.utc) < simutil.now()
    ok, out = simutil.openssl_verify(tmp_path, root_pem, expired["CertPEM"], "d")
    assert not ok and "expired" in out


def test_leaf_renewed_before_expiry(start_sim):
    """With a short TTL the agent re-issues the leaf at 60-90% of its lifetime; a blocked query sees it."""
    import harness
    s = start_sim("--leaf-cert-ttl", "3s")
    _, h, leaf = s.api("GET", "/v1/agent/connect/ca/leaf/short")
    st, h2, new = s.api("GET", "/v1/agent/connect/ca/leaf/short?index=%d&wait=1m" % simutil.index_of(h))
    assert st == 200 and new["SerialNumber"] != leaf["SerialNumber"]
    assert simutil.index_of(h2) > simutil.index_of(h)
    _ = harness
