"""Reusable pieces for integration tests with real HAProxy 2.6 in front of connect-spoa.

- write_server_cert / client_cert: certificates from the Consul agent simulator, written to files
- start_echo: a small TCP echo server (a separate process, stopped by the `procs` fixture)
- start_spoa: connect-spoa against the simulator, waits until it listens
- haproxy_cfg / start_haproxy: an mTLS TCP frontend with our fail-closed SPOE check, a backend to the echo
- mtls_call: one connection as a caller with a client certificate: returns the echoed bytes, or None
  when the proxy closed it without data (a deny)
- stats_cmd: a command on HAProxy's stats socket

Run as a script (`python3 spoa_support.py echo PORT`) it is the echo server.
"""
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402

HAPROXY = os.environ.get("HC_HAPROXY", "/usr/sbin/haproxy")
HERE = os.path.abspath(__file__)


def _write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def roots_pem(sim):
    st, _, roots = sim.api("GET", "/v1/agent/connect/ca/roots")
    assert st == 200, roots
    return "".join(r["RootCert"].strip() + "\n" for r in roots["Roots"])


def write_server_cert(sim, workdir, service="db"):
    """The service's leaf from the agent (/v1/agent/connect/ca/leaf/<service>) as one PEM file with its
    key (HAProxy's `crt`), and the CA roots (`ca-file`). Returns (crt_path, ca_path)."""
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % service)
    assert st == 200, leaf
    crt = _write(os.path.join(str(workdir), "%s.pem" % service),
                 leaf["CertPEM"].strip() + "\n" + leaf["PrivateKeyPEM"].strip() + "\n")
    ca = _write(os.path.join(str(workdir), "roots.pem"), roots_pem(sim), 0o644)
    return crt, ca


def client_cert(sim, workdir, service="web", **kw):
    """A caller certificate from POST /_sim/cert (kw: TrustDomain, Signer, Expired, URIs). Returns
    (cert_path, key_path, uri)."""
    req = {"Service": service}
    req.update(kw)
    out = sim.control("POST", "/_sim/cert", req)
    tag = "%s-%d" % (service, int(time.monotonic() * 1e6))
    cert = _write(os.path.join(str(workdir), "client-%s.crt" % tag), out["CertPEM"])
    key = _write(os.path.join(str(workdir), "client-%s.key" % tag), out["PrivateKeyPEM"])
    return cert, key, out.get("URI", "")


def start_echo(procs):
    """A TCP echo server on a free loopback port; returns the port."""
    port = harness.free_port()
    procs.start("echo", [harness.PYTHON, HERE, "echo", str(port)])
    harness.wait_until(lambda: harness.port_open(port), 10, what="echo server")
    return port


def start_spoa(procs, sim, target="db", args=(), name="connect-spoa", port=None, listen=None):
    """connect-spoa listening on a free port (or on listen, e.g. "unix:/path") against the simulator;
    returns (proc, port); port is the listen string when listen is given."""
    if listen is None:
        port = port or harness.free_port()
        listen = "127.0.0.1:%d" % port
    else:
        port = listen
    argv = [harness.bin_path("connect-spoa"), "-listen", listen, "-http-addr", sim.http_addr,
            "-target", target, "-log-level", "debug"] + list(args)
    proc = procs.start(name, argv, env={"CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_ADDR": ""})
    harness.wait_until(lambda: "listening on" in proc.log() or not proc.alive(), 10, what="connect-spoa")
    assert proc.alive(), proc.log()
    return proc, port


SPOE_CONF = """\
[connect-authz]
spoe-agent connect-agent
  messages check-intentions
  option var-prefix connect
  option set-on-error err
  timeout hello 2s
  timeout idle 30s
  timeout processing {processing}
  use-backend spoa-backend

spoe-message check-intentions
  args cert=ssl_c_der
  event on-frontend-tcp-request
"""

HAPROXY_CFG = """\
global
  nbthread 2
  stats socket {stats} mode 600 level admin
  log stderr format raw local0 info

defaults
  mode tcp
  log global
  option tcplog
  timeout connect 2s
  timeout client 30s
  timeout server 30s

frontend fe
  bind 127.0.0.1:{port} ssl crt {crt} ca-file {ca} verify required
  filter spoe engine connect-authz config {spoe}
  tcp-request content reject if {{ var(txn.connect.err) -m found }}
  tcp-request content reject unless {{ var(sess.connect.auth) -m int eq 1 }}
  default_backend app

backend app
  server app 127.0.0.1:{echo}

backend spoa-backend
  mode tcp
  timeout connect 1s
  timeout server 1m
  option spop-check
  server spoa1 {spoa} check inter 500ms
"""


