"""Service registration: plain, sidecar, managed and unmanaged proxies; /v1/agent/service/:id with hash blocking;
managed proxy config in the 1.2 and 1.3+ shapes; checks and deregistration."""
import threading

import pytest

import simutil


def _reg(sim, body, token=None):
    status, _, text = sim.api("PUT", "/v1/agent/service/register", body, token=token)
    assert status == 200, text


def test_sidecar_registration(msim):
    _reg(msim, {"Name": "sc-web", "Port": 8080, "Tags": ["t1"], "Meta": {"m": "1"},
                "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
                    {"DestinationName": "sc-db", "LocalBindPort": 9191}]}}}})
    _, _, svcs = msim.api("GET", "/v1/agent/services")
    sc = svcs["sc-web-sidecar-proxy"]
    assert sc["Kind"] == "connect-proxy" and sc["Service"] == "sc-web-sidecar-proxy"
    assert 21000 <= sc["Port"] <= 21255
    assert sc["Tags"] == [] and sc["Meta"] == {}          # not inherited before Consul 1.6
    assert sc["Proxy"]["DestinationServiceName"] == "sc-web"
    assert sc["Proxy"]["DestinationServiceID"] == "sc-web"
    assert sc["Proxy"]["LocalServiceAddress"] == "127.0.0.1"
    assert sc["Proxy"]["LocalServicePort"] == 8080
    assert sc["Proxy"]["Upstreams"] == [{"DestinationType": "service", "DestinationName": "sc-db",
                                          "LocalBindPort": 9191}]
    assert "Kind" not in svcs["sc-web"] and "Proxy" not in svcs["sc-web"]
    _, _, checks = msim.api("GET", "/v1/agent/checks")
    names = {c["Name"] for c in checks.values() if c["ServiceID"] == "sc-web-sidecar-proxy"}
    assert names == {"Connect Sidecar Listening", "Connect Sidecar Aliasing sc-web"}
    # A second sidecar takes the next free port.
    _reg(msim, {"Name": "sc-api", "Port": 8081, "Connect": {"SidecarService": {}}})
    _, _, svcs = msim.api("GET", "/v1/agent/services")
    assert svcs["sc-api-sidecar-proxy"]["Port"] != sc["Port"]
    # Deregistering the parent removes its sidecar and their checks.
    assert msim.api("PUT", "/v1/agent/service/deregister/sc-web")[0] == 200
    _, _, svcs = msim.api("GET", "/v1/agent/services")
    assert "sc-web" not in svcs and "sc-web-sidecar-proxy" not in svcs and "sc-api-sidecar-proxy" in svcs
    _, _, checks = msim.api("GET", "/v1/agent/checks")
    assert not [c for c in checks.values() if c["ServiceID"].startswith("sc-web")]


