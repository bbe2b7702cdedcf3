"""Consul's built-in CA provider, as the agent API exposes it: EC P-256 roots with a SPIFFE trust-domain URI SAN,
leaf certificates for services, and rotation with a cross-signed intermediate so that peers still trusting only the
old root accept leaves signed by the new one."""
import datetime
import hashlib
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TEN_YEARS = datetime.timedelta(days=3650)


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def fmt_time(dt):
    return dt.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def colon_hex(data):
    """Consul's connect.HexString: lower-case hex bytes joined by colons."""
    return ":".join("%02x" % b for b in data)


def serial_colon_hex(n):
    length = max(1, (n.bit_length() + 7) // 8)
    return colon_hex(n.to_bytes(length, "big"))


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key):
    """EC private key in the "EC PRIVATE KEY" (SEC1) PEM form Consul returns."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def load_key(pem):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert(pem):
    return x509.load_pem_x509_certificate(pem.encode())


def key_id(pub):
    """Subject key id: sha1 over the public key bits (as x509 SubjectKeyIdentifier.from_public_key)."""
    return x509.SubjectKeyIdentifier.from_public_key(pub).digest


def _root_cert(key, signer_key, signer_subject, cn, trust_domain, serial, not_before, not_after):
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(signer_subject if signer_subject is not None else subject)
         .public_key(key.public_key())
         .serial_number(serial)
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier(key_id(key.public_key())), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier(key_id(signer_key.public_key()), None, None), critical=False)
         .add_extension(x509.SubjectAlternativeName(
             [x509.UniformResourceIdentifier("spiffe://%s" % trust_domain)]), critical=False))
    return b.sign(signer_key, hashes.SHA256())


def new_root(n, trust_domain, index):
    """A fresh self-signed root "Consul CA <n>"; returns the stored dict (PEMs + API fields)."""
    key = new_key()
    nb = utcnow()
    na = nb + TEN_YEARS
    cert = _root_cert(key, key, None, "Consul CA %d" % n, trust_domain, n, nb, na)
    return {
        "ID": colon_hex(cert.fingerprint(hashes.SHA1())),
        "Name": "Consul CA Root Cert",
        "SerialNumber": n,
        "SigningKeyID": colon_hex(key_id(key.public_key())),
        "NotBefore": fmt_time(nb),
        "NotAfter": fmt_time(na),
        "RootCert": cert_pem(cert),
        "IntermediateCerts": None,
        "Active": True,
        "CreateIndex": index,
        "ModifyIndex": index,
        "_key": key_pem(key),
    }


def cross_sign(new, old):
    """The new root's certificate re-signed by the old root's key (same subject and key, issuer = old root)."""
    new_cert = load_cert(new["RootCert"])
    old_cert = load_cert(old["RootCert"])
    new_key_ = load_key(new["_key"])
    old_key = load_key(old["_key"])
    cn = new_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    td = new_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.UniformResourceIdentifier)[0][len("spiffe://"):]
    cert = _root_cert(new_key_, old_key, old_cert.subject, cn, td, new_cert.serial_number,
                      new_cert.not_valid_before.replace(tzinfo=datetime.timezone.utc),
                      new_cert.not_valid_after.replace(tzinfo=datetime.timezone.utc))
    return cert_pem(cert)


def spiffe_service_uri(trust_domain, dc, service, ns="default"):
    return "spiffe://%s/ns/%s/dc/%s/svc/%s" % (trust_domain, ns, dc, service)


def issue_leaf(root, cn, uris, serial, ttl, expired=False, key=None):
    """Signs a leaf with root's key. Returns (cert PEM, key PEM, not_before, not_after)."""
    signer = load_key(root["_key"])
    signer_cert = load_cert(root["RootCert"])
    key = key or new_key()
    now = utcnow()
    if expired:
        nb = now - datetime.timedelta(days=2)
        na = now - datetime.timedelta(days=1)
    else:
        # provider_consul.go: effectiveNow = now - 1m (clock skew); NotAfter = effectiveNow + LeafCertTTL.
        # Consul's TTLs are >= 1h; for the short TTLs tests use here the backdate shrinks to a tenth of the
        # TTL so that the certificate is still mostly ahead of us.
        nb = now - min(datetime.timedelta(minutes=1), ttl / 10)
        na = nb + ttl
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
         .issuer_name(signer_cert.subject)
         .public_key(key.public_key())
         .serial_number(serial)
         .not_valid_before(nb)
         .not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                      data_encipherment=True, key_agreement=True, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
                        critical=False)
         .add_extension(x509.SubjectKeyIdentifier(key_id(key.public_key())), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier(key_id(signer.public_key()), None, None), critical=False))
    if uris:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                            critical=False)
    cert = b.sign(signer, hashes.SHA256())
    return cert_pem(cert), key_pem(key), nb, na


def new_trust_domain():
    return "%s.consul" % uuid.uuid4()


def rogue_root():
    """A CA that Consul never heard of, same shape as ours (for negative tests)."""
    return new_root(1, new_trust_domain(), 0)


def pem_digest(pem):
    return hashlib.sha256(pem.encode()).hexdigest()
