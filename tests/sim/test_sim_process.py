"""The simulator as a process: port file, HTTPS and unix socket listeners, SIGTERM, state-file restarts."""
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess

import harness
import simutil


def test_state_file_restart(procs, tmp_path, start_sim):
    sf = str(tmp_path / "state.json")
    s = start_sim("--state-file", sf)
    _, _, roots = s.api("GET", "/v1/agent/connect/ca/roots")
    s.api("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 80, "Connect": {"SidecarService": {}}})
    iid = s.api("POST", "/v1/connect/intentions", {"SourceName": "a", "DestinationName": "web",
                                                   "Action": "deny"})[2]["ID"]
    _, h, leaf = s.api("GET", "/v1/agent/connect/ca/leaf/web")
    assert oct(os.stat(sf).st_mode & 0o777) == "0o600"
    s.proc.stop()
    s2 = start_sim("--state-file", sf)
    assert s2.api("GET", "/v1/agent/connect/ca/roots")[2] == roots
    assert "web-sidecar-proxy" in s2.api("GET", "/v1/agent/services")[2]
    assert s2.api("GET", "/v1/connect/intentions/" + iid)[2]["Action"] == "deny"
    _, h2, leaf2 = s2.api("GET", "/v1/agent/connect/ca/leaf/web")
    assert leaf2["SerialNumber"] == leaf["SerialNumber"] and simutil.index_of(h2) == simutil.index_of(h)
    # Indexes continue from where they were: a new change gets a higher index.
    s2.api("POST", "/v1/connect/intentions", {"SourceName": "b", "DestinationName": "web", "Action": "deny"})
    assert simutil.index_of(s2.api("GET", "/v1/connect/intentions")[1]) > simutil.index_of(h)


def test_sigterm_exits_cleanly(start_sim):
    s = start_sim()
    s.proc.signal(signal.SIGTERM)
    assert s.proc.popen.wait(20) == 0


def _mk_tls(tmp_path):
    """A server cert for 127.0.0.1 and a client cert, both from a throwaway CA (openssl CLI)."""
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=tmp_path)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test-ca", "-days", "2")
    for name in ("server", "client"):
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        (tmp_path / (name + ".ext")).write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    return {k: str(tmp_path / k) for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_https_and_unix_socket(start_sim, tmp_path):
    t = _mk_tls(tmp_path)
    sock_path = str(tmp_path / "agent.sock")
    s = start_sim("--https-addr", "127.0.0.1:0", "--tls-cert", t["server.pem"], "--tls-key", t["server.key"],
                  "--tls-ca", t["ca.pem"], "--tls-verify-incoming", "--unix-socket", sock_path)
    assert isinstance(s.ports["https"], int)
    ctx = ssl.create_default_context(cafile=t["ca.pem"])
    ctx.load_cert_chain(t["client.pem"], t["client.key"])
    c = http.client.HTTPSConnection("127.0.0.1", s.ports["https"], context=ctx, timeout=10)
    c.request("GET", "/v1/agent/connect/ca/roots")
    r = c.getresponse()
    assert r.status == 200 and "TrustDomain" in json.loads(r.read())
    c.close()
    # Without a client certificate the handshake (or the first read) fails.
    noclient = ssl.create_default_context(cafile=t["ca.pem"])
    c = http.client.HTTPSConnection("127.0.0.1", s.ports["https"], context=noclient, timeout=10)
    failed = False
    try:
        c.request("GET", "/v1/agent/self")
        c.getresponse()
    except (ssl.SSLError, ConnectionError, OSError):
        failed = True
    assert failed
    # Unix socket: plain HTTP.
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.connect(sock_path)
    us.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: consul\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = us.recv(4096)
        if not chunk:
            break
        data += chunk
    us.close()
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b'"127.0.0.1:8300"')
    # Managed proxies are pointed at HTTPS when it is enabled.
    s.api("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 1, "Connect": {"Proxy": {}}})
    env = s.control("GET", "/_sim/proxy/web-proxy")["Env"]
    assert env["CONSUL_HTTP_ADDR"] == "127.0.0.1:%d" % s.ports["https"] and env["CONSUL_HTTP_SSL"] == "true"
    assert env["CONSUL_CACERT"] == t["ca.pem"]
    # Outages close the https and unix listeners too.
    s.control("PUT", "/_sim/outage", {"Seconds": 300})
    assert not harness.port_open(s.ports["https"]) and not os.path.exists(sock_path)
    s.control("DELETE", "/_sim/outage")
    assert harness.port_open(s.ports["https"]) and os.path.exists(sock_path)
