"""The test-control API (/_sim/...) on its own listener, which an outage never closes."""
import json
import threading
import time

import acl
from errors import APIError


class Control:
    def __init__(self, sim):
        self.sim = sim
        self.st = sim.state
        self.outage_timer = None
        self.outage_lock = threading.Lock()

    def app(self, method, path, query, raw_query, headers, body, gen):
        try:
            data = json.loads(body.decode()) if body else {}
        except ValueError as e:
            return _out(400, {"error": "bad JSON: %s" % e})
        try:
            status, out = self.handle(method, path, query, data or {})
        except APIError as e:
            status, out = e.status, {"error": e.text}
        except (KeyError, TypeError, ValueError) as e:
            status, out = 400, {"error": "%s: %s" % (type(e).__name__, e)}
        return _out(status, out)

    def handle(self, method, path, query, data):
        st = self.st
        if path == "/_sim/ca/rotate" and method == "POST":
            return 200, {"ActiveRootID": st.rotate_ca()}
        if path == "/_sim/ca/prune" and method == "POST":
            return 200, {"Pruned": st.prune_ca(data.get("OlderThanSeconds"))}
        if path == "/_sim/leaf/rotate" and method == "POST":
            leaf = st.rotate_leaf(data["Service"])
            return 200, {"SerialNumber": leaf["SerialNumber"], "ModifyIndex": leaf["ModifyIndex"]}
        if path == "/_sim/cert" and method == "POST":
            return 200, st.test_cert(data)
        if path == "/_sim/health" and method == "PUT":
            st.set_service_health(data["ServiceID"], data["Status"])
            return 200, {}
        if path == "/_sim/fault":
            if method == "PUT":
                self.sim.add_fault(data)
                return 200, {}
            if method == "DELETE":
                self.sim.clear_faults()
                return 200, {}
            if method == "GET":
                return 200, self.sim.list_faults()
        if path == "/_sim/outage":
            if method == "PUT":
                self.outage(float(data.get("Seconds", 0)))
                return 200, {}
            if method == "DELETE":
                self.end_outage()
                return 200, {}
        if path == "/_sim/acl/token" and method == "POST":
            rules = data.get("Rules") or {}
            err = acl.validate_rules(rules)
            if err:
                raise APIError(400, err)
            return 200, {"SecretID": st.add_token(data.get("SecretID"), rules)}
        if path == "/_sim/requests":
            if method == "GET":
                prefix = (query.get("path") or [""])[0]
                return 200, self.sim.requests_seen(prefix)
            if method == "DELETE":
                self.sim.clear_requests()
                return 200, {}
        if path == "/_sim/state" and method == "GET":
            out = st.dump()
            out["Listeners"] = {k: {"open": l.is_open, "port": l.port} for k, l in self.sim.listeners.items()}
            out["Faults"] = self.sim.list_faults()
            out["InFlight"] = self.sim.in_flight
            return 200, out
        if path.startswith("/_sim/proxy/") and method == "GET":
            pid = path[len("/_sim/proxy/"):]
            with st.cond:
                m = st.managed.get(pid)
                if m is None:
                    raise APIError(404, "unknown managed proxy %s" % pid)
                out = {"ProxyToken": m["ProxyToken"], "Env": self.sim.proxy_env(pid),
                       "Command": m["Command"] or st.default_proxy_command(), "ExecMode": m["ExecMode"]}
            if self.sim.supervisor is not None:
                out["Process"] = self.sim.supervisor.status().get(pid)
            return 200, out
        if path == "/_sim/index" and method == "GET":
            with st.cond:
                return 200, dict(st.idx, Index=st.index)
        raise APIError(404, "no such control endpoint: %s %s" % (method, path))

    def outage(self, seconds):
        with self.outage_lock:
            if self.outage_timer is not None:
                self.outage_timer.cancel()
                self.outage_timer = None
            self.sim.close_listeners()
            if seconds > 0:
                self.outage_timer = threading.Timer(seconds, self.end_outage)
                self.outage_timer.daemon = True
                self.outage_timer.start()

    def end_outage(self):
        with self.outage_lock:
            if self.outage_timer is not None:
                self.outage_timer.cancel()
                self.outage_timer = None
            self.sim.open_listeners()


def _out(status, obj):
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def now():
    return time.time()
