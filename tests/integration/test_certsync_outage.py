"""The agent unreachable for a while (PUT /_sim/outage): traffic keeps flowing on the last good state, and
the watches resume afterwards (a change made after the outage is applied)."""
import time

import harness
from certsync_support import Mesh, call, ddir, passing, ready_servers, register  # noqa: F401


def test_agent_outage(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    sim.control("PUT", "/_sim/outage", {"Seconds": 4})
    assert not harness.port_open(sim.http_port)
    # during the outage: existing state serves new connections (connect-spoa answers from its cache)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert call(m.local) == b"ping\n"
        time.sleep(0.1)
    harness.wait_until(lambda: harness.port_open(sim.http_port), 20, what="agent back")
    # the watches resume: a new instance registered now shows up in web's slots
    register(sim, {"ID": "redis-late", "Name": "redis-late", "Kind": "connect-proxy", "Port": 7301,
                   "Address": "127.0.0.3", "Proxy": {"DestinationServiceName": "redis", "LocalServicePort": 1}})
    harness.wait_until(lambda: "127.0.0.3:7301" in ready_servers(m.web_dir), 30, what="watch resumed")
    assert m.web.alive() and m.redis.alive()
    assert "resumed" in m.web.log()
