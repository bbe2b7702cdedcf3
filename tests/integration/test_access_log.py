"""Access logs: HAProxy's log lines come out on connect-certsync's stderr stream, in HAProxy's format, with
the caller's service name (source=<name>) for protocol tcp and protocol http; and in http mode the app
learns the caller's name from X-Connect-Source (a copy sent by the caller is dropped)."""
import json
import re
import socket
import ssl

import harness
import spoa_support
from certsync_support import ddir, passing, register, start_certsync  # noqa: F401 - ddir is a fixture

# An HTTP app that answers every GET with the request's headers as JSON (run with `python3 -c`).
HEADER_ECHO_APP = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _proxy(procs, sim, ddir, app_port, config):  # noqa: F811
    """Registers service db (app on app_port) with a sidecar on a free port and runs connect-certsync for it.
    Returns (certsync proc, inbound port, roots path)."""
    inbound = harness.free_port()
    register(sim, {"Name": "db", "Port": app_port,
                   "Connect": {"SidecarService": {"Port": inbound, "Proxy": {"Config": config}}}})
    passing(sim, "db-sidecar-proxy")
    cs = start_certsync(procs, sim, ddir("db"), ["-sidecar-for", "db"], name="certsync-db", log_level="info")
    return cs, inbound


def _http_get(port, ca, cert, key, path, headers=None):
    """One HTTP/1.1 GET over mutual TLS. Returns (status, body bytes), or None when refused."""
    ctx = spoa_support.mtls_context(ca, cert, key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as s:
            req = "GET %s HTTP/1.1\r\nHost: db\r\nConnection: close\r\n" % path
            for k, v in (headers or {}).items():
                req += "%s: %s\r\n" % (k, v)
            s.sendall((req + "\r\n").encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (ssl.SSLError, OSError):
        return None
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _log_lines(proc, pattern):
    return [line for line in proc.log().splitlines() if re.search(pattern, line)]


def test_access_log_tcp(procs, sim, tmp_path, ddir):  # noqa: F811
    echo = spoa_support.start_echo(procs)
    cs, inbound = _proxy(procs, sim, ddir, echo, {"protocol": "tcp"})
    ca = str(tmp_path / "roots.pem")
    with open(ca, "w") as f:
        f.write(spoa_support.roots_pem(sim))
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "web")
    harness.wait_until(lambda: spoa_support.mtls_call(inbound, ca, cert, key, b"hello-tcp\n") == b"hello-tcp\n",
                       30, what="allowed mTLS call through the tcp proxy")
    # HAProxy logs a TCP stream when it ends: frontend, backend/server, byte count and the caller's name.
    # "<client ip>:<port> [<date>] inbound local_app/app <Tw>/<Tc>/<Tt> <bytes> <termination> ... source=web"
    tcp_line = r"127\.0\.0\.1:\d+ \[[^\]]+\] inbound~? local_app/app -?\d+/-?\d+/\d+ \d+ \S+ [\d/]+ \d+/\d+ source=web$"
    lines = harness.wait_until(lambda: _log_lines(cs, tcp_line), 15, what="tcp access log line")
    # the bytes the app sent back are counted (at least the 10 echoed)
    assert int(lines[-1].split()[5]) >= len(b"hello-tcp\n"), lines
    # (A refused caller is logged as inbound/<NOSRV> ... PR ... source=<name> only when it had sent data
    # before the refusal: `option dontlognull` drops the others, so no assertion on it here.)


def test_access_log_http(procs, sim, tmp_path, ddir):  # noqa: F811
    app = harness.free_port()
    procs.start("http-app", [harness.PYTHON, "-c", HEADER_ECHO_APP, str(app)])
    harness.wait_until(lambda: harness.port_open(app), 10, what="http app")
    cs, inbound = _proxy(procs, sim, ddir, app, {"protocol": "http"})
    ca = str(tmp_path / "roots.pem")
    with open(ca, "w") as f:
        f.write(spoa_support.roots_pem(sim))
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "web")
    res = harness.wait_until(
        lambda: _http_get(inbound, ca, cert, key, "/orders/42?x=1", {"X-Connect-Source": "admin"}), 30,
        what="allowed HTTP call through the http proxy")
    assert res[0] == 200, res
    seen = json.loads(res[1])
    # the app learns the verified caller's name; the caller's own copy of the header is gone
    assert seen.get("x-connect-source") == "web", seen
    assert "127.0.0.1" in seen.get("x-forwarded-for", ""), seen
    # HAProxy's HTTP log line: status, bytes, the caller's service name and the quoted request line
    http_line = (r"127\.0\.0\.1:\d+ \[[^\]]+\] inbound~? local_app/app [\d/-]+ 200 \d+ \S+ [\d/]+ \d+/\d+ "
                 r"source=web \"GET /orders/42\?x=1 HTTP/1\.1\"$")
    harness.wait_until(lambda: _log_lines(cs, http_line), 15, what="http access log line")
