"""HTTP listeners: the agent API on TCP, TLS and a unix socket (closable for outages and reopened on the same
address), and the never-closing control listener. One thread per connection; HTTP/1.1 keep-alive."""
import gzip
import http.server
import os
import select
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

MAX_BODY = 16 * 1024 * 1024


class Generation:
    """One opening of a listener; cut becomes true when an outage closes it."""

    def __init__(self):
        self.cut = False
        self.conns = set()
        self.lock = threading.Lock()


def accepts_gzip(value):
    """gziphandler's acceptsGzip: "gzip" listed with a q-value above 0."""
    for part in (value or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        if fields[0].lower() != "gzip":
            continue
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        return q > 0
    return False


class Conn:
    """What a request handler may ask about its connection while it blocks."""

    def __init__(self, gen, sock):
        self.gen = gen
        self.sock = sock

    @property
    def cut(self):
        """True when an outage closed the listener or the client went away (EOF on the socket)."""
        if self.gen.cut:
            return True
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                return False
            # Peek at the raw TCP stream (also under TLS): b"" means the peer closed its side.
            return socket.socket.recv(self.sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, ValueError):
            return True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Consul-Simulator"
    sys_version = ""
    app = None           # set per server class: callable(method, path, query, headers, body, gen, handler)

    def setup(self):
        if self.request.family in (socket.AF_INET, socket.AF_INET6):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                raise
            self.request.settimeout(None)
        http.server.BaseHTTPRequestHandler.setup(self)

    def address_string(self):
        ca = self.client_address
        return ca[0] if isinstance(ca, tuple) and ca else "unix"

    def log_message(self, fmt, *args):
        pass

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                if len(out) + size > MAX_BODY:
                    raise ValueError("body too large")
                out += self.rfile.read(size)
                self.rfile.readline(3)
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def _dispatch(self):
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.send_error(400, "Bad request body")
            return
        u = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        path = urllib.parse.unquote(u.path)
        status, headers, data = self.server.app(self.command, path, query, u.query, self.headers, body,
                                                Conn(self.server.gen, self.request))
        if status is None:
            # The listener was cut (outage) while this request blocked: drop the connection, no answer.
            self.close_connection = True
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if self.server.gzip:
            # Consul wraps its API in gziphandler (MinSize 0): Vary always, gzip when the client accepts it.
            headers = dict(headers)
            headers["Vary"] = "Accept-Encoding"
            if data and accepts_gzip(self.headers.get("Accept-Encoding")):
                data = gzip.compress(data)
                headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        # Headers and body in one write: two small writes would meet delayed ACKs (~40 ms per request).
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(data)
        self.flush_headers()

    do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class _Mixin:
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def process_request(self, request, client_address):
        with self.gen.lock:
            self.gen.conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.gen.lock:
            self.gen.conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)


class TCPServer(_Mixin, http.server.ThreadingHTTPServer):
    pass


class TLSServer(_Mixin, http.server.ThreadingHTTPServer):
    ssl_ctx = None

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr


class UnixServer(_Mixin, socketserver.ThreadingUnixStreamServer):
    pass


def split_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class Listener:
    """An agent listener that can be closed (connections refused, in-flight requests cut) and reopened."""

    def __init__(self, kind, addr, app, ssl_ctx=None, notify=None, gzip_responses=False):
        self.kind = kind                 # "http", "https", "unix"
        self.addr = addr                 # (host, port) or a path
        self.app = app
        self.ssl_ctx = ssl_ctx
        self.notify = notify             # wakes blocked requests when cut
        self.gzip_responses = gzip_responses
        self.srv = None
        self.thread = None
        self.port = None
        self.lock = threading.Lock()

    def open(self):
        with self.lock:
            if self.srv is not None:
                return
            handler = type("H", (_Handler,), {})
            if self.kind == "unix":
                try:
                    os.unlink(self.addr)
                except FileNotFoundError:
                    pass
                srv = UnixServer(self.addr, handler, bind_and_activate=False)
            else:
                cls = TLSServer if self.kind == "https" else TCPServer
                host, port = self.addr
                if self.port is not None:
                    port = self.port
                srv = cls((host, port), handler, bind_and_activate=False)
                srv.ssl_ctx = self.ssl_ctx
            srv.gen = Generation()
            srv.app = self.app
            srv.gzip = self.gzip_responses
            for attempt in range(100):
                try:
                    srv.server_bind()
                    break
                except OSError:
                    if attempt == 99:
                        raise
                    time.sleep(0.05)
            srv.server_activate()
            if self.kind != "unix":
                self.port = srv.server_address[1]
            self.srv = srv
            self.thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            self.thread.start()

    def close(self):
        with self.lock:
            srv = self.srv
            self.srv = None
        if srv is None:
            return
        srv.gen.cut = True
        srv.shutdown()
        srv.server_close()
        with srv.gen.lock:
            conns = list(srv.gen.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.notify:
            self.notify()
        if self.kind == "unix":
            try:
                os.unlink(self.addr)
            except OSError:
                pass

    @property
    def is_open(self):
        return self.srv is not None


def make_server_ssl(cert, key, ca, verify_incoming):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
    if verify_incoming:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
