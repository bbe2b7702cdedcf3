"""Blocking queries: index semantics, wait parsing, many parked requests at once."""
import threading

import simutil


def test_index_semantics(msim):
    _, h, _ = msim.api("GET", "/v1/health/connect/bl-x")
    idx = simutil.index_of(h)
    assert idx > 1
    # An old index answers at once with the current data.
    st, h1, _ = msim.api("GET", "/v1/health/connect/bl-x?index=%d&wait=10m" % (idx - 1))
    assert st == 200 and simutil.index_of(h1) == idx
    # The current index waits until the timeout and returns the same index.
    st, h2, _ = msim.api("GET", "/v1/health/connect/bl-x?index=%d&wait=300ms" % idx)
    assert st == 200 and simutil.index_of(h2) == idx
    for w in ("1s", "1m30s", "500ms", "1h", "2.5s"):
        assert msim.api("GET", "/v1/health/connect/bl-x?index=%d&wait=%s" % (idx - 1, w))[0] == 200
    for bad in ("abc", "5", "-", "1x"):
        st, _, text = msim.api("GET", "/v1/health/connect/bl-x?index=1&wait=" + bad)
        assert (st, text) == (400, "Invalid wait time"), bad
    for bad in ("abc", "-1", "1.5"):
        st, _, text = msim.api("GET", "/v1/health/connect/bl-x?index=" + bad)
        assert (st, text) == (400, "Invalid index"), bad


def test_hundreds_of_parked_queries(msim):
    _, h, _ = msim.api("GET", "/v1/connect/intentions")
    idx = simutil.index_of(h)
    n = 200
    results = []
    lock = threading.Lock()

    def waiter():
        r = msim.api("GET", "/v1/connect/intentions/match?by=destination&name=many&index=%d&wait=5m" % idx,
                     timeout=120)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=waiter) for _ in range(n)]
    for t in threads:
        t.start()
    # Wait until the simulator has seen all of them before changing anything.
    simutil_wait = __import__("harness").wait_until
    simutil_wait(lambda: len(msim.control("GET", "/_sim/requests?path=/v1/connect/intentions/match")) >= n,
                 60, what="all blocking requests parked")
    assert results == []
    msim.api("POST", "/v1/connect/intentions", {"SourceName": "s", "DestinationName": "many", "Action": "allow"})
    for t in threads:
        t.join(120)
    assert len(results) == n
    assert all(r[0] == 200 and simutil.index_of(r[1]) > idx and len(r[2]["many"]) == 1 for r in results)


def test_client_going_away_frees_its_blocked_request(msim):
    import socket
    import harness
    _, h, _ = msim.api("GET", "/v1/connect/intentions")
    idx = simutil.index_of(h)
    s = socket.create_connection(("127.0.0.1", msim.http_port))
    s.sendall(("GET /v1/connect/intentions?index=%d&wait=10m HTTP/1.1\r\nHost: x\r\n\r\n" % idx).encode())
    harness.wait_until(lambda: msim.control("GET", "/_sim/state")["InFlight"] == 1, 20, what="request parked")
    s.close()
    harness.wait_until(lambda: msim.control("GET", "/_sim/state")["InFlight"] == 0, 20,
                       what="blocked request dropped after the client left")
