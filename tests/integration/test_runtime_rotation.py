"""Certificate rotation on the real HAProxy 2.6 under continuous traffic: the paths runtime.c uses.

Topology (one HAProxy, as a Connect proxy talking to itself): a plain upstream listener -> a server
line with `ssl crt leaf ca-file ca verify required verifyhost web` -> the inbound mTLS bind
`ssl crt leaf ca-file ca verify required` -> an echo server. Traffic during every step: a loop of new
connections through the upstream listener (two mTLS handshakes each), a loop of direct mTLS connections
to the bind (recording the served serial), and one long-lived connection pinging through the upstream.

The commands sent are exactly those of certsync/runtime.c (rt_cert_update) and certsync/haproxy.c
(hap_reload); the unit test test_certsync_runtime drives the C code itself against the same binary.
"""
import datetime
import os
import socket
import ssl
import subprocess
import threading
import time

import pytest

import harness

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "11111111-2222-3333-4444-555555555555.consul"

pytestmark = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v haproxy"], capture_output=True).returncode,
                                reason="haproxy not installed")


# ---------------------------------------------------------------- PKI (EC P-256, CN = service, URI SAN)

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://%s" % TRUST_DOMAIN)]), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, service):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(service)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=3))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(
                "spiffe://%s/ns/default/dc/dc1/svc/%s" % (TRUST_DOMAIN, service))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def leaf_pem(leaf):
    return cert_pem(leaf[0]) + leaf[1].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())


def serial_of(cert):
    return "%X" % cert.serial_number


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


# ---------------------------------------------------------------- runtime API (as runtime.c speaks it)

def cli(sock_path, line, payload=None, timeout=10):
    """One command per connection; payload commands end with a blank line; then shut our write side."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    if payload is None:
        data = line + "\n"
    else:
        body = "\n".join(l for l in payload.decode().splitlines() if l.strip())
        data = line + " <<\n" + body + "\n\n"
    s.sendall(data.encode())
    s.shutdown(socket.SHUT_WR)
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
    s.close()
    return out.decode(errors="replace")


def cert_update(rt_sock, path, pem):
    """rt_cert_update: set, commit (abort on failure), then show must say Used + the new serial."""
    ans = cli(rt_sock, "set ssl cert %s" % path, pem)
    assert "Transaction created" in ans or "Transaction updated" in ans, ans
    ans = cli(rt_sock, "commit ssl cert %s" % path)
    if "Success!" not in ans:
        cli(rt_sock, "abort ssl cert %s" % path)
        raise AssertionError("commit failed: %r" % ans)
    return show_cert(rt_sock, path)


def show_cert(rt_sock, path):
    ans = cli(rt_sock, "show ssl cert %s" % path)
    info = {}
    for line in ans.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            info[k] = v.strip()
    return info.get("Status"), info.get("Serial", "").lstrip("0")


def show_proc(master_sock):
    """(reloads, failed, current worker pid) from the master's show proc."""
    ans = cli(master_sock, "show proc")
    reloads = failed = worker = None
    section = "master"
    for line in ans.splitlines():
        if line.startswith("# workers"):
            section = "workers"
            continue
        if line.startswith("# "):
            section = "other"
            continue
        f = line.split()
        if len(f) >= 2 and f[1] == "master":
            reloads = int(f[2])
            if len(f) >= 5 and f[3] == "[failed:":
                failed = int(f[4].rstrip("]"))
        elif section == "workers" and len(f) >= 2 and f[1] == "worker" and worker is None:
            worker = int(f[0])
    return reloads, failed, worker


def info_pid(rt_sock):
    for line in cli(rt_sock, "show info").splitlines():
        if line.startswith("Pid: "):
            return int(line[5:])
    return None


def reload(master_sock, rt_sock):
    """hap_reload: note the generation, 'reload' on the master CLI, wait for the new worker to answer."""
    reloads, failed, old = show_proc(master_sock)
    cli(master_sock, "reload")

    def new_worker():
        r, f, w = show_proc(master_sock)
        assert f == failed, "reload failed"
        if r > reloads and w != old and info_pid(rt_sock) == w:
            return w
        return None
    return old, harness.wait_until(new_worker, 30, 0.1, "new worker after reload")


# ---------------------------------------------------------------- traffic

class Echo:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _serve(c):
        with c:
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        return
                    c.sendall(b)
            except OSError:
                return

    def close(self):
        self.stopped = True
        self.sock.close()


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise ConnectionError("closed after %d of %d bytes" % (len(out), n))
        out += b
    return out


