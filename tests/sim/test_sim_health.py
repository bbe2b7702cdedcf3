"""Discovery: /v1/health/connect, /v1/catalog/connect, prepared queries with ?connect=true."""
import simutil


def _reg(sim, body):
    st, _, text = sim.api("PUT", "/v1/agent/service/register", body)
    assert st == 200, text


def test_health_connect_shape_and_passing(msim):
    _reg(msim, {"Name": "hc-db", "Port": 5432, "Connect": {"SidecarService": {}}})
    _reg(msim, {"Name": "hc-db", "ID": "hc-db-2", "Port": 5433, "Connect": {"SidecarService": {}}})
    _reg(msim, {"Name": "hc-db", "ID": "hc-db-native", "Port": 5434, "Address": "10.0.0.9",
                "Connect": {"Native": True}, "Check": {"TTL": "1h", "Status": "passing"}})
    _reg(msim, {"Name": "hc-db-unrelated", "Port": 1})
    status, h, entries = msim.api("GET", "/v1/health/connect/hc-db")
    assert status == 200 and simutil.index_of(h) >= 1 and h["X-Consul-KnownLeader"] == "true"
    ids = sorted(e["Service"]["ID"] for e in entries)
    assert ids == ["hc-db-2-sidecar-proxy", "hc-db-native", "hc-db-sidecar-proxy"]
    e = [x for x in entries if x["Service"]["ID"] == "hc-db-sidecar-proxy"][0]
    assert set(e) == {"Node", "Service", "Checks"}
    assert e["Node"]["Node"] and e["Node"]["Address"] == "127.0.0.1" and e["Node"]["Datacenter"] == "dc1"
    svc = e["Service"]
    assert svc["Kind"] == "connect-proxy" and isinstance(svc["Port"], int) and svc["Address"] == ""
    assert svc["Proxy"]["DestinationServiceName"] == "hc-db"
    assert "serfHealth" in [c["CheckID"] for c in e["Checks"]]
    native = [x for x in entries if x["Service"]["ID"] == "hc-db-native"][0]
    assert native["Service"]["Connect"]["Native"] is True and native["Service"]["Address"] == "10.0.0.9"
    # Sidecars are critical until something listens (TCP check); ?passing drops them.
    msim.control("PUT", "/_sim/health", {"ServiceID": "hc-db-sidecar-proxy", "Status": "critical"})
    msim.control("PUT", "/_sim/health", {"ServiceID": "hc-db-2-sidecar-proxy", "Status": "passing"})
    for q in ("passing", "passing=1", "passing=true"):
        _, _, entries = msim.api("GET", "/v1/health/connect/hc-db?" + q)
        assert sorted(x["Service"]["ID"] for x in entries) == ["hc-db-2-sidecar-proxy", "hc-db-native"], q
    _, _, entries = msim.api("GET", "/v1/health/connect/hc-db?passing=false")
    assert len(entries) == 3
    msim.control("PUT", "/_sim/health", {"ServiceID": "hc-db-2-sidecar-proxy", "Status": "warning"})
    _, _, entries = msim.api("GET", "/v1/health/connect/hc-db?passing=1&stale")
    assert [x["Service"]["ID"] for x in entries] == ["hc-db-native"]
    st, _, text = msim.api("GET", "/v1/health/connect/hc-db?passing=yes")
    assert (st, text) == (400, "Invalid value for ?passing")
    st, _, text = msim.api("GET", "/v1/health/connect/hc-db?dc=elsewhere")
    assert (st, text) == (500, "No path to datacenter")
    assert msim.api("GET", "/v1/health/connect/hc-db?dc=dc1")[0] == 200
    assert msim.api("GET", "/v1/health/connect/hc-nothing")[2] == []


def test_health_blocks_until_change(msim):
    import threading
    _reg(msim, {"Name": "hb2-db", "Port": 1, "Connect": {"SidecarService": {}}})
    msim.control("PUT", "/_sim/health", {"ServiceID": "hb2-db-sidecar-proxy", "Status": "critical"})
    _, h, entries = msim.api("GET", "/v1/health/connect/hb2-db?passing")
    assert entries == []
    idx = simutil.index_of(h)
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", msim.api(
        "GET", "/v1/health/connect/hb2-db?passing&index=%d&wait=5m" % idx)))
    t.start()
    msim.control("PUT", "/_sim/health", {"ServiceID": "hb2-db-sidecar-proxy", "Status": "passing"})
    t.join(60)
    _, h2, entries = res["r"]
    assert simutil.index_of(h2) > idx and [e["Service"]["ID"] for e in entries] == ["hb2-db-sidecar-proxy"]


