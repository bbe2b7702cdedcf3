"""ACL token rotation: the token file is rewritten and connect-certsync gets SIGHUP (as Vault agent or
consul-template do). Both connect-certsync's watches and connect-spoa's authorize calls then carry the new
token: with the old one revoked, traffic keeps flowing, a fresh decision is answered, a leaf rotation is
still picked up. A token file caught empty keeps the token in use."""
import os
import signal
import time

import harness
import spoa_support as ss
from certsync_support import Mesh, ddir, served_serial  # noqa: F401 - fixture

MASTER = "root-secret"
# What a sidecar's token needs here: its services (leaf, proxy config, authorize, intentions) and the
# catalog's nodes (upstream discovery).
RULES = {"service_prefix": {"": "write"}, "node_prefix": {"": "read"}}
PROBE = "/v1/agent/connect/ca/leaf/probe"   # the test's own check of a token; no daemon asks for it


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def _requests(sim):
    """The daemons' requests to the agent (the test's own carry the master token, unknown to them)."""
    return [r for r in sim.control("GET", "/_sim/requests?path=/v1/") if r["Token"] != MASTER]


def _leaf_serial(sim, service):
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % service)
    assert st == 200
    return leaf["SerialNumber"].replace(":", "").upper().lstrip("0")


def _served(d):
    s = served_serial(d)
    return s.upper().lstrip("0") if s else s


def test_sighup_rereads_token_file(procs, tmp_path, ddir):  # noqa: F811
    sim = harness.start_sim(procs, tmp_path, args=["--acl-default-policy", "deny"], master_token=MASTER)
    tok_a = sim.control("POST", "/_sim/acl/token", {"SecretID": "token-a-1111", "Rules": RULES})["SecretID"]
    tf = os.path.join(str(tmp_path), "acl-token")
    _write(tf, tok_a + "\n")
    ss.intention(sim, "web", "redis", "allow")
    m = Mesh(procs, sim, ddir, redis_args=["-sidecar-for", "redis", "-token-file", tf],
             web_args=["-sidecar-for", "web", "-token-file", tf])
    m.wait_flowing()
    reqs = _requests(sim)
    assert any(r["Path"] == "/v1/agent/connect/authorize" for r in reqs)
    assert reqs and all(r["Token"] == tok_a for r in reqs), {r["Token"] for r in reqs}

    # Rotation: B created, the file rewritten, SIGHUP to both certsyncs (they forward it to connect-spoa).
    tok_b = sim.control("POST", "/_sim/acl/token", {"SecretID": "token-b-2222", "Rules": RULES})["SecretID"]
    _write(tf, tok_b + "\n")
    sim.control("DELETE", "/_sim/requests")
    for p in (m.redis, m.web):
        p.signal(signal.SIGHUP)
    for p in (m.redis, m.web):
        harness.wait_until(lambda: "connect-certsync: ACL token re-read from %s" % tf in p.log(), 20,
                           what="certsync re-read the token")
        harness.wait_until(lambda: "connect-spoa: ACL token re-read from %s" % tf in p.log(), 20,
                           what="connect-spoa re-read the token")
    swapped = time.time()
    # Revoke A (no rules left under default deny): anything still sent with it is refused.
    sim.control("POST", "/_sim/acl/token", {"SecretID": tok_a, "Rules": {}})
    st, _, _ = sim.api("GET", PROBE, token=tok_a)
    assert st == 403
    st, _, _ = sim.api("GET", PROBE, token=tok_b)
    assert st == 200

    # connect-spoa's SIGHUP dropped its decisions: this connection is decided by the agent, asked with B
    # (with A it would be a 403, i.e. a deny).
    m.wait_flowing()
    # certsync's watches ask with B: a leaf rotation still reaches HAProxy.
    before = _served(m.redis_dir)
    sim.control("POST", "/_sim/leaf/rotate", {"Service": "redis"})
    new = _leaf_serial(sim, "redis")
    assert new != before
    harness.wait_until(lambda: _served(m.redis_dir) == new, 30, what="redis serves the rotated leaf")
    m.wait_flowing()
    reqs = _requests(sim)
    # every watch (refreshed by SIGHUP) and the authorize calls went out with B ...
    with_b = {r["Path"] for r in reqs if r["Token"] == tok_b}
    for path in ("/v1/agent/service/redis-sidecar-proxy", "/v1/agent/service/web-sidecar-proxy",
                 "/v1/agent/connect/ca/leaf/redis", "/v1/agent/connect/ca/leaf/web",
                 "/v1/agent/connect/ca/roots", "/v1/health/connect/redis", "/v1/connect/intentions/match",
                 "/v1/agent/connect/authorize"):
        assert path in with_b, (path, with_b)
    # ... and nothing after the re-read carried another token.
    late = [(r["Path"], r["Token"]) for r in reqs
            if r["Time"] >= swapped and r["Token"] != tok_b and r["Path"] != PROBE]
    assert late == []
    assert m.redis.alive() and m.web.alive()

    # A token file caught empty (a writer between truncate and write): the token in use stays.
    _write(tf, "")
    m.redis.signal(signal.SIGHUP)
    harness.wait_until(lambda: "keeping the ACL token in use" in m.redis.log(), 20, what="empty file warning")
    sim.control("DELETE", "/_sim/requests")
    sim.control("POST", "/_sim/leaf/rotate", {"Service": "redis"})
    new = _leaf_serial(sim, "redis")
    harness.wait_until(lambda: _served(m.redis_dir) == new, 30, what="leaf rotation with the kept token")
    m.wait_flowing()
    reqs = _requests(sim)
    assert reqs and all(r["Token"] == tok_b for r in reqs), {(r["Path"], r["Token"]) for r in reqs}
    # The token itself is never logged.
    for p in (m.redis, m.web):
        assert tok_a not in p.log() and tok_b not in p.log()
