#!/usr/bin/python3
"""make demo: a two-service Connect mesh on loopback, as Consul's Connect docs describe it.

- the bundled dev agent (tests/consul_sim, a Consul agent simulator) with managed proxies enabled;
- `redis` (a real redis-server when installed, else a tiny PING/PONG server) with a managed proxy and an
  empty proxy config;
- `web` with a managed proxy and an upstream `redis` on local port 1234.

It then shows a request from web's side through 127.0.0.1:1234, a deny intention taking effect, the intention
removed, and a CA rotation under traffic. Everything it started is stopped at the end, also on Ctrl-C.
"""
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests"))

import harness  # noqa: E402

BIN = os.environ.get("HC_BIN_DIR", os.path.join(TOP, "build"))
WORK = os.path.join(TOP, "build", "demo")


def say(msg=""):
    print(msg, flush=True)


def step(msg):
    say("\n==> " + msg)


def ping(port, timeout=3.0):
    """One request from web's side: PING through the upstream listener. Returns the answer or an error text."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            data = s.recv(64)
            if not data:
                return "connection closed by the proxy (refused)"
            return data.decode(errors="replace").strip()
    except OSError as e:
        return "error: %s" % e


class PongServer(threading.Thread):
    """Stand-in for redis when redis-server is not installed: answers +PONG to PING lines."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def serve(c):
        with c:
            buf = b""
            while True:
                try:
                    d = c.recv(4096)
                except OSError:
                    return
                if not d:
                    return
                buf += d
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip().upper() == b"PING":
                        c.sendall(b"+PONG\r\n")


def pick_port(preferred):
    if not harness.port_open(preferred):
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            pass
    port = harness.free_port()
    say("    (port %d is in use here, so web's upstream listens on %d instead)" % (preferred, port))
    return port


def main():
    for b in ("connect-certsync", "connect-spoa"):
        if not os.access(os.path.join(BIN, b), os.X_OK):
            say("build first: make  (missing %s)" % os.path.join(BIN, b))
            return 1
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK, mode=0o700)
    procs = harness.ProcGroup(WORK)
    stopping = {"flag": False}

    def on_signal(signum, frame):
        stopping["flag"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return run(procs)
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    finally:
        step("stopping everything the demo started")
        procs.close()
        say("    done. Logs are in %s" % WORK)


def run(procs):
    redis_port = harness.free_port()
    web_port = harness.free_port()
    upstream_port = pick_port(1234)

    step("starting redis on 127.0.0.1:%d" % redis_port)
    if shutil.which("redis-server"):
        procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"])
        harness.wait_until(lambda: harness.port_open(redis_port), 10, what="redis-server")
        say("    a real redis-server from Debian")
    else:
        PongServer(redis_port).start()
        say("    redis-server is not installed: a small PING/PONG server stands in")

    certsync = os.path.join(BIN, "connect-certsync")
    defs = {
        "services": [
            {"name": "redis", "port": redis_port,
             "connect": {"proxy": {"command": [certsync, "-data-dir", os.path.join(WORK, "redis-proxy"),
                                               "-log-level", "debug"]}}},
            {"name": "web", "port": web_port,
             "connect": {"proxy": {"command": [certsync, "-data-dir", os.path.join(WORK, "web-proxy")],
                                   "config": {"upstreams": [{"destination_name": "redis",
                                                             "local_bind_port": upstream_port}]}}}},
        ]
    }
    cfg_file = os.path.join(WORK, "services.json")
    with open(cfg_file, "w") as f:
        json.dump(defs, f, indent=2)

    step("starting the dev agent (Consul agent simulator) with managed proxies")
    sim = harness.start_sim(procs, WORK, ["--config-file", cfg_file, "--launch-managed",
                                          "--data-dir", os.path.join(WORK, "agent")])
    say("    agent HTTP API on %s; it launches connect-certsync for redis-proxy and web-proxy," % sim.http_addr)
    say("    and each connect-certsync starts its own HAProxy and connect-spoa")
    say("    service definitions: %s" % cfg_file)

    step("waiting for web's upstream listener 127.0.0.1:%d to reach redis over mutual TLS" % upstream_port)
    answer = harness.wait_until(lambda: ping(upstream_port) == "+PONG" and "+PONG", 60,
                                what="the mesh to come up")
    say("    web -> 127.0.0.1:%d -> mTLS -> redis-proxy -> redis: PING answered %s" % (upstream_port, answer))

    step("creating the intention web => redis: deny")
    status, _, body = sim.api("POST", "/v1/connect/intentions",
                              {"SourceName": "web", "DestinationName": "redis", "Action": "deny"})
    if status != 200:
        say("    could not create the intention: %d %s" % (status, body))
        return 1
    intention_id = body["ID"]
    result = harness.wait_until(lambda: (lambda r: r != "+PONG" and r)(ping(upstream_port)), 10,
                                what="the deny to take effect")
    say("    next connection: %s" % result)
    log = os.path.join(WORK, "agent", "proxy", "logs", "redis-proxy-stderr.log")
    reason = find_line(log, "deny")
    if reason:
        say("    connect-spoa says: %s" % reason)

    step("removing the intention")
    sim.api("DELETE", "/v1/connect/intentions/" + intention_id)
    result = harness.wait_until(lambda: ping(upstream_port) == "+PONG" and "+PONG", 10,
                                what="traffic to come back")
    say("    next connection: %s" % result)

    step("rotating the CA while web keeps calling redis")
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            if ping(upstream_port) == "+PONG":
                counts["ok"] += 1
            else:
                counts["failed"] += 1
            time.sleep(0.01)

    t = threading.Thread(target=traffic, daemon=True)
    t.start()
    time.sleep(1)
    new_root = sim.control("POST", "/_sim/ca/rotate")
    say("    new active root: %s" % new_root.get("ActiveRootID"))
    time.sleep(5)
    stop.set()
    t.join()
    say("    %d requests during the rotation, %d failed" % (counts["ok"] + counts["failed"], counts["failed"]))
    say("\nThe mesh worked as Consul's Connect docs describe. Press Ctrl-C to stop now, or wait 3 s.")
    time.sleep(3)
    return 0 if counts["failed"] == 0 else 1


def find_line(path, word):
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if word in ln.lower() and "web" in ln]
    except OSError:
        return None
    return lines[-1] if lines else None


if __name__ == "__main__":
    sys.exit(main())
