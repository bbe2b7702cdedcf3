"""Helpers for connect-certsync end-to-end tests: two Connect proxies (web -> redis) run by two
connect-certsync daemons against the Consul agent simulator, with real HAProxy and connect-spoa.

A caller talks plain TCP to web's upstream listener (127.0.0.1:<local bind port>); web's HAProxy dials
redis's proxy with mutual TLS (verifyhost redis); redis's proxy asks connect-spoa (intentions) and
forwards to an echo server standing in for redis. `call(port)` returns the echoed bytes or None.
"""
import os
import shutil
import socket
import tempfile
import threading
import time

import pytest

import harness
import spoa_support

CERTSYNC = "connect-certsync"


@pytest.fixture
def ddir():
    """A factory of short data dirs (unix socket paths must stay short); removed at teardown."""
    made = []

    def make(name):
        d = tempfile.mkdtemp(prefix="hc-%s-" % name, dir="/tmp")
        made.append(d)
        return d
    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def register(sim, body):
    st, _, out = sim.api("PUT", "/v1/agent/service/register", body)
    assert st == 200, (st, out)


def deregister(sim, sid):
    st, _, out = sim.api("PUT", "/v1/agent/service/deregister/%s" % sid)
    assert st == 200, (st, out)


def passing(sim, sid, status="passing"):
    sim.control("PUT", "/_sim/health", {"ServiceID": sid, "Status": status})


def start_certsync(procs, sim, data_dir, args, name=CERTSYNC, env=None, log_level="debug"):
    argv = [harness.bin_path("connect-certsync"), "-http-addr", sim.http_addr, "-data-dir", data_dir,
            "-log-level", log_level, "-spoa-bin", harness.bin_path("connect-spoa"),
            "-haproxy-bin", spoa_support.HAPROXY, "-nbthread", "1"] + list(args)
    if os.environ.get("HC_TEMPLATE_DIR"):
        argv += ["-template-dir", os.environ["HC_TEMPLATE_DIR"]]
    e = {"CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_ADDR": "", "CONNECT_PROXY_ID": "", "CONSUL_PROXY_ID": ""}
    e.update(env or {})
    return procs.start(name, argv, env=e)


def call(port, payload=b"ping\n", timeout=5.0):
    """One plain TCP connection to an upstream listener: the bytes echoed back, or None."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            return spoa_support.echo(s, payload)
    except OSError:
        return None


def stats(data_dir, cmd):
    return spoa_support.stats_cmd(os.path.join(data_dir, "haproxy.sock"), cmd)


def master(data_dir, cmd):
    """One command on the master CLI (it keeps the connection open: "; quit" closes it). A reloading
    master re-executes itself and refuses connections for a moment, while its new worker may already
    serve (the rendered servers need no runtime call): retried for a few seconds."""
    path = os.path.join(data_dir, "master.sock")
    deadline = time.monotonic() + 5
    while True:
        try:
            return spoa_support.stats_cmd(path, cmd + "; quit")
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def worker_pids(data_dir):
    """Worker pids listed by the master's `show proc` (current first)."""
    pids = []
    section = None
    for line in master(data_dir, "show proc").splitlines():
        if line.startswith("#"):
            section = line
            continue
        f = line.split()
        if f and section and "workers" in section and f[0].isdigit():
            pids.append(int(f[0]))
    return pids


def reloads(data_dir):
    """The master's reload count (`show proc`: the master line's 'reloads' column)."""
    for line in master(data_dir, "show proc").splitlines():
        f = line.split()
        if len(f) >= 4 and f[1] == "master":
            return int(f[2])
    return None


def served_serial(data_dir, name="leaf.pem"):
    for line in stats(data_dir, "show ssl cert %s" % os.path.join(data_dir, name)).splitlines():
        if line.startswith("Serial:"):
            return line.split(":", 1)[1].strip()
    return None


def server_slots(data_dir):
    """{backend: [(name, addr, port, admin_state)]} from `show servers state`."""
    out = {}
    for line in stats(data_dir, "show servers state").splitlines():
        f = line.split()
        if len(f) < 20 or not f[0].isdigit():
            continue
        out.setdefault(f[1], []).append((f[3], f[4], int(f[18]), int(f[6])))
    return out


def ready_servers(data_dir):
    """Set of 'addr:port' of upstream servers not in maintenance. A server-template slot made ready keeps
    its configured-maintenance bit 0x04 (it is UP): forced/inherited/resolution maintenance is 0x23."""
    res = set()
    for be, slots in server_slots(data_dir).items():
        for name, addr, port, admin in slots:
            if name.startswith("slot") and not (admin & 0x23):
                res.add("%s:%d" % (addr, port))
    return res


class Mesh:
    """web (upstream redis on a local port) -> redis -> echo, both proxies run by connect-certsync."""

    def __init__(self, procs, sim, ddir, redis_args=None, web_args=None, upstream_extra=None,
                 start=True):
        self.procs, self.sim = procs, sim
        self.echo = spoa_support.start_echo(procs)
        self.redis_port = harness.free_port()
        self.web_port = harness.free_port()
        self.local = harness.free_port()
        self.redis_dir = ddir("redis")
        self.web_dir = ddir("web")
        up = {"DestinationName": "redis", "LocalBindPort": self.local}
        up.update(upstream_extra or {})
        register(sim, {"Name": "redis", "Port": self.echo,
                       "Connect": {"SidecarService": {"Port": self.redis_port}}})
        register(sim, {"Name": "web", "Port": harness.free_port(),
                       "Connect": {"SidecarService": {"Port": self.web_port, "Proxy": {"Upstreams": [up]}}}})
        passing(sim, "redis-sidecar-proxy")
        passing(sim, "web-sidecar-proxy")
        self.redis = self.web = None
        if start:
            self.redis = start_certsync(procs, sim, self.redis_dir,
                                        redis_args or ["-sidecar-for", "redis"], name="certsync-redis")
            self.web = start_certsync(procs, sim, self.web_dir,
                                      web_args or ["-sidecar-for", "web"], name="certsync-web")

    def wait_flowing(self, timeout=30):
        harness.wait_until(lambda: call(self.local) == b"ping\n", timeout, what="traffic web -> redis")


class Traffic:
    """New connections in a loop through one port (and one long-lived one), counting failures."""

    def __init__(self, port, long_lived=True):
        self.port = port
        self.ok = 0
        self.failed = []
        self.stop_ev = threading.Event()
        self.long = None
        if long_lived:
            self.long = socket.create_connection(("127.0.0.1", port), timeout=10)
            self._ping_long()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _ping_long(self):
        self.long.sendall(b"long\n")
        got = b""
        while len(got) < 5:
            chunk = self.long.recv(100)
            if not chunk:
                raise AssertionError("long-lived connection closed")
            got += chunk
        assert got == b"long\n", got

    def _run(self):
        i = 0
        while not self.stop_ev.is_set():
            payload = b"n%d\n" % i
            got = call(self.port, payload)
            if got == payload:
                self.ok += 1
            else:
                self.failed.append((i, time.time(), got))
            i += 1
            time.sleep(0.01)

    def stop(self):
        self.stop_ev.set()
        self.t.join(30)
        if self.long is not None:
            self._ping_long()
            self.long.close()
        return self.ok, self.failed
