"""The agent unreachable for a while (PUT /_sim/outage): traffic keeps flowing on the last good state, and
the watches resume afterwards (a change made after the outage is applied)."""
import time

import harness
from certsync_support import Mesh, call, ddir, passing, ready_servers, register  # noqa: F401


def test_agent_outage(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    # As the issue asks: the agent unreachable for 30 seconds (connections refused, as a stopped agent).
    sim.control("PUT", "/_sim/outage", {"Seconds": 30})
    assert not harness.port_open(sim.http_port)
    # During the whole outage new connections keep flowing on the last good state (connect-spoa answers
    # from its cache, HAProxy keeps its certificates and servers): every call must succeed.
    calls = 0
    while not harness.port_open(sim.http_port):
        assert call(m.local) == b"ping\n", "call %d during the outage failed" % calls
        calls += 1
        time.sleep(0.25)
    assert calls >= 20, "the outage ended too early to prove anything (%d calls)" % calls
    # the watches resume: a new instance registered now shows up in web's slots
    register(sim, {"ID": "redis-late", "Name": "redis-late", "Kind": "connect-proxy", "Port": 7301,
                   "Address": "127.0.0.3", "Proxy": {"DestinationServiceName": "redis", "LocalServicePort": 1}})
    harness.wait_until(lambda: "127.0.0.3:7301" in ready_servers(m.web_dir), 30, what="watch resumed")
    assert m.web.alive() and m.redis.alive()
    assert "resumed" in m.web.log()
