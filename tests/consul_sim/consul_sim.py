#!/usr/bin/python3
"""A Consul agent simulator for haproxy-connect's tests: the agent HTTP API as Consul 1.2-1.5 serves it to a
Connect proxy, plus a test-control API (/_sim/...). See tests/sim/ for what it is held to."""
import argparse
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import api  # noqa: E402
import blocking  # noqa: E402
import checks  # noqa: E402
import control  # noqa: E402
import server  # noqa: E402
from errors import APIError  # noqa: E402
from state import State  # noqa: E402

LOG_LEVELS = {"trace": 0, "debug": 1, "info": 2, "warn": 3, "err": 4}
MAX_REQUESTS_LOGGED = 200000


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--http-addr", default="127.0.0.1:8500")
    p.add_argument("--https-addr")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--tls-ca")
    p.add_argument("--tls-verify-incoming", action="store_true")
    p.add_argument("--tls-verify-outgoing", action="store_true",
                   help="what managed proxies get in CONSUL_HTTP_SSL_VERIFY (Consul's verify_outgoing)")
    p.add_argument("--unix-socket")
    p.add_argument("--control-addr", default="127.0.0.1:0")
    p.add_argument("--port-file")
    p.add_argument("--datacenter", default="dc1")
    p.add_argument("--node-name", default=socket.gethostname() or "sim-node")
    p.add_argument("--node-address", default="127.0.0.1")
    p.add_argument("--bind-addr", default=None, help="the agent's bind_addr (managed proxy bind_address default)")
    p.add_argument("--consul-version", default="1.4.4")
    p.add_argument("--acl-master-token")
    p.add_argument("--acl-default-policy", choices=["allow", "deny"])
    p.add_argument("--leaf-cert-ttl", default="72h")
    p.add_argument("--state-file")
    p.add_argument("--config-file", action="append", default=[])
    p.add_argument("--data-dir")
    p.add_argument("--launch-managed", action="store_true")
    p.add_argument("--no-managed-api-registration", dest="managed_api_registration", action="store_false",
                   help="refuse managed proxies in PUT /v1/agent/service/register (Consul's default; the "
                        "simulator defaults to connect.proxy.allow_managed_api_registration = true)")
    p.add_argument("--log-level", default="info", choices=sorted(LOG_LEVELS))
    o = p.parse_args(argv)
    try:
        o.leaf_cert_ttl_seconds = blocking.parse_duration(o.leaf_cert_ttl)
    except ValueError:
        p.error("bad --leaf-cert-ttl %r" % o.leaf_cert_ttl)
    if o.bind_addr is None:
        o.bind_addr = o.node_address
    if o.launch_managed and not o.data_dir:
        p.error("--launch-managed needs --data-dir")
    if o.https_addr and not (o.tls_cert and o.tls_key):
        p.error("--https-addr needs --tls-cert and --tls-key")
    return o