def test_agent_service_hash_blocking(msim):
    _reg(msim, {"Name": "hb-web", "Port": 8080, "Connect": {"SidecarService": {}}})
    status, h, svc = msim.api("GET", "/v1/agent/service/hb-web-sidecar-proxy")
    assert status == 200 and svc["ContentHash"] == h["X-Consul-ContentHash"] and svc["ID"] == "hb-web-sidecar-proxy"
    hsh = svc["ContentHash"]
    status, h2, same = msim.api("GET", "/v1/agent/service/hb-web-sidecar-proxy?hash=%s&wait=100ms" % hsh)
    assert status == 200 and same["ContentHash"] == hsh
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", msim.api(
        "GET", "/v1/agent/service/hb-web-sidecar-proxy?hash=%s&wait=5m" % hsh)))
    t.start()
    _reg(msim, {"Name": "hb-web", "Port": 8080, "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "hb-db", "LocalBindPort": 9000}]}}}})
    t.join(60)
    status, h3, new = res["r"]
    assert new["ContentHash"] != hsh and new["Proxy"]["Upstreams"][0]["DestinationName"] == "hb-db"
    status, _, text = msim.api("GET", "/v1/agent/service/nope")
    assert (status, text) == (404, "unknown proxy service ID: nope")


def test_unmanaged_proxy_1_3_and_1_2_forms(msim):
    _reg(msim, {"Name": "um-proxy", "Kind": "connect-proxy", "Port": 9999,
                "Proxy": {"DestinationServiceName": "um-web", "LocalServicePort": 80}})
    _, _, s = msim.api("GET", "/v1/agent/service/um-proxy")
    assert s["Kind"] == "connect-proxy" and s["Proxy"]["DestinationServiceName"] == "um-web"
    assert s["Proxy"]["LocalServicePort"] == 80 and s["Proxy"]["Upstreams"] == []
    assert "LocalServiceAddress" not in s["Proxy"] and "Config" not in s["Proxy"]     # omitempty as api/agent.go
    assert "ProxyDestination" not in s and "CreateIndex" not in s                     # not set by this endpoint
    assert msim.api("GET", "/v1/agent/services")[2]["um-proxy"]["ProxyDestination"] == "um-web"
    _reg(msim, {"Name": "um-proxy2", "Kind": "connect-proxy", "Port": 9998, "ProxyDestination": "um-web"})
    _, _, s = msim.api("GET", "/v1/agent/service/um-proxy2")
    assert s["Proxy"]["DestinationServiceName"] == "um-web"
    status, _, text = msim.api("PUT", "/v1/agent/service/register", {"Name": "um-bad", "Kind": "connect-proxy"})
    assert status == 400 and "Proxy.DestinationServiceName must be non-empty" in text and "Port must be set" in text
    status, _, text = msim.api("PUT", "/v1/agent/service/register", {"Port": 1})
    assert (status, text) == (400, "Missing service name")


def test_managed_proxy_1_4(msim):
    _reg(msim, {"Name": "mp-web", "Port": 8181, "Connect": {"Proxy": {
        "Command": ["/bin/true"], "Config": {"connect_timeout_ms": 1000},
        "Upstreams": [{"DestinationName": "mp-db", "LocalBindPort": 1234}]}}})
    _, _, svcs = msim.api("GET", "/v1/agent/services")
    p = svcs["mp-web-proxy"]
    assert p["Kind"] == "connect-proxy" and 20000 <= p["Port"] <= 20255
    assert p["Proxy"]["DestinationServiceName"] == "mp-web"
    assert svcs["mp-web"]["Connect"]["Proxy"]["Command"] == ["/bin/true"]
    status, h, cfg = msim.api("GET", "/v1/agent/connect/proxy/mp-web-proxy")
    assert status == 200 and cfg["ContentHash"] == h["X-Consul-ContentHash"]
    assert cfg["ProxyServiceID"] == "mp-web-proxy" and cfg["TargetServiceID"] == "mp-web"
    assert cfg["TargetServiceName"] == "mp-web" and cfg["ExecMode"] == "daemon" and cfg["Command"] == ["/bin/true"]
    assert cfg["Config"] == {"bind_address": "127.0.0.1", "bind_port": p["Port"], "connect_timeout_ms": 1000,
                             "local_service_address": "127.0.0.1:8181"}
    assert cfg["Upstreams"] == [{"DestinationType": "service", "DestinationName": "mp-db", "LocalBindPort": 1234}]
    assert "telemetry" not in cfg["Config"]          # only merged in for the proxy's own token
    # /v1/agent/service/<managed proxy id> is Consul's translation of the proxy config.
    st, h, asvc = msim.api("GET", "/v1/agent/service/mp-web-proxy")
    assert st == 200 and asvc["ContentHash"] == cfg["ContentHash"] == h["X-Consul-ContentHash"]
    assert (asvc["Kind"], asvc["ID"], asvc["Service"], asvc["Port"], asvc["Address"]) == \
        ("connect-proxy", "mp-web-proxy", "mp-web-proxy", p["Port"], "127.0.0.1")
    assert asvc["Proxy"]["DestinationServiceName"] == "mp-web" and asvc["Proxy"]["LocalServicePort"] == 8181
    assert asvc["Proxy"]["LocalServiceAddress"] == "127.0.0.1" and asvc["Proxy"]["Upstreams"] == cfg["Upstreams"]
    ptok = msim.control("GET", "/_sim/proxy/mp-web-proxy")["ProxyToken"]
    st, h, pcfg = msim.api("GET", "/v1/agent/connect/proxy/mp-web-proxy", token=ptok)
    assert pcfg["Config"]["telemetry"]["metrics_prefix"] == "consul.proxy.mp-web"
    assert pcfg["ContentHash"] == cfg["ContentHash"]
    # Hash blocking: same hash times out unchanged, a re-registration with new config wakes it.
    hsh = cfg["ContentHash"]
    assert msim.api("GET", "/v1/agent/connect/proxy/mp-web-proxy?hash=%s&wait=100ms" % hsh)[2]["ContentHash"] == hsh
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", msim.api(
        "GET", "/v1/agent/connect/proxy/mp-web-proxy?hash=%s&wait=5m" % hsh)))
    t.start()
    _reg(msim, {"Name": "mp-web", "Port": 8282, "Connect": {"Proxy": {"Command": ["/bin/true"]}}})
    t.join(60)
    new = res["r"][2]
    assert new["ContentHash"] != hsh and new["Config"]["local_service_address"] == "127.0.0.1:8282"
    assert new["Config"]["bind_port"] == p["Port"]       # the allocated port survives re-registration
    ctl = msim.control("GET", "/_sim/proxy/mp-web-proxy")
    assert ctl["Env"]["CONNECT_PROXY_ID"] == "mp-web-proxy" and ctl["Env"]["CONNECT_PROXY_TOKEN"] == ctl["ProxyToken"]
    assert ctl["Env"]["CONSUL_HTTP_ADDR"] == msim.http_addr and ctl["Env"]["CONSUL_HTTP_SSL"] == "false"
    assert ctl["Env"]["CONSUL_HTTP_TOKEN"] == ""
    status, _, text = msim.api("GET", "/v1/agent/connect/proxy/nope-proxy")
    assert (status, text) == (404, "unknown proxy service ID: nope-proxy")
    msim.api("PUT", "/v1/agent/service/deregister/mp-web")
    assert "mp-web-proxy" not in msim.api("GET", "/v1/agent/services")[2]
    assert msim.api("GET", "/v1/agent/connect/proxy/mp-web-proxy")[0] == 404


