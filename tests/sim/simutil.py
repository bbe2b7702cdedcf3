"""Helpers for tests/sim: certificate checks with python3-cryptography and small API shortcuts."""
import datetime
import subprocess

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec


def certs(pem_text):
    """All certificates in a PEM bundle, in order."""
    out = []
    marker = "-----END CERTIFICATE-----"
    for part in pem_text.split(marker):
        if "-----BEGIN CERTIFICATE-----" in part:
            out.append(x509.load_pem_x509_certificate((part.strip() + "\n" + marker + "\n").encode()))
    return out


def uris(cert):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def signed_by(cert, issuer):
    """True if issuer's key signed cert (ECDSA)."""
    try:
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                   ec.ECDSA(cert.signature_hash_algorithm))
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature or a key type mismatch
        return False


def openssl_verify(tmp_path, root_pem, chain_pem, name="v"):
    """openssl verify of the first cert of chain_pem, with the rest as untrusted intermediates, against root."""
    cs = certs(chain_pem)
    from cryptography.hazmat.primitives import serialization
    leaf = tmp_path / ("%s-leaf.pem" % name)
    inter = tmp_path / ("%s-inter.pem" % name)
    root = tmp_path / ("%s-root.pem" % name)
    leaf.write_bytes(cs[0].public_bytes(serialization.Encoding.PEM))
    inter.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in cs[1:]))
    root.write_text(root_pem)
    argv = ["openssl", "verify", "-CAfile", str(root)]
    if len(cs) > 1:
        argv += ["-untrusted", str(inter)]
    argv.append(str(leaf))
    p = subprocess.run(argv, capture_output=True, text=True)
    return p.returncode == 0, p.stdout + p.stderr


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def index_of(headers):
    return int(headers["X-Consul-Index"])
