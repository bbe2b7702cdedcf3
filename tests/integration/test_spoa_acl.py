"""Refusals by the agent: an intentions watch answered 403 -> connect-spoa falls back to a cache TTL and
says so once at warn; a token without service:write on the target gets 403 from authorize -> every
caller is denied with that reason, logged at warn once (never fail open)."""
import os

import spoa_support as ss
import harness

MASTER = "root-secret"


def _stack(procs, sim, tmp_path, token, extra=()):
    tf = os.path.join(str(tmp_path), "token")
    with open(tf, "w") as f:
        f.write(token + "\n")
    return ss.setup_stack(procs, sim, tmp_path, spoa_args=["-token-file", tf] + list(extra))


def test_watch_refused_falls_back_to_ttl(procs, sim, tmp_path):
    # On real Consul, authorize itself needs intention:read on the target (its intention match runs with
    # the caller's token), so a token that may authorize but not watch cannot be built from ACL rules:
    # the simulator refuses the watch path instead, as Consul does for such a token.
    sim.control("PUT", "/_sim/fault", {"Path": "/v1/connect/intentions/match", "Status": 403,
                                       "Body": "Permission denied"})
    tok = "any-token"
    ss.intention(sim, "web", "db", "allow")
    st = _stack(procs, sim, tmp_path, tok, ["-cache-ttl", "1s"])
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    harness.wait_until(lambda: "refused the intentions watch" in st["spoa"].log(), 10, what="watch 403 warning")
    log = st["spoa"].log()
    assert log.count("refused the intentions watch") == 1
    assert "[WARN]" in log
    # The token was sent to the agent.
    reqs = sim.control("GET", "/_sim/requests?path=/v1/agent/connect/authorize")
    assert reqs and all(r["Token"] == tok for r in reqs)
    # Intentions change: without a watch the cached allow lasts until the TTL (1 s), then the deny applies.
    ids = [i["ID"] for i in sim.api("GET", "/v1/connect/intentions")[2]]
    for i in ids:
        sim.api("DELETE", "/v1/connect/intentions/%s" % i)
    ss.intention(sim, "web", "db", "deny")
    harness.wait_until(lambda: ss.mtls_call(st["port"], st["ca"], cert, key) is None, 10,
                       what="deny after the cache TTL")


def test_authorize_refused_denies_with_reason(procs, tmp_path):
    sim = harness.start_sim(procs, tmp_path, master_token=MASTER)
    tok = sim.control("POST", "/_sim/acl/token", {"Rules": {"service": {"web": "write"}}})["SecretID"]
    st_, _, _ = sim.api("POST", "/v1/connect/intentions", {"SourceName": "web", "DestinationName": "db",
                                                            "Action": "allow", "SourceType": "consul"})
    assert st_ == 200
    st = _stack(procs, sim, tmp_path, tok)
    cert, key, uri = ss.client_cert(sim, tmp_path, "web")
    for _ in range(3):
        assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
    log = st["spoa"].log()
    assert "caller=%s target=db result=deny reason=\"agent refused authorize (403" % uri in log
    assert sum(1 for l in log.splitlines() if "[WARN]" in l and "agent refused authorize" in l) == 1
