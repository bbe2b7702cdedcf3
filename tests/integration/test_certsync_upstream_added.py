"""An upstream added to the proxy's definition appears (re-render, `haproxy -c`, seamless reload) while a
connection established through the first upstream survives."""
import harness
import spoa_support
from certsync_support import Mesh, Traffic, call, ddir, passing, register, reloads  # noqa: F401


def test_upstream_added_keeps_connections(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    r0 = reloads(m.web_dir)
    t = Traffic(m.local)      # holds one long-lived connection open across the reload
    # a second service with its own proxy, then a second upstream in web's sidecar definition
    echo2 = spoa_support.start_echo(procs)
    register(sim, {"Name": "cache", "Port": echo2, "Connect": {"SidecarService": {"Port": harness.free_port()}}})
    passing(sim, "cache-sidecar-proxy")
    from certsync_support import start_certsync
    start_certsync(procs, sim, ddir("cache"), ["-sidecar-for", "cache"], name="certsync-cache")
    local2 = harness.free_port()
    register(sim, {"Name": "web", "Port": harness.free_port(), "Connect": {"SidecarService": {
        "Port": m.web_port, "Proxy": {"Upstreams": [
            {"DestinationName": "redis", "LocalBindPort": m.local},
            {"DestinationName": "cache", "LocalBindPort": local2}]}}}})
    harness.wait_until(lambda: call(local2) == b"ping\n", 30, what="the new upstream serves")
    assert reloads(m.web_dir) == r0 + 1
    ok, failed = t.stop()    # raises if the long-lived connection broke
    assert ok > 0
    assert call(m.local) == b"ping\n"
