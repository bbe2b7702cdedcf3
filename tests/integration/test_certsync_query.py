"""An upstream that is a prepared query (re-executed every 10 s, ?connect=true)."""
import harness
from certsync_support import Mesh, ddir  # noqa: F401 - ddir is a fixture


def test_prepared_query_upstream(procs, sim, ddir):  # noqa: F811
    st, _, out = sim.api("POST", "/v1/query", {"Name": "redis-q", "Service": {"Service": "redis"}})
    assert st == 200, out
    m = Mesh(procs, sim, ddir, upstream_extra={"DestinationType": "prepared_query", "DestinationName": "redis-q"})
    m.wait_flowing()
    reqs = sim.control("GET", "/_sim/requests?path=/v1/query/redis-q/execute")
    assert reqs and all("connect=true" in (r.get("Query") or "") or r.get("Query", {}).get("connect")
                        for r in reqs), reqs