class Load:
    """New connections in loops + one long-lived connection, until stop(). Counts every failure."""

    def __init__(self, up_port, in_port, client_pem):
        self.up_port, self.in_port = up_port, in_port
        self.client_pem = client_pem
        self.ok_up = self.ok_in = self.long_pings = 0
        self.failures = []
        self.served = None
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.long = socket.create_connection(("127.0.0.1", up_port), timeout=10)
        self._ping(self.long, b"hello")
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._loop_up, self._loop_in, self._loop_long)]
        for t in self.threads:
            t.start()

    @staticmethod
    def _ping(s, msg):
        s.sendall(msg)
        got = recv_exact(s, len(msg))
        if got != msg:
            raise AssertionError("echo mismatch %r != %r" % (got, msg))

    def _fail(self, what, e):
        with self.lock:
            self.failures.append("%s: %r" % (what, e))

    def _loop_up(self):
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            try:
                with socket.create_connection(("127.0.0.1", self.up_port), timeout=10) as s:
                    self._ping(s, b"up-%d" % i)
                with self.lock:
                    self.ok_up += 1
            except Exception as e:  # noqa: BLE001 - every failure is counted
                self._fail("upstream conn %d" % i, e)

    def _loop_in(self):
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            try:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                ctx.load_cert_chain(self.client_pem)
                with socket.create_connection(("127.0.0.1", self.in_port), timeout=10) as raw:
                    with ctx.wrap_socket(raw) as s:
                        self._ping(s, b"in-%d" % i)
                        serial = "%X" % x509.load_der_x509_certificate(s.getpeercert(True)).serial_number
                with self.lock:
                    self.ok_in += 1
                    self.served = serial
            except Exception as e:  # noqa: BLE001
                self._fail("inbound mTLS conn %d" % i, e)

    def _loop_long(self):
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            try:
                self._ping(self.long, b"long-%d" % i)
                with self.lock:
                    self.long_pings += 1
            except Exception as e:  # noqa: BLE001
                self._fail("long-lived ping %d" % i, e)
                return
            time.sleep(0.02)

    def counts(self):
        with self.lock:
            return self.ok_up, self.ok_in, self.long_pings

    def progress(self, n=15):
        """Waits until each loop made n more successful round trips than now."""
        u0, i0, l0 = self.counts()
        harness.wait_until(lambda: (lambda u, i, l: u >= u0 + n and i >= i0 + n and l >= l0 + n)(*self.counts()),
                           120, 0.05, "traffic progress")

    def served_becomes(self, serial):
        harness.wait_until(lambda: self.served == serial, 60, 0.05, "served serial %s" % serial)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        try:
            self._ping(self.long, b"final")
        except Exception as e:  # noqa: BLE001
            self._fail("long-lived final ping", e)
        self.long.close()


# ---------------------------------------------------------------- setup

CFG = """global
  stats socket {d}/rt.sock mode 600 level admin expose-fd listeners
  hard-stop-after 60s
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe_in
  bind 127.0.0.1:{in_port} ssl crt {d}/leaf.pem ca-file {d}/ca.pem verify required
  default_backend be_local
backend be_local
  server app 127.0.0.1:{echo_port}
frontend fe_up
  bind 127.0.0.1:{up_port}
  default_backend be_up
backend be_up
  balance leastconn
  server s1 127.0.0.1:{in_port} ssl crt {d}/leaf.pem ca-file {d}/ca.pem verify required verifyhost web
"""


