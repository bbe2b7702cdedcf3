"""Test-control API: faults, outages, the request log; token order as Consul parses it."""
import socket
import threading
import time
import urllib.request

import harness


def test_fault_injection(msim):
    msim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/connect/authorize", "Status": 500, "Body": "boom",
                                        "Count": 2})
    body = {"Target": "x", "ClientCertURI": "spiffe://a/ns/default/dc/dc1/svc/y"}
    assert msim.api("POST", "/v1/agent/connect/authorize", body)[::2] == (500, "boom")
    assert msim.api("POST", "/v1/agent/connect/authorize", body)[::2] == (500, "boom")
    assert msim.api("POST", "/v1/agent/connect/authorize", body)[0] == 200
    msim.control("PUT", "/_sim/fault", {"Path": "", "Status": 503, "Body": "down"})
    assert msim.api("GET", "/v1/agent/self")[::2] == (503, "down")
    msim.control("DELETE", "/_sim/fault")
    assert msim.api("GET", "/v1/agent/self")[0] == 200
    # Latency only: the request is answered normally after the delay.
    msim.control("PUT", "/_sim/fault", {"Path": "/v1/status/leader", "LatencyMs": 300, "Count": 1})
    t0 = time.monotonic()
    assert msim.api("GET", "/v1/status/leader")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    msim.control("DELETE", "/_sim/fault")


def test_requests_log_and_token_order(msim):
    msim.control("DELETE", "/_sim/requests")
    url = msim.url + "/v1/agent/self?token=fromquery"
    req = urllib.request.Request(url, headers={"X-Consul-Token": "fromheader", "Authorization": "Bearer frombearer"})
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(msim.url + "/v1/agent/self",
                                 headers={"X-Consul-Token": "fromheader", "Authorization": "Bearer frombearer"})
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(msim.url + "/v1/agent/self", headers={"Authorization": "Bearer frombearer x"})
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(msim.url + "/v1/agent/self", headers={"Authorization": "Basic abc"})
    urllib.request.urlopen(req).read()
    seen = msim.control("GET", "/_sim/requests?path=/v1/agent/self")
    assert [r["Token"] for r in seen] == ["fromquery", "fromheader", "frombearer", ""]
    assert seen[0]["Method"] == "GET" and seen[0]["Query"] == "token=fromquery" and seen[0]["Path"] == "/v1/agent/self"
    assert isinstance(seen[0]["Time"], float)
    assert msim.control("GET", "/_sim/requests?path=/v1/nothing") == []


def test_acl_token_order_effect(start_sim):
    s = start_sim(master_token="root")
    good = s.control("POST", "/_sim/acl/token", {"SecretID": "good", "Rules": {"agent_prefix": {"": "read"}}})
    assert good["SecretID"] == "good"
    req = urllib.request.Request(s.url + "/v1/agent/self?token=good", headers={"X-Consul-Token": "missing"})
    assert urllib.request.urlopen(req).status == 200
    st, _, text = harness._http(s.url, "GET", "/v1/agent/self", None, "missing", False, 10)
    assert (st, text) == (403, "ACL not found")
    st, _, text = harness._http(s.url, "GET", "/v1/agent/self", None, None, False, 10)
    assert (st, text) == (403, "Permission denied")


def test_outage_refuses_then_serves(msim):
    port = msim.http_port
    _, h, _ = msim.api("GET", "/v1/connect/intentions")
    idx = int(h["X-Consul-Index"])
    res = {}

    def parked():
        try:
            res["r"] = msim.api("GET", "/v1/connect/intentions?index=%d&wait=5m" % idx, timeout=60)
        except Exception as e:  # noqa: BLE001 - the connection is expected to be cut
            res["e"] = e

    t = threading.Thread(target=parked)
    t.start()
    harness.wait_until(lambda: msim.control("GET", "/_sim/requests?path=/v1/connect/intentions"), 20)
    msim.control("PUT", "/_sim/outage", {"Seconds": 300})
    t.join(60)
    assert "e" in res and "r" not in res        # the parked request was cut, not answered
    s = socket.socket()
    try:
        err = s.connect_ex(("127.0.0.1", port))
    finally:
        s.close()
    assert err != 0                             # connection refused during the outage
    assert msim.control("GET", "/_sim/state")["Listeners"]["http"]["open"] is False
    msim.control("DELETE", "/_sim/outage")
    assert msim.api("GET", "/v1/status/leader")[0] == 200


def test_outage_ends_by_itself(msim):
    msim.control("PUT", "/_sim/outage", {"Seconds": 0.5})
    assert not harness.port_open(msim.http_port)
    harness.wait_until(lambda: harness.port_open(msim.http_port), 30, what="listener reopened")
    assert msim.api("GET", "/v1/agent/self")[0] == 200


def test_fault_headers_index_going_backwards(msim):
    _, h, body = msim.api("GET", "/v1/connect/intentions")
    assert int(h["X-Consul-Index"]) > 1
    msim.control("PUT", "/_sim/fault", {"Path": "/v1/connect/intentions", "Headers": {"X-Consul-Index": "1"},
                                        "Count": 1})
    st, h2, body2 = msim.api("GET", "/v1/connect/intentions")
    assert (st, h2["X-Consul-Index"], body2) == (200, "1", body)
    assert msim.api("GET", "/v1/connect/intentions")[1]["X-Consul-Index"] == h["X-Consul-Index"]
    msim.control("PUT", "/_sim/fault", {"Path": "/v1/agent/self", "Status": 502, "Body": "x",
                                        "Headers": {"Retry-After": "1"}, "Count": 1})
    st, h3, text = msim.api("GET", "/v1/agent/self")
    assert (st, h3["Retry-After"], text) == (502, "1", "x")


def test_gzip_like_consul(msim):
    """Consul's API is wrapped in gziphandler: Vary always, gzip when the client accepts it."""
    import gzip
    import json as _json
    plain = urllib.request.urlopen(msim.url + "/v1/agent/connect/ca/roots")
    assert plain.headers["Vary"] == "Accept-Encoding" and plain.headers.get("Content-Encoding") is None
    body = _json.loads(plain.read())
    req = urllib.request.Request(msim.url + "/v1/agent/connect/ca/roots", headers={"Accept-Encoding": "gzip"})
    r = urllib.request.urlopen(req)
    assert r.headers["Content-Encoding"] == "gzip"
    assert _json.loads(gzip.decompress(r.read())) == body
    req = urllib.request.Request(msim.url + "/v1/agent/self", headers={"Accept-Encoding": "gzip;q=0, br"})
    r = urllib.request.urlopen(req)
    assert r.headers.get("Content-Encoding") is None and _json.loads(r.read())["Config"]["Datacenter"] == "dc1"
