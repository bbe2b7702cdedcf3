"""POST /v1/agent/connect/authorize: intentions, defaults with and without ACLs, bad URIs per version."""
import pytest


def _td(sim):
    return sim.api("GET", "/v1/agent/connect/ca/roots")[2]["TrustDomain"]


def _uri(td, svc, ns="default", dc="dc1"):
    return "spiffe://%s/ns/%s/dc/%s/svc/%s" % (td, ns, dc, svc)


def _auth(sim, target, uri, token=None):
    return sim.api("POST", "/v1/agent/connect/authorize",
                   {"Target": target, "ClientCertURI": uri, "ClientCertSerial": "01:02"}, token=token)


def test_allow_deny_default(msim):
    td = _td(msim)
    dny = msim.api("POST", "/v1/connect/intentions",
                   {"SourceName": "az-web", "DestinationName": "az-db", "Action": "deny"})[2]["ID"]
    msim.api("POST", "/v1/connect/intentions", {"SourceName": "*", "DestinationName": "az-db", "Action": "allow"})
    status, h, body = _auth(msim, "az-db", _uri(td, "az-web"))
    assert status == 200 and set(body) == {"Authorized", "Reason"}
    assert body == {"Authorized": False,
                    "Reason": "Matched intention: DENY default/az-web => default/az-db (ID: %s)" % dny}
    assert h["X-Cache"] in ("HIT", "MISS")
    status, _, body = _auth(msim, "az-db", _uri(td, "az-api"))
    assert body["Authorized"] is True and body["Reason"].startswith("Matched intention: ALLOW default/* => default/az-db")
    status, _, body = _auth(msim, "az-nothing", _uri(td, "az-web"))
    assert body == {"Authorized": True, "Reason": "ACLs disabled, access is allowed by default"}
    # Trust domain comparison ignores case of our domain; a foreign one is refused with 200.
    status, _, body = _auth(msim, "az-db", _uri("other.consul", "az-api"))
    assert (status, body) == (200, {"Authorized": False,
                                    "Reason": "Identity from an external trust domain: other.consul"})
    status, _, body = _auth(msim, "az-db", _uri(td.upper(), "az-api"))
    assert body["Authorized"] is True


def test_request_errors_1_4(msim):
    status, _, text = msim.api("POST", "/v1/agent/connect/authorize", {"ClientCertURI": "spiffe://x/ns/a/dc/b/svc/c"})
    assert (status, text) == (400, "Target service must be specified")
    status, _, text = msim.api("POST", "/v1/agent/connect/authorize", "{bad")
    assert status == 400 and text.startswith("Request decode failed")
    for bad in ("", "http://foo/ns/default/dc/dc1/svc/web", "spiffe://td/ns/default/svc/web", "not a uri"):
        status, _, text = _auth(msim, "db", bad)
        assert (status, text) == (400, "ClientCertURI not a valid Connect identifier"), bad
    status, _, text = _auth(msim, "db", "spiffe://" + _td(msim))
    assert (status, text) == (400, "ClientCertURI not a valid Service identifier")
    status, h, text = msim.api("GET", "/v1/agent/connect/authorize")
    assert status == 405 and "POST" in h["Allow"]


def test_bad_uri_1_2(start_sim):
    s = start_sim("--consul-version", "1.2.3")
    status, _, body = _auth(s, "db", "http://foo/bar")
    assert status == 200 and body["Authorized"] is False and body["Reason"].startswith("Invalid client ID: ")
    status, _, body = _auth(s, "db", "spiffe://" + _td(s))
    assert (status, body) == (200, {"Authorized": False, "Reason": "Client ID must be a valid SPIFFE service URI"})
    status, _, body = _auth(s, "db", _uri("other.consul", "web"))
    assert body == {"Authorized": False, "Reason": "Identity from an external trust domain: other.consul"}


@pytest.mark.parametrize("policy,expect", [("deny", False), ("allow", True)])
def test_default_policy_with_acls(start_sim, policy, expect):
    s = start_sim("--acl-default-policy", policy, master_token="root")
    td = _td(s)
    status, _, body = _auth(s, "db", _uri(td, "web"))
    assert (status, body) == (200, {"Authorized": expect, "Reason": "Default behavior configured by ACLs"})


def test_acl_on_authorize(start_sim):
    s = start_sim(master_token="root")
    td = _td(s)
    w = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"db": "write"}}})["SecretID"]
    r = s.control("POST", "/_sim/acl/token", {"Rules": {"service": {"db": "read"}}})["SecretID"]
    assert _auth(s, "db", _uri(td, "web"), token=w)[0] == 200
    assert _auth(s, "db", _uri(td, "web"), token=r)[:3:2] == (403, "Permission denied")
    assert _auth(s, "other", _uri(td, "web"), token=w)[:3:2] == (403, "Permission denied")
    assert _auth(s, "db", _uri(td, "web"), token="nope")[:3:2] == (403, "ACL not found")
    # The anonymous token (no token at all) has no rules under default deny.
    st, _, text = s.api("POST", "/v1/agent/connect/authorize",
                        {"Target": "db", "ClientCertURI": _uri(td, "web")}, token="")
    assert (st, text) == (403, "Permission denied")
    s.api("POST", "/v1/connect/intentions", {"SourceName": "web", "DestinationName": "db", "Action": "allow"})
    status, _, body = _auth(s, "db", _uri(td, "web"), token=w)
    assert body["Authorized"] is True and body["Reason"].startswith("Matched intention: ALLOW")