class Proxy:
    def __init__(self, procs, d, ca_bundle, leaf, echo):
        self.d = str(d)
        self.leaf_path = os.path.join(self.d, "leaf.pem")
        self.ca_path = os.path.join(self.d, "ca.pem")
        self.rt = os.path.join(self.d, "rt.sock")
        self.master = os.path.join(self.d, "master.sock")
        write_atomic(self.leaf_path, leaf_pem(leaf))
        write_atomic(self.ca_path, ca_bundle)
        self.in_port, self.up_port = harness.free_port(), harness.free_port()
        cfg = os.path.join(self.d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(CFG.format(d=self.d, in_port=self.in_port, up_port=self.up_port, echo_port=echo.port))
        chk = subprocess.run(["haproxy", "-c", "-f", cfg], capture_output=True, text=True)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        self.proc = procs.start("haproxy", ["haproxy", "-W", "-S", self.master, "-f", cfg])
        harness.wait_until(lambda: show_proc(self.master)[2] and info_pid(self.rt) == show_proc(self.master)[2],
                           30, 0.1, "haproxy ready")
        assert self.proc.alive(), self.proc.log()


@pytest.fixture
def echo():
    e = Echo()
    yield e
    e.close()


def assert_clean(load):
    assert load.failures == [], "%d failed: %s" % (len(load.failures), load.failures[:5])
    u, i, l = load.counts()
    print("traffic: %d upstream connections, %d inbound mTLS connections, %d long-lived pings, 0 failed" % (u, i, l))
    assert u > 0 and i > 0 and l > 0


# ---------------------------------------------------------------- tests

def test_leaf_rotation_under_load_no_reload(procs, tmp_path, echo):
    ca = make_ca("Consul CA 1")
    leaf1, client = make_leaf(ca, "web"), make_leaf(ca, "client")
    write_atomic(str(tmp_path / "client.pem"), leaf_pem(client))
    px = Proxy(procs, tmp_path, cert_pem(ca[0]), leaf1, echo)
    reloads0, _, worker0 = show_proc(px.master)

    load = Load(px.up_port, px.in_port, str(tmp_path / "client.pem"))
    try:
        load.progress()
        assert load.served == serial_of(leaf1[0])
        for n in range(3):
            leaf = make_leaf(ca, "web")
            write_atomic(px.leaf_path, leaf_pem(leaf))      # the file first: a reload reads it again
            status, serial = cert_update(px.rt, px.leaf_path, leaf_pem(leaf))
            assert (status, serial) == ("Used", serial_of(leaf[0]).lstrip("0"))
            load.served_becomes(serial_of(leaf[0]))
            load.progress()
    finally:
        load.stop()
    assert_clean(load)
    # no reload: same master generation, same worker
    reloads, _, worker = show_proc(px.master)
    assert (reloads, worker) == (reloads0, worker0)
    assert px.proc.alive()


def test_ca_change_by_seamless_reload_then_leaf_rotation(procs, tmp_path, echo):
    ca1 = make_ca("Consul CA 1")
    leaf1 = make_leaf(ca1, "web")
    cli1, cli2 = make_leaf(ca1, "client"), None
    write_atomic(str(tmp_path / "client1.pem"), leaf_pem(cli1))
    px = Proxy(procs, tmp_path, cert_pem(ca1[0]), leaf1, echo)

    load = Load(px.up_port, px.in_port, str(tmp_path / "client1.pem"))
    try:
        load.progress()
        # 1. Roots change (Consul CA rotation: both roots are published): new bundle, seamless reload.
        ca2 = make_ca("Consul CA 2")
        write_atomic(px.ca_path, cert_pem(ca1[0]) + cert_pem(ca2[0]))
        old_worker, new_worker = reload(px.master, px.rt)
        assert new_worker != old_worker
        load.progress()
        assert load.served == serial_of(leaf1[0])
        assert show_cert(px.rt, px.leaf_path)[0] == "Used"

        # 2. The leaf signed by the new CA arrives: runtime API, no reload; it takes effect.
        leaf2 = make_leaf(ca2, "web")
        write_atomic(px.leaf_path, leaf_pem(leaf2))
        assert cert_update(px.rt, px.leaf_path, leaf_pem(leaf2)) == ("Used", serial_of(leaf2[0]).lstrip("0"))
        load.served_becomes(serial_of(leaf2[0]))
        load.progress()

        # 3. Callers with leaves of the new CA are accepted; callers of the old CA still are.
        cli2 = make_leaf(ca2, "client")
        write_atomic(str(tmp_path / "client2.pem"), leaf_pem(cli2))
        load.client_pem = str(tmp_path / "client2.pem")
        load.progress()

        # 4. A later leaf rotation still takes effect (what a ca-file commit breaks on 2.6.12).
        leaf3 = make_leaf(ca2, "web")
        write_atomic(px.leaf_path, leaf_pem(leaf3))
        assert cert_update(px.rt, px.leaf_path, leaf_pem(leaf3)) == ("Used", serial_of(leaf3[0]).lstrip("0"))
        load.served_becomes(serial_of(leaf3[0]))
        load.client_pem = str(tmp_path / "client1.pem")
        load.progress()
    finally:
        load.stop()
    assert_clean(load)
    reloads, failed, worker = show_proc(px.master)
    assert (reloads, failed, worker) == (1, 0, new_worker)   # exactly the one reload, for the CA change


def test_ca_file_commit_breaks_leaf_updates_on_2_6(procs, tmp_path, echo):
    """Why there is no runtime CA path: on 2.6.12 a ca-file commit leaves later leaf updates unserved.

    If this test starts failing, the HAProxy in use fixed it and a runtime CA path may be reconsidered.
    """
    ca1, ca2 = make_ca("Consul CA 1"), make_ca("Consul CA 2")
    leaf1, client = make_leaf(ca1, "web"), make_leaf(ca1, "client")
    write_atomic(str(tmp_path / "client.pem"), leaf_pem(client))
    px = Proxy(procs, tmp_path, cert_pem(ca1[0]), leaf1, echo)
    ans = cli(px.rt, "set ssl ca-file %s" % px.ca_path, cert_pem(ca1[0]) + cert_pem(ca2[0]))
    assert "transaction created" in ans.lower(), ans
    assert "Success!" in cli(px.rt, "commit ssl ca-file %s" % px.ca_path)
    leaf2 = make_leaf(ca1, "web")
    status, serial = cert_update(px.rt, px.leaf_path, leaf_pem(leaf2))
    assert serial == serial_of(leaf2[0]).lstrip("0")     # HAProxy reports the new serial ...
    load = Load(px.up_port, px.in_port, str(tmp_path / "client.pem"))
    try:
        load.progress(3)
    finally:
        load.stop()
    assert status == "Unused"                            # ... as unused,
    assert load.served == serial_of(leaf1[0])           # and keeps serving the old certificate.