def test_managed_proxy_1_2_shape(start_sim):
    s = start_sim("--consul-version", "1.2.2")
    _reg(s, {"Name": "web", "Port": 8181, "Connect": {"Proxy": {"Config": {"upstreams": [
        {"destination_name": "db", "local_bind_port": 1234}]}}}})
    _, _, cfg = s.api("GET", "/v1/agent/connect/proxy/web-proxy")
    assert "Upstreams" not in cfg
    assert cfg["Config"]["upstreams"] == [{"destination_name": "db", "local_bind_port": 1234}]
    assert cfg["Config"]["local_service_address"] == "127.0.0.1:8181"
    _, _, svcs = s.api("GET", "/v1/agent/services")
    assert svcs["web-proxy"]["ProxyDestination"] == "web" and "Proxy" not in svcs["web-proxy"]
    # 1.2 has no /v1/agent/service/:id and no sidecar_service.
    assert s.api("GET", "/v1/agent/service/web")[0] == 404
    _reg(s, {"Name": "api", "Port": 1, "Connect": {"SidecarService": {}}})
    assert "api-sidecar-proxy" not in s.api("GET", "/v1/agent/services")[2]
    _reg(s, {"Name": "p", "Kind": "connect-proxy", "ProxyDestination": "web", "Port": 4444})
    h = s.api("GET", "/v1/health/connect/web")[2]
    assert sorted(e["Service"]["ID"] for e in h) == ["p", "web-proxy"]
    assert "Proxy" not in h[0]["Service"] and h[0]["Service"]["ProxyDestination"] == "web"


def test_proxy_token_acl(start_sim):
    s = start_sim(master_token="root")
    w = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"web": "write", "web-proxy": "write"}}})["SecretID"]
    _reg(s, {"Name": "web", "Port": 8181, "Connect": {"Proxy": {}}}, token=w)
    ptok = s.control("GET", "/_sim/proxy/web-proxy")["ProxyToken"]
    assert s.api("GET", "/v1/agent/connect/proxy/web-proxy", token=ptok)[0] == 200
    assert s.api("GET", "/v1/agent/connect/proxy/web-proxy", token=w)[0] == 200
    anon = s.api("GET", "/v1/agent/connect/proxy/web-proxy", token="")
    assert anon[0] == 403 and anon[2] == "Permission denied"
    assert s.api("GET", "/v1/agent/connect/ca/leaf/web", token=ptok)[0] == 200
    assert s.api("GET", "/v1/agent/connect/ca/leaf/db", token=ptok)[0] == 403
    # Elsewhere the proxy token acts as the token the service was registered with (service:write on web).
    td = s.api("GET", "/v1/agent/connect/ca/roots")[2]["TrustDomain"]
    body = {"Target": "web", "ClientCertURI": "spiffe://%s/ns/default/dc/dc1/svc/x" % td}
    assert s.api("POST", "/v1/agent/connect/authorize", body, token=ptok)[0] == 200
    assert s.api("POST", "/v1/agent/connect/authorize", dict(body, Target="db"), token=ptok)[0] == 403


def test_ttl_check_and_register_acl(start_sim):
    s = start_sim(master_token="root")
    w = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"web": "write"}}})["SecretID"]
    st, _, text = s.api("PUT", "/v1/agent/service/register", {"Name": "db", "Port": 1}, token=w)
    assert (st, text) == (403, "Permission denied")
    _reg(s, {"Name": "web", "Port": 80, "Check": {"TTL": "30s"}}, token=w)
    _, _, checks = s.api("GET", "/v1/agent/checks")
    assert checks["service:web"]["Status"] == "critical"
    assert s.api("PUT", "/v1/agent/check/pass/service:web?note=ok", token=w)[0] == 200
    _, _, checks = s.api("GET", "/v1/agent/checks")
    assert (checks["service:web"]["Status"], checks["service:web"]["Output"]) == ("passing", "ok")
    assert s.api("PUT", "/v1/agent/check/warn/service:web", token=w)[0] == 200
    assert s.api("GET", "/v1/agent/checks")[2]["service:web"]["Status"] == "warning"
    st, _, text = s.api("PUT", "/v1/agent/check/fail/nope", token=w)
    assert st == 500 and text == 'Unknown check "nope"'
    assert s.api("GET", "/v1/agent/services", token=w)[2].keys() == {"web"}
    assert s.api("GET", "/v1/agent/services", token="")[2] == {}