class Sim:
    def __init__(self, opts):
        self.opts = opts
        self.state = State(opts)
        self.api = api.AgentAPI(self.state)
        self.control = control.Control(self)
        self.faults = []
        self.fault_lock = threading.Lock()
        self.requests = []
        self.req_lock = threading.Lock()
        self.in_flight = 0
        self.listeners = {}
        self.supervisor = None
        self.log_level = LOG_LEVELS[opts.log_level]

    def log(self, level, msg):
        if LOG_LEVELS[level] >= self.log_level:
            sys.stderr.write("%s [%s] consul-sim: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), level.upper(), msg))
            sys.stderr.flush()

    # ------------------------------------------------------------------ agent request path
    def agent_app(self, method, path, query, raw_query, headers, body, gen):
        with self.req_lock:
            self.in_flight += 1
        try:
            return self._agent_app(method, path, query, raw_query, headers, body, gen)
        finally:
            with self.req_lock:
                self.in_flight -= 1

    def _agent_app(self, method, path, query, raw_query, headers, body, gen):
        req = api.Request(method, path, query, headers, body, gen)
        self.record(req, raw_query)
        fault = self.take_fault(path)
        if fault is not None:
            if fault.get("LatencyMs"):
                time.sleep(fault["LatencyMs"] / 1000.0)
            if gen.cut:
                return None, None, None
            if fault.get("Status"):
                self.log("debug", "request %s %s -> injected %d" % (method, path, fault["Status"]))
                h = {"Content-Type": "text/plain; charset=utf-8"}
                h.update(fault.get("Headers") or {})
                return fault["Status"], h, (fault.get("Body") or "").encode()
        try:
            resp = self.api.handle(req)
        except APIError as e:
            resp = api.Response(e.status, text=e.text, headers=e.headers)
        except Exception as e:  # noqa: BLE001 - an internal error fails one request, as Consul's 500
            self.log("err", "request %s %s failed: %r" % (method, path, e))
            resp = api.Response(500, text=str(e))
        if gen.cut:
            return None, None, None
        if fault is not None and fault.get("Headers"):
            resp.headers.update(fault["Headers"])       # e.g. an X-Consul-Index going backwards
        self.log("debug", "request %s %s%s -> %d" % (method, path, "?" + raw_query if raw_query else "",
                                                     resp.status))
        return resp.status, resp.headers, resp.data

    def record(self, req, raw_query):
        entry = {"Method": req.method, "Path": req.path, "Query": raw_query, "Token": req.raw_token(),
                 "Time": time.time()}
        with self.req_lock:
            self.requests.append(entry)
            if len(self.requests) > MAX_REQUESTS_LOGGED:
                del self.requests[:len(self.requests) // 2]

    def requests_seen(self, prefix):
        with self.req_lock:
            return [r for r in self.requests if r["Path"].startswith(prefix)]

    def clear_requests(self):
        with self.req_lock:
            self.requests = []

    def add_fault(self, f):
        headers = f.get("Headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise APIError(400, "Headers must map names to strings")
        f = {"Path": f.get("Path", ""), "LatencyMs": int(f.get("LatencyMs") or 0), "Status": f.get("Status"),
             "Body": f.get("Body", ""), "Count": f.get("Count"), "Headers": headers}
        with self.fault_lock:
            self.faults.append(f)

    def clear_faults(self):
        with self.fault_lock:
            self.faults = []

    def list_faults(self):
        with self.fault_lock:
            return [dict(f) for f in self.faults]

    def take_fault(self, path):
        with self.fault_lock:
            for f in self.faults:
                if path.startswith(f["Path"]):
                    if f["Count"] is not None:
                        f["Count"] -= 1
                        if f["Count"] <= 0:
                            self.faults.remove(f)
                    return dict(f)
        return None

    # ------------------------------------------------------------------ listeners
    def wake_all(self):
        with self.state.cond:
            self.state.cond.notify_all()

    def setup_listeners(self):
        o = self.opts
        self.listeners["http"] = server.Listener("http", server.split_addr(o.http_addr), self.agent_app,
                                                 notify=self.wake_all, gzip_responses=True)
        if o.https_addr:
            ctx = server.make_server_ssl(o.tls_cert, o.tls_key, o.tls_ca, o.tls_verify_incoming)
            self.listeners["https"] = server.Listener("https", server.split_addr(o.https_addr), self.agent_app,
                                                      ssl_ctx=ctx, notify=self.wake_all, gzip_responses=True)
        if o.unix_socket:
            self.listeners["unix"] = server.Listener("unix", o.unix_socket, self.agent_app, notify=self.wake_all,
                                                     gzip_responses=True)
        self.control_listener = server.Listener("http", server.split_addr(o.control_addr), self.control.app)
        self.control_listener.open()
        self.open_listeners()

    def open_listeners(self):
        for l in self.listeners.values():
            l.open()
        self.log("info", "agent listeners open")

    def close_listeners(self):
        for l in self.listeners.values():
            l.close()
        self.log("info", "agent listeners closed (outage)")

    def write_port_file(self):
        path = self.opts.port_file
        if not path:
            return
        https = self.listeners.get("https")
        data = {"http": self.listeners["http"].port, "https": https.port if https else None,
                "control": self.control_listener.port}
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".ports.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.rename(tmp, path)

    # ------------------------------------------------------------------ managed proxies
    def proxy_env(self, proxy_id):
        """The environment Consul gives a managed proxy (api.Config.GenerateEnv, then the proxy's id and token)."""
        o = self.opts
        st = self.state
        m = st.managed[proxy_id]
        https = self.listeners.get("https")
        env = {}
        if https is not None:
            env["CONSUL_HTTP_ADDR"] = "%s:%d" % (_client_host(https.addr[0]), https.port)
        elif self.listeners.get("http") is not None:
            h = self.listeners["http"]
            env["CONSUL_HTTP_ADDR"] = "%s:%d" % (_client_host(h.addr[0]), h.port)
        else:
            env["CONSUL_HTTP_ADDR"] = "unix://" + o.unix_socket
        env["CONSUL_HTTP_TOKEN"] = ""
        env["CONSUL_HTTP_SSL"] = "true" if https is not None else "false"
        env["CONSUL_CACERT"] = (o.tls_ca or "") if https is not None else ""
        env["CONSUL_CAPATH"] = ""
        env["CONSUL_CLIENT_CERT"] = (o.tls_cert or "") if https is not None else ""
        env["CONSUL_CLIENT_KEY"] = (o.tls_key or "") if https is not None else ""
        env["CONSUL_TLS_SERVER_NAME"] = ""
        env["CONSUL_HTTP_SSL_VERIFY"] = "true" if o.tls_verify_outgoing else "false"
        env["CONNECT_PROXY_ID"] = proxy_id
        env["CONNECT_PROXY_TOKEN"] = m["ProxyToken"]
        return env

    # ------------------------------------------------------------------ start/stop
    def load_config_files(self):
        for path in self.opts.config_file:
            with open(path) as f:
                cfg = json.load(f)
            defs = []
            if cfg.get("service") is not None:
                defs.append(cfg["service"])
            defs.extend(cfg.get("services") or [])
            for d in defs:
                self.state.register_service(d, d.get("token", "") if isinstance(d, dict) else "", None,
                                            from_config=True)

    def run(self):
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.load_config_files()
        self.setup_listeners()
        self.checker = checks.Checker(self.state, self.log)
        self.checker.start()
        if self.opts.launch_managed:
            import managed
            self.supervisor = managed.Supervisor(self)
            self.supervisor.start()
        self.write_port_file()
        self.log("info", "consul simulator %s ready: http=%s control=%s trust domain %s" % (
            self.opts.consul_version, self.listeners["http"].port, self.control_listener.port,
            self.state.ca["TrustDomain"]))
        while not stop.wait(0.5):
            pass
        self.log("info", "stopping")
        if self.supervisor is not None:
            self.supervisor.stop()
        self.checker.stop()
        with self.state.cond:
            self.state.stopping = True
        self.close_listeners()
        self.control_listener.close()
        return 0


def _client_host(host):
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def main(argv):
    opts = parse_args(argv)
    return Sim(opts).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