def haproxy_cfg(workdir, port, crt, ca, echo_port, spoa_port, processing="1s"):
    """Writes haproxy.cfg and spoe.conf into workdir; returns (cfg_path, stats_socket_path).
    spoa_port: a TCP port on 127.0.0.1, or "unix:/path" for a unix socket."""
    workdir = str(workdir)
    if isinstance(spoa_port, str) and spoa_port.startswith("unix:"):
        spoa_port = "unix@" + spoa_port[len("unix:"):]
    else:
        spoa_port = "127.0.0.1:%d" % int(spoa_port)
    spoe = _write(os.path.join(workdir, "spoe.conf"), SPOE_CONF.format(processing=processing), 0o644)
    stats = os.path.join(workdir, "stats.sock")
    cfg = _write(os.path.join(workdir, "haproxy.cfg"), HAPROXY_CFG.format(
        stats=stats, port=port, crt=crt, ca=ca, spoe=spoe, echo=echo_port, spoa=spoa_port), 0o644)
    return cfg, stats


def start_haproxy(procs, cfg, port, name="haproxy"):
    """Checks the config with `haproxy -c`, starts HAProxy in the foreground, waits for the port."""
    chk = subprocess.run([HAPROXY, "-c", "-f", cfg], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    proc = procs.start(name, [HAPROXY, "-db", "-f", cfg])
    harness.wait_until(lambda: harness.port_open(port) or not proc.alive(), 15, what="haproxy")
    assert proc.alive(), proc.log()
    return proc


def mtls_context(ca, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    # Connect leaves carry a URI SAN, not a DNS name: trust the chain, not a host name.
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def file_has(path, *needles):
    """True when the file at path can be read and holds every one of the strings needles (as UTF-8)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return all(n.encode() in data for n in needles)


def echo(s, payload):
    """Sends payload on the connected socket s and reads until as many bytes came back or the peer closed:
    what came back, or None when nothing did. Socket errors are the caller's."""
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got or None


def mtls_call(port, ca, cert=None, key=None, payload=b"ping\n", timeout=5.0):
    """One connection through the proxy. Returns the bytes echoed back, or None when the proxy closed the
    connection without sending data (TLS refusal or an authorization deny)."""
    ctx = mtls_context(ca, cert, key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw)
    except (ssl.SSLError, OSError):
        raw.close()
        return None
    try:
        return echo(s, payload)
    except (ssl.SSLError, OSError):
        return None
    finally:
        s.close()


def stats_cmd(stats_path, cmd, timeout=5.0):
    """Sends one command to HAProxy's stats socket and returns the answer text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(stats_path)
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out.decode("utf-8", "replace")


def spoa_server_up(stats_path):
    """True when `show stat` reports spoa-backend/spoa1 UP (its SPOP health checks pass)."""
    for line in stats_cmd(stats_path, "show stat").splitlines():
        f = line.split(",")
        if len(f) > 17 and f[0] == "spoa-backend" and f[1] == "spoa1":
            return f[17] == "UP"
    return False


def setup_stack(procs, sim, tmp_path, spoa_args=(), target="db", spoa_listen=None):
    """Simulator-backed connect-spoa + HAProxy + echo. Returns a dict with ports, paths and procs."""
    crt, ca = write_server_cert(sim, tmp_path, target)
    echo = start_echo(procs)
    spoa, spoa_port = start_spoa(procs, sim, target=target, args=spoa_args, listen=spoa_listen)
    port = harness.free_port()
    cfg, stats = haproxy_cfg(tmp_path, port, crt, ca, echo, spoa_port)
    hap = start_haproxy(procs, cfg, port)
    harness.wait_until(lambda: spoa_server_up(stats), 15, what="spoa server UP in haproxy")
    return {"port": port, "ca": ca, "crt": crt, "stats": stats, "spoa": spoa, "spoa_port": spoa_port,
            "haproxy": hap, "echo": echo}


def intention(sim, src, dst, action):
    st, _, out = sim.api("POST", "/v1/connect/intentions",
                         {"SourceName": src, "DestinationName": dst, "Action": action, "SourceType": "consul"})
    assert st == 200, out
    return out["ID"]


def _echo_main(port):
    import socketserver

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), Handler) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        _echo_main(int(sys.argv[2]))
    else:
        sys.stderr.write("usage: spoa_support.py echo PORT\n")
        sys.exit(2)