@pytest.mark.parametrize("body", [
    {"service": {"name": "cf", "port": 8080, "connect": {"sidecar_service": {"proxy": {"upstreams": [
        {"destination_name": "db", "local_bind_port": 9191}]}}}}},
    {"services": [{"name": "cf", "port": 8080, "connect": {"sidecar_service": {"proxy": {"upstreams": [
        {"destination_name": "db", "local_bind_port": 9191}]}}}}]},
])
def test_config_file(start_sim, tmp_path, body):
    import json
    p = tmp_path / "svc.json"
    p.write_text(json.dumps(body))
    s = start_sim("--config-file", str(p))
    svc = s.api("GET", "/v1/agent/service/cf-sidecar-proxy")[2]
    assert svc["Proxy"]["Upstreams"] == [{"DestinationType": "service", "DestinationName": "db",
                                          "LocalBindPort": 9191}]
    assert svc["Proxy"]["LocalServicePort"] == 8080


def test_method_and_unknown_path(msim):
    st, h, text = msim.api("GET", "/v1/agent/service/register")
    assert st == 405 and h["Allow"] == "OPTIONS,PUT" and text == "method GET not allowed"
    st, _, text = msim.api("GET", "/v1/nope")
    assert st == 404
    _ = simutil


def test_ttl_expiry_and_unknown_ids_without_acls(start_sim):
    s = start_sim()
    _reg(s, {"Name": "ttl", "Port": 1, "Checks": [{"TTL": "1s"}, {"CheckID": "mine", "TTL": "1h"}]})
    checks = s.api("GET", "/v1/agent/checks")[2]
    assert set(checks) == {"service:ttl:1", "mine"}
    assert s.api("PUT", "/v1/agent/check/pass/service:ttl:1")[0] == 200
    assert s.api("GET", "/v1/agent/checks")[2]["service:ttl:1"]["Status"] == "passing"
    import harness
    harness.wait_until(lambda: s.api("GET", "/v1/agent/checks")[2]["service:ttl:1"]["Output"] == "TTL expired",
                       30, what="TTL expiry")
    assert s.api("GET", "/v1/agent/checks")[2]["service:ttl:1"]["Status"] == "critical"
    st, _, text = s.api("PUT", "/v1/agent/check/pass/nope")
    assert (st, text) == (500, 'CheckID "nope" does not have associated TTL')
    assert s.api("PUT", "/v1/agent/service/deregister/nope")[0] == 200


def test_managed_api_registration_switch_and_direct_deregistration(start_sim):
    s = start_sim("--no-managed-api-registration")
    st, _, text = s.api("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 1, "Connect": {"Proxy": {}}})
    assert (st, text) == (400, "Managed proxy registration via the API is disallowed.")
    s2 = start_sim()
    _reg(s2, {"Name": "web", "Port": 1, "Connect": {"Proxy": {}}})
    st, _, text = s2.api("PUT", "/v1/agent/service/deregister/web-proxy")
    assert st == 400 and text.startswith("Managed proxy service cannot be deregistered directly.")
    st, _, text = s2.api("PUT", "/v1/agent/service/register", {"Name": "x", "Port": 1, "Address": "0.0.0.0"})
    assert (st, text) == (400, "Invalid service address")


def test_register_acl_vetting(start_sim):
    s = start_sim(master_token="root")
    p = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"web-proxy": "write"}}})["SecretID"]
    both = s.control("POST", "/_sim/acl/token", {"Rules": {"service_prefix": {"web": "write"}}})["SecretID"]
    body = {"Name": "web-proxy", "Kind": "connect-proxy", "Port": 2000, "Proxy": {"DestinationServiceName": "web"}}
    # A proxy needs service:write on its destination too: it is discovered as an instance of it.
    assert s.api("PUT", "/v1/agent/service/register", body, token=p)[::2] == (403, "Permission denied")
    assert s.api("PUT", "/v1/agent/service/register", body, token=both)[0] == 200
    # Replacing a service by ID needs write on the service being replaced.
    s.api("PUT", "/v1/agent/service/register", {"Name": "db", "ID": "shared", "Port": 1}, token="root")
    st, _, text = s.api("PUT", "/v1/agent/service/register", {"Name": "web", "ID": "shared", "Port": 1}, token=both)
    assert (st, text) == (403, "Permission denied")
