"""-sidecar-for: two sidecar proxies (web -> redis) end to end through mutual TLS and intentions."""
import os
import stat

import harness
from certsync_support import Mesh, call, ddir, served_serial  # noqa: F401 - ddir is a fixture


def test_sidecar_mesh(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    # the files HAProxy reads: key material 0600 in a 0700 dir
    assert stat.S_IMODE(os.stat(m.web_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(m.web_dir, "leaf.pem")).st_mode) == 0o600
    # the served certificate is the agent's leaf for the service
    st, _, leaf = sim.api("GET", "/v1/agent/connect/ca/leaf/redis")
    assert served_serial(m.redis_dir).lower() == leaf["SerialNumber"].replace(":", "").lower().lstrip("0") \
        or served_serial(m.redis_dir).lower().lstrip("0") == leaf["SerialNumber"].replace(":", "").lower().lstrip("0")
    # a deny intention web -> redis closes new connections (connect-spoa answers from the agent)
    st, _, out = sim.api("POST", "/v1/connect/intentions",
                         {"SourceName": "web", "DestinationName": "redis", "Action": "deny"})
    assert st == 200, out
    harness.wait_until(lambda: call(m.local) is None, 20, what="deny takes effect")
    assert m.web.alive() and m.redis.alive()
