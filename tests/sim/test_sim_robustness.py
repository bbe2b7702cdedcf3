"""Bad input never crashes the simulator: every endpoint gets malformed bodies and odd parameters, answers with
a 4xx/5xx (never a dropped connection), and the agent keeps serving."""
import socket

import pytest

BODIES = ["", "null", "[]", "[1,2]", "\"str\"", "42", "{", "{\"Name\": 5}", "{\"Name\": {\"a\": 1}}",
          "{\"Name\": \"x\", \"Port\": \"abc\"}", "{\"Name\": \"x\", \"Check\": {\"TTL\": \"zz\"}}",
          "{\"Name\": \"x\", \"Connect\": {\"SidecarService\": {\"Port\": \"no\"}}}",
          "{\"Name\": \"x\", \"Checks\": 7}", "{\"Name\": \"x\", \"Connect\": {\"Proxy\": {\"Command\": 3}}}",
          "{\"Target\": 5, \"ClientCertURI\": []}", "{\"SourceName\": [], \"DestinationName\": {}}",
          "{\"Service\": \"x\"}", "{\"Service\": {\"Service\": 4}}", "\xff\xfe",
          "{\"Name\": \"x\", \"Connect\": {\"Proxy\": {\"Config\": {\"bind_port\": \"x\"}}}}",
          "{\"Name\": \"x\", \"Connect\": {\"SidecarService\": {\"Checks\": [{\"TTL\": \"5 parsecs\"}]}}}"]

ENDPOINTS = [("PUT", "/v1/agent/service/register"), ("POST", "/v1/agent/connect/authorize"),
             ("POST", "/v1/connect/intentions"), ("PUT", "/v1/connect/intentions/nope"), ("POST", "/v1/query"),
             ("PUT", "/v1/agent/check/update/nope"), ("PUT", "/v1/agent/service/deregister/"),
             ("GET", "/v1/agent/connect/ca/leaf/"), ("GET", "/v1/health/connect/"),
             ("GET", "/v1/query//execute"), ("GET", "/v1/connect/intentions/match?by=x&name=")]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_malformed_bodies(msim, method, path):
    for body in BODIES:
        st, _, text = msim.api(method, path, body.encode("utf-8", "surrogateescape") if body else None)
        assert 200 <= st < 600, (body, st, text)
        assert st != 500 or text, (body, "a 500 must carry Consul's error text")
        assert st != 200 or not body or path.endswith("/execute") or method == "GET", (body, "accepted garbage")
    assert msim.api("GET", "/v1/status/leader")[0] == 200
    # Every rejection was a deliberate Consul-style error, not an internal exception of the simulator.
    assert "[ERR]" not in msim.proc.log(), msim.proc.log()[-2000:]


def test_garbage_on_the_wire(msim):
    for raw in (b"\x16\x03\x01\x00\x05hello\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"GARBAGE\r\n\r\n", b"PUT /v1/agent/service/register HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
                b"GET /v1/health/connect/x?index=1&wait=%zz HTTP/1.1\r\n\r\n"):
        s = socket.create_connection(("127.0.0.1", msim.http_port), timeout=10)
        s.sendall(raw)
        try:
            s.recv(4096)
        except OSError:
            pass
        s.close()
    assert msim.api("GET", "/v1/status/leader")[0] == 200
    assert msim.proc.alive()
