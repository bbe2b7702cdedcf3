"""Intentions: CRUD, precedence order, match/check, blocking, errors."""
import threading

import simutil


def _mk(sim, src, dst, action="allow", **kw):
    body = dict({"SourceName": src, "DestinationName": dst, "Action": action}, **kw)
    status, _, out = sim.api("POST", "/v1/connect/intentions", body)
    assert status == 200, out
    return out["ID"]


def test_crud_and_shape(msim):
    iid = _mk(msim, "crud-a", "crud-b", "deny", Description="d", Meta={"k": "v"})
    status, h, x = msim.api("GET", "/v1/connect/intentions/" + iid)
    assert status == 200 and simutil.index_of(h) >= x["ModifyIndex"]
    for k in ("ID", "Description", "SourceNS", "SourceName", "DestinationNS", "DestinationName", "SourceType",
              "Action", "DefaultAddr", "DefaultPort", "Meta", "Precedence", "CreatedAt", "UpdatedAt",
              "CreateIndex", "ModifyIndex"):
        assert k in x, k
    assert (x["SourceNS"], x["DestinationNS"], x["SourceType"], x["Action"], x["Precedence"]) == \
        ("default", "default", "consul", "deny", 9)
    assert x["Meta"] == {"k": "v"}
    status, _, _ = msim.api("PUT", "/v1/connect/intentions/" + iid,
                            {"SourceName": "crud-a", "DestinationName": "crud-b", "Action": "allow"})
    assert status == 200
    _, _, x2 = msim.api("GET", "/v1/connect/intentions/" + iid)
    assert x2["Action"] == "allow" and x2["ModifyIndex"] > x["ModifyIndex"] and x2["CreateIndex"] == x["CreateIndex"]
    status, _, _ = msim.api("DELETE", "/v1/connect/intentions/" + iid)
    assert status == 200
    status, _, text = msim.api("GET", "/v1/connect/intentions/" + iid)
    assert (status, text) == (404, "Intention not found")


def test_errors(msim):
    _mk(msim, "dup-a", "dup-b")
    status, _, text = msim.api("POST", "/v1/connect/intentions",
                               {"SourceName": "dup-a", "DestinationName": "dup-b", "Action": "deny"})
    assert status == 500 and text.startswith("duplicate intention found: ALLOW default/dup-a => default/dup-b")
    status, _, text = msim.api("POST", "/v1/connect/intentions",
                               {"SourceName": "x", "DestinationName": "y", "Action": "maybe"})
    assert status == 500 and "Action must be set to 'allow' or 'deny'" in text
    status, _, text = msim.api("POST", "/v1/connect/intentions",
                               {"SourceName": "we*", "DestinationName": "y", "Action": "allow"})
    assert status == 500 and "wildcard" in text
    status, _, text = msim.api("POST", "/v1/connect/intentions", "{not json")
    assert status == 400 and text.startswith("Request decode failed")
    status, _, text = msim.api("GET", "/v1/connect/intentions/match?name=x")
    assert (status, text) == (500, "required query parameter 'by' not set")
    status, _, text = msim.api("GET", "/v1/connect/intentions/match?by=destination")
    assert (status, text) == (500, "required query parameter 'name' not set")


def test_precedence_order(start_sim):
    s = start_sim()
    ids = {}
    for src_ns, src, dst_ns, dst in [("*", "*", "*", "*"), ("default", "*", "*", "*"), ("default", "web", "*", "*"),
                                     ("*", "*", "default", "*"), ("default", "*", "default", "*"),
                                     ("default", "web", "default", "*"), ("*", "*", "default", "db"),
                                     ("default", "*", "default", "db"), ("default", "web", "default", "db"),
                                     ("default", "api", "default", "db")]:
        ids[(src_ns, src, dst_ns, dst)] = _mk(s, src, dst, SourceNS=src_ns, DestinationNS=dst_ns)
    _, _, lst = s.api("GET", "/v1/connect/intentions")
    got = [(x["SourceNS"], x["SourceName"], x["DestinationNS"], x["DestinationName"], x["Precedence"]) for x in lst]
    assert got == [
        ("default", "api", "default", "db", 9), ("default", "web", "default", "db", 9),
        ("default", "*", "default", "db", 8), ("*", "*", "default", "db", 7),
        ("default", "web", "default", "*", 6), ("default", "*", "default", "*", 5),
        ("*", "*", "default", "*", 4), ("default", "web", "*", "*", 3), ("default", "*", "*", "*", 2),
        ("*", "*", "*", "*", 1)]
    _, h, m = s.api("GET", "/v1/connect/intentions/match?by=destination&name=db&name=other")
    assert set(m) == {"db", "other"}
    assert [x["Precedence"] for x in m["db"]] == [9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert [x["Precedence"] for x in m["other"]] == [6, 5, 4, 3, 2, 1]
    _, _, m = s.api("GET", "/v1/connect/intentions/match?by=source&name=web")
    assert [(x["SourceName"], x["DestinationName"]) for x in m["web"]][:2] == [("web", "db"), ("*", "db")]
    assert all(x["SourceName"] in ("web", "*") for x in m["web"])
    # check follows the first match, then the default (allow with ACLs off).
    s.api("PUT", "/v1/connect/intentions/" + ids[("default", "web", "default", "db")],
          {"SourceName": "web", "DestinationName": "db", "Action": "deny"})
    assert s.api("GET", "/v1/connect/intentions/check?source=web&destination=db")[2] == {"Allowed": False}
    assert s.api("GET", "/v1/connect/intentions/check?source=api&destination=db")[2] == {"Allowed": True}


def test_list_blocks_by_index(msim):
    _, h, _ = msim.api("GET", "/v1/connect/intentions")
    idx = simutil.index_of(h)
    status, h2, _ = msim.api("GET", "/v1/connect/intentions?index=%d&wait=100ms" % idx)
    assert status == 200 and simutil.index_of(h2) == idx
    res = {}
    t = threading.Thread(target=lambda: res.setdefault(
        "r", msim.api("GET", "/v1/connect/intentions/match?by=destination&name=blk-dst&index=%d&wait=5m" % idx)))
    t.start()
    iid = _mk(msim, "blk-src", "blk-dst")
    t.join(60)
    status, h3, m = res["r"]
    assert simutil.index_of(h3) > idx and [x["ID"] for x in m["blk-dst"]] == [iid]
