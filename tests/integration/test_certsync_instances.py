"""Upstream instances added, turned critical and removed are reflected in HAProxy's server slots without
a reload; more instances than slots re-renders with twice the slots (one reload)."""
import harness
from certsync_support import (Mesh, ddir, deregister, passing, ready_servers, register,  # noqa: F401
                              reloads, server_slots, worker_pids)


def _proxy(sim, sid, port):
    register(sim, {"ID": sid, "Name": sid, "Kind": "connect-proxy", "Port": port, "Address": "127.0.0.2",
                   "Proxy": {"DestinationServiceName": "redis", "LocalServicePort": 1},
                   "Check": {"TTL": "1h"}})
    passing(sim, sid)


def test_instances_follow_health(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    first = "127.0.0.1:%d" % m.redis_port
    pid = worker_pids(m.web_dir)[0]
    r0 = reloads(m.web_dir)
    assert ready_servers(m.web_dir) == {first}
    _proxy(sim, "redis-extra", 7001)
    harness.wait_until(lambda: ready_servers(m.web_dir) == {first, "127.0.0.2:7001"}, 10, what="instance added")
    passing(sim, "redis-extra", "critical")
    harness.wait_until(lambda: ready_servers(m.web_dir) == {first}, 10, what="critical instance out")
    passing(sim, "redis-extra", "passing")
    harness.wait_until(lambda: ready_servers(m.web_dir) == {first, "127.0.0.2:7001"}, 10, what="back")
    deregister(sim, "redis-extra")
    harness.wait_until(lambda: ready_servers(m.web_dir) == {first}, 10, what="instance removed")
    assert worker_pids(m.web_dir)[0] == pid and reloads(m.web_dir) == r0
    assert m.wait_flowing() is None


def test_more_instances_than_slots(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    nslots = len([s for s in server_slots(m.web_dir)["redis_0"] if s[0].startswith("slot")])
    r0 = reloads(m.web_dir)
    want = {"127.0.0.1:%d" % m.redis_port}
    for i in range(nslots):
        _proxy(sim, "redis-x%d" % i, 7100 + i)
        want.add("127.0.0.2:%d" % (7100 + i))
    harness.wait_until(lambda: ready_servers(m.web_dir) == want, 20, what="all instances in slots")
    slots = [s for s in server_slots(m.web_dir)["redis_0"] if s[0].startswith("slot")]
    assert len(slots) == 2 * nslots
    assert reloads(m.web_dir) == r0 + 1
    m.wait_flowing()
