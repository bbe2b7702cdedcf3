"""-metrics-addr serves Prometheus text that counts the decisions HAProxy asked for; other paths 404."""
import socket
import urllib.error
import urllib.request

import spoa_support as ss


def _metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_decisions(procs, sim, tmp_path):
    mport = ss.harness.free_port()
    ss.intention(sim, "web", "db", "deny")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-metrics-addr", "127.0.0.1:%d" % mport])
    web = ss.client_cert(sim, tmp_path, "web")
    api = ss.client_cert(sim, tmp_path, "api")
    assert ss.mtls_call(st["port"], st["ca"], api[0], api[1]) == b"ping\n"
    assert ss.mtls_call(st["port"], st["ca"], api[0], api[1]) == b"ping\n"
    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) is None
    m = _metrics(mport)
    assert m['connect_spoa_decisions_total{result="allow"}'] == 2
    assert m['connect_spoa_decisions_total{result="deny"}'] == 1
    assert m["connect_spoa_cache_hits_total"] == 1
    assert m["connect_spoa_cache_misses_total"] == 2
    assert m["connect_spoa_agent_requests_total"] == 2
    assert m['connect_spoa_agent_request_duration_seconds_bucket{le="+Inf"}'] == 2
    assert m["connect_spoa_spop_connections"] >= 1
    assert m["connect_spoa_spop_healthchecks_total"] >= 1
    # Anything but GET /metrics is refused, and one request per connection.
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=5)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    # An oversized request head is cut off, and the endpoint keeps working.
    with socket.create_connection(("127.0.0.1", mport), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\nX-Pad: " + b"a" * 8000)
        reply = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            pass
    assert reply.startswith(b"HTTP/1.0 431")
    assert _metrics(mport)['connect_spoa_decisions_total{result="allow"}'] == 2