def test_catalog_connect(msim):
    _reg(msim, {"Name": "cc-db", "Port": 5432, "Connect": {"SidecarService": {"Port": 21999}}})
    st, h, nodes = msim.api("GET", "/v1/catalog/connect/cc-db")
    assert st == 200 and len(nodes) == 1
    n = nodes[0]
    assert n["ServiceID"] == "cc-db-sidecar-proxy" and n["ServicePort"] == 21999
    assert n["ServiceKind"] == "connect-proxy" and n["ServiceProxy"]["DestinationServiceName"] == "cc-db"
    assert n["Address"] == "127.0.0.1" and n["Datacenter"] == "dc1"


def test_prepared_query(msim):
    _reg(msim, {"Name": "pq-db", "Port": 5432, "Tags": ["primary"], "Connect": {"SidecarService": {}}})
    _reg(msim, {"Name": "pq-db", "ID": "pq-db-2", "Port": 5433, "Connect": {"SidecarService": {}}})
    msim.control("PUT", "/_sim/health", {"ServiceID": "pq-db-2-sidecar-proxy", "Status": "critical"})
    msim.control("PUT", "/_sim/health", {"ServiceID": "pq-db-sidecar-proxy", "Status": "passing"})
    st, _, out = msim.api("POST", "/v1/query", {"Name": "pq-db-query", "Service": {"Service": "pq-db"},
                                                "DNS": {"TTL": "10s"}})
    assert st == 200
    qid = out["ID"]
    _, _, lst = msim.api("GET", "/v1/query/" + qid)
    assert lst[0]["Name"] == "pq-db-query" and lst[0]["Service"]["Service"] == "pq-db"
    for ref in (qid, "pq-db-query"):
        st, _, res = msim.api("GET", "/v1/query/%s/execute?connect=true" % ref)
        assert st == 200
        assert set(res) == {"Service", "Nodes", "DNS", "Datacenter", "Failovers"}
        assert res["Service"] == "pq-db" and res["DNS"] == {"TTL": "10s"} and res["Datacenter"] == "dc1"
        # Critical instances are dropped; only the connect proxies come back.
        assert [e["Service"]["ID"] for e in res["Nodes"]] == ["pq-db-sidecar-proxy"]
    _, _, res = msim.api("GET", "/v1/query/pq-db-query/execute")
    assert sorted(e["Service"]["ID"] for e in res["Nodes"]) == ["pq-db", "pq-db-2"]
    st, _, text = msim.api("GET", "/v1/query/nope/execute")
    assert (st, text) == (404, "Query not found")
    assert msim.api("DELETE", "/v1/query/" + qid)[0] == 200
    assert msim.api("GET", "/v1/query/pq-db-query/execute")[0] == 404


def test_external_nodes_via_catalog_register(msim):
    """Instances on other nodes (PUT /v1/catalog/register) show in discovery with their node's address."""
    body = {"Node": "ext-node-1", "Address": "10.1.2.3",
            "Service": {"ID": "ext-db-proxy", "Service": "ext-db-proxy", "Kind": "connect-proxy", "Port": 21500,
                        "Proxy": {"DestinationServiceName": "ext-db", "LocalServicePort": 5432}},
            "Checks": [{"CheckID": "node-ok", "Name": "node", "Status": "passing"},
                       {"CheckID": "svc-ok", "Name": "svc", "Status": "passing", "ServiceID": "ext-db-proxy"}]}
    st, _, out = msim.api("PUT", "/v1/catalog/register", body)
    assert (st, out) == (200, True)
    msim.api("PUT", "/v1/catalog/register", {"Node": "ext-node-2", "Address": "10.1.2.4", "Service": {
        "ID": "n", "Service": "ext-db", "Port": 5433, "Connect": {"Native": True}},
        "Check": {"CheckID": "bad", "Name": "bad", "Status": "critical", "ServiceID": "n"}})
    _reg(msim, {"Name": "ext-db", "Port": 5434, "Connect": {"SidecarService": {}}})
    msim.control("PUT", "/_sim/health", {"ServiceID": "ext-db-sidecar-proxy", "Status": "passing"})
    _, _, entries = msim.api("GET", "/v1/health/connect/ext-db")
    got = {(e["Node"]["Node"], e["Service"]["ID"]) for e in entries}
    assert ("ext-node-1", "ext-db-proxy") in got and ("ext-node-2", "n") in got and len(got) == 3
    ext = [e for e in entries if e["Node"]["Node"] == "ext-node-1"][0]
    assert ext["Node"]["Address"] == "10.1.2.3" and ext["Node"]["Datacenter"] == "dc1"
    assert ext["Service"]["Address"] == "" and ext["Service"]["Port"] == 21500
    assert [c["CheckID"] for c in ext["Checks"]] == ["node-ok", "svc-ok"]         # no serfHealth for them
    _, _, entries = msim.api("GET", "/v1/health/connect/ext-db?passing")
    assert sorted(e["Service"]["ID"] for e in entries) == ["ext-db-proxy", "ext-db-sidecar-proxy"]
    assert {n["Node"] for n in msim.api("GET", "/v1/catalog/connect/ext-db")[2]} >= {"ext-node-1", "ext-node-2"}
    assert msim.api("PUT", "/v1/catalog/deregister", {"Node": "ext-node-1"})[0] == 200
    _, _, entries = msim.api("GET", "/v1/health/connect/ext-db")
    assert "ext-node-1" not in [e["Node"]["Node"] for e in entries]
    st, _, text = msim.api("PUT", "/v1/catalog/register", {"Node": "x"})
    assert (st, text) == (400, "Must provide node and address")


def test_discovery_acl_needs_service_and_node_read(start_sim):
    s = start_sim(master_token="root")
    s.api("PUT", "/v1/agent/service/register", {"Name": "db", "Port": 1, "Connect": {"SidecarService": {}}})
    svc_only = s.control("POST", "/_sim/acl/token", {"Rules": {"service_prefix": {"": "read"}}})["SecretID"]
    both = s.control("POST", "/_sim/acl/token", {"Rules": {"service_prefix": {"": "read"},
                                                          "node_prefix": {"": "read"}}})["SecretID"]
    other = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"web": "read"},
                                                           "node_prefix": {"": "read"}}})["SecretID"]
    assert s.api("GET", "/v1/health/connect/db", token=svc_only)[2] == []
    assert [e["Service"]["ID"] for e in s.api("GET", "/v1/health/connect/db", token=both)[2]] == \
        ["db-sidecar-proxy"]
    assert s.api("GET", "/v1/health/connect/db", token=other)[2] == []
    assert s.api("GET", "/v1/catalog/connect/db", token=svc_only)[2] == []
    assert len(s.api("GET", "/v1/catalog/connect/db", token=both)[2]) == 1
    st, _, text = s.api("GET", "/v1/health/connect/db", token="unknown-token")
    assert (st, text) == (403, "ACL not found")


def test_agent_checks_shape(msim):
    _reg(msim, {"Name": "ck", "Port": 1, "Check": {"TTL": "10m", "Notes": "n"}})
    st, h, checks = msim.api("GET", "/v1/agent/checks")
    assert st == 200 and "X-Consul-Index" not in h
    c = checks["service:ck"]
    assert set(c) >= {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
                      "ServiceTags"}
    assert (c["Name"], c["Status"], c["Notes"], c["ServiceID"], c["ServiceName"], c["ServiceTags"]) == \
        ("Service 'ck' check", "critical", "n", "ck", "ck", [])


def test_sim_health_pins_alias_checks_too(msim):
    # The parent's TTL check is critical, so the sidecar's alias check is critical too...
    _reg(msim, {"Name": "al-db", "Port": 1, "Check": {"TTL": "1h"}, "Connect": {"SidecarService": {}}})
    checks = msim.api("GET", "/v1/agent/checks")[2]
    alias = [c for c in checks.values() if c["Name"] == "Connect Sidecar Aliasing al-db"][0]
    assert alias["Status"] == "critical"
    # ...until a test pins the sidecar's health: then all of its checks follow.
    msim.control("PUT", "/_sim/health", {"ServiceID": "al-db-sidecar-proxy", "Status": "passing"})
    _, _, entries = msim.api("GET", "/v1/health/connect/al-db?passing")
    assert [e["Service"]["ID"] for e in entries] == ["al-db-sidecar-proxy"]
    # Unpinned, the alias follows its parent: passing once the parent passes.
    _reg(msim, {"Name": "al-web", "Port": 1, "Check": {"TTL": "1h"}, "Connect": {"SidecarService": {}}})
    msim.api("PUT", "/v1/agent/check/pass/service:al-web")
    checks = msim.api("GET", "/v1/agent/checks")[2]
    alias = [c for c in checks.values() if c["Name"] == "Connect Sidecar Aliasing al-web"][0]
    assert alias["Status"] == "passing"
