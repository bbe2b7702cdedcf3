"""`make bench`: the haproxy-connect benchmarks, all on loopback, in one bounded run, one table.

    HC_BIN_DIR=$PWD/build /usr/bin/python3 bench/mesh_bench.py [--quick] [--no-levers] [--json FILE]

What runs (bench/README.md explains each row and how to repeat it):
  - the Consul agent simulator (tests/consul_sim) with four services: redis (its "app" is an iperf3
    server), api and api-open (both front the same small HTTP app, bench/http_app.py), and web, whose
    sidecar has upstreams to all three;
  - one connect-certsync per sidecar proxy (each runs its own HAProxy 2.6 and connect-spoa), the real
    control plane and data plane. api-open's connect-certsync renders a copy of haproxy-templates/ with the
    SPOE filter and its tcp-request/http-request rules removed: the same proxy with the intentions check OFF;
  - iperf3 (bulk), wrk with `Connection: close` (new connections), rotations on the simulator's control
    API during load, bench/spop-load against connect-spoa alone (when that tool is built), and the
    levers of /work/shared/docs/performance.md applied as template variants through SIGHUP (a checked
    seamless reload), each measured against the shipped template in alternation.

Every process it starts is stopped at the end, on failure, on Ctrl-C and on SIGTERM; each also gets
PR_SET_PDEATHSIG so nothing outlives a killed driver. Figures vary by +-30% between runs on a shared
machine: the table puts figures that are compared side by side, measured in alternation in this run.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TOP, "tests"))
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))

import harness  # noqa: E402
from spoa_support import stats_cmd  # noqa: E402

HAPROXY = os.environ.get("HC_HAPROXY", "/usr/sbin/haproxy")
TEMPLATES = os.path.join(TOP, "haproxy-templates")
CONSUL_CLAIM_GBPS = 5.0
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child before exec: SIGTERM when the driver dies, however it dies (PR_SET_PDEATHSIG)."""
    _libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


class Group(harness.ProcGroup):
    """harness.ProcGroup whose children also die with the driver."""

    def start(self, name, argv, env=None, cwd=None):
        log_path = os.path.join(self.workdir, "%s.log" % name)
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=full_env, cwd=cwd or self.workdir, start_new_session=True,
                                 preexec_fn=_die_with_parent)
        proc = harness.Proc(name, p, log_path)
        self.procs.append(proc)
        return proc


def run_client(argv, timeout):
    """Runs a load client (wrk, iperf3) to completion; returns (exit code, stdout, stderr)."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         preexec_fn=_die_with_parent)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.wait()
        raise
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---------------------------------------------------------------- load clients and their output

def iperf(port, streams, secs, rate=None):
    """iperf3 client to 127.0.0.1:port: {"gbps", "retransmits"} or {"error"}."""
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-O", "1", "-P", str(streams), "-J"]
    if rate:
        argv += ["-b", rate]
    for attempt in range(3):
        rc, out, err = run_client(argv, secs + 30)
        try:
            res = json.loads(out)
        except ValueError:
            res = {"error": (out + err).strip()[-300:] or "no output, exit %d" % rc}
        if "error" in res and "busy" in res["error"] and attempt < 2:
            time.sleep(1.5)
            continue
        break
    if "error" in res:
        return {"error": res["error"]}
    rx = res["end"]["sum_received"]
    # every interval's bytes, the omitted first second included: what the CPU time was spent on
    sent = sum(iv["sum"]["bytes"] for iv in res.get("intervals", []))
    return {"gbps": rx["bits_per_second"] / 1e9, "bytes": rx["bytes"], "all_bytes": sent or rx["bytes"]}


def mesh_iperf(mesh, streams, secs):
    """iperf3 through web -> redis, with the CPU seconds per GB both proxies used."""
    r, cpu = with_cpu([mesh.proxies["web"], mesh.proxies["redis"]],
                      lambda: iperf(mesh.local["redis"], streams, secs))
    if r.get("all_bytes"):
        r["cpu_s_per_gb"] = cpu / (r["all_bytes"] / 1e9)
    return r


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


def parse_wrk(out):
    """wrk --latency output: requests, rate, p50/p99 (ms), socket errors and non-2xx responses."""
    r = {"requests": 0, "rate": 0.0, "p50": None, "p99": None, "errors": 0, "non2xx": 0}
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rate"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, out, re.M)
        if m:
            r[key] = _ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] = sum(int(x) for x in m.groups())
        r["error_detail"] = m.group(0)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


def wrk_argv(port, secs, conns):
    return ["wrk", "-t", "2", "-c", str(conns), "-d", "%ds" % secs, "--latency", "-H", "Connection: close",
            "http://127.0.0.1:%d/" % port]


def wrk(port, secs, conns):
    rc, out, err = run_client(wrk_argv(port, secs, conns), secs + 30)
    r = parse_wrk(out)
    if rc != 0 or r["requests"] == 0:
        r["error"] = (out + err).strip()[-300:]
    return r


def wrk_cpu(mesh, secs, conns):
    """wrk through web -> api (check ON), with the CPU microseconds per connection of both proxies."""
    r, cpu = with_cpu([mesh.proxies["web"], mesh.proxies["api"]], lambda: wrk(mesh.local["api"], secs, conns))
    if r["requests"]:
        r["cpu_us"] = cpu * 1e6 / r["requests"]
    return r


def http_get(port, timeout=5.0):
    """One GET through a port: the status line, or None when the connection closed without an answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            got = b""
            while b"\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got.split(b"\r\n")[0].decode() if got else None
    except OSError:
        return None


def tree_cpu(pids):
    """{pid: CPU seconds (user + system)} of processes and all their live descendants."""
    out, stack, tick = {}, list(pids), os.sysconf("SC_CLK_TCK")
    while stack:
        p = stack.pop()
        try:
            stat = read("/proc/%d/stat" % p)
            f = stat[stat.rindex(")") + 2:].split()
            out[p] = (int(f[11]) + int(f[12])) / tick
            for t in os.listdir("/proc/%d/task" % p):
                stack += [int(c) for c in read("/proc/%d/task/%s/children" % (p, t)).split()]
        except (OSError, ValueError):
            continue
    return out


def cpu_delta(before, after):
    """CPU seconds used between two tree_cpu() snapshots by the processes alive at the end (a worker that
    exited meanwhile, e.g. an old one after a reload, must not subtract its whole life)."""
    return sum(v - before.get(p, 0.0) for p, v in after.items())


def comm(pid):
    try:
        return read("/proc/%d/comm" % pid).strip()
    except OSError:
        return ""


def with_cpu(pxs, fn):
    """Runs fn() and returns (its result, CPU seconds the proxies' process trees used meanwhile)."""
    pids = [px.proc.pid for px in pxs]
    c0 = tree_cpu(pids)
    r = fn()
    return r, cpu_delta(c0, tree_cpu(pids))


# ---------------------------------------------------------------- templates

def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def strip_intentions(cfg_tmpl):
    """The shipped haproxy.cfg template without the SPOE filter and the rules reading its answer."""
    out, dropped = [], 0
    for line in cfg_tmpl.splitlines(True):
        s = line.strip()
        if (s.startswith("filter spoe ") or "var(txn.connect.err)" in s or "var(sess.connect.auth)" in s):
            dropped += 1
            continue
        out.append(line)
    if dropped < 3:
        raise RuntimeError("haproxy.cfg.tmpl changed: found %d of the intentions lines to strip" % dropped)
    return "".join(out)


def _edit(text, old, new):
    if old not in text:
        raise RuntimeError("template anchor not found: %r" % old)
    return text.replace(old, new)


# A lever: which proxies get the variant, the edit of the template, and a line the rendered config shows.
LEVERS = {
    "bufsize": {
        # the shipped template adopted tune.bufsize 65536 (bench/README.md); the variant is HAProxy's default
        "what": "tune.bufsize 16384 (HAProxy's default) instead of the shipped 65536, both proxies",
        "proxies": ("web", "redis"),
        "edit": lambda t: _edit(t, "    tune.bufsize 65536\n", "    tune.bufsize 16384\n"),
        "marker": "tune.bufsize 16384",
    },
    "aes256": {
        "what": "TLS 1.3 AES-256-GCM preferred (HAProxy's default), both proxies",
        "proxies": ("web", "redis"),
        "edit": lambda t: _edit(t, "ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:",
                                "ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:"),
        "marker": "ciphersuites TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:",
    },
    "tls12": {
        "what": "ssl-max-ver TLSv1.2 on web's server lines (abbreviated TLS 1.2 resumption)",
        "proxies": ("web",),
        "edit": lambda t: _edit(t, "ssl-default-server-options ssl-min-ver TLSv1.2\n",
                                "ssl-default-server-options ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.2\n"),
        "marker": "ssl-max-ver TLSv1.2",
    },
    "noreuse": {
        "what": "no-ssl-reuse on web's server lines (every connection a full handshake)",
        "proxies": ("web",),
        "edit": lambda t: _edit(t, "verifyhost {{u.server_identity}}\n", "verifyhost {{u.server_identity}} no-ssl-reuse\n"),
        "marker": "no-ssl-reuse",
    },
    "quietlog": {
        "what": "HAProxy log level warning on web and api (no line per connection)",
        "proxies": ("web", "api"),
        "edit": lambda t: _edit(t, "    log stderr format raw local0 {{log_level}}\n", "    log stderr format raw local0 warning\n"),
        "marker": "local0 warning",
    },
}


# ---------------------------------------------------------------- the mesh

class Proxy:
    def __init__(self, service, port, tdir, ddir):
        self.service, self.port, self.tdir, self.ddir = service, port, tdir, ddir
        self.proc = None

    @property
    def cfg(self):
        return os.path.join(self.ddir, "haproxy.cfg")

    def runtime(self, cmd):
        return stats_cmd(os.path.join(self.ddir, "haproxy.sock"), cmd)

    def master(self, cmd):
        return stats_cmd(os.path.join(self.ddir, "master.sock"), cmd + "; quit")

    def served_serial(self):
        out = self.runtime("show ssl cert %s" % os.path.join(self.ddir, "leaf.pem"))
        for line in out.splitlines():
            if line.startswith("Serial:"):
                return norm_serial(line.split(":", 1)[1])
        return None


def norm_serial(s):
    return s.replace(":", "").strip().upper().lstrip("0")


class Mesh:
    """Simulator, apps and four sidecar proxies run by connect-certsync (see the module docstring)."""

    def __init__(self, group, workdir, nbthread):
        self.group, self.workdir, self.nbthread = group, workdir, nbthread
        self.tmp_dirs = []
        self.sim = harness.start_sim(group, workdir)
        self.iperf_port = harness.free_port()
        group.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf_port)])
        self.app_port = harness.free_port()
        group.start("http-app", [harness.PYTHON, os.path.join(HERE, "http_app.py"), str(self.app_port), "2"])
        harness.wait_until(lambda: harness.port_open(self.iperf_port) and harness.port_open(self.app_port),
                           15, what="iperf3 server and http app")
        base = read(os.path.join(TEMPLATES, "haproxy.cfg.tmpl"))
        self.base_tmpl = base
        self.proxies = {}
        for svc, tmpl in (("web", base), ("redis", base), ("api", base), ("api-open", strip_intentions(base))):
            tdir = os.path.join(workdir, "templates-" + svc)
            shutil.copytree(TEMPLATES, tdir)
            write(os.path.join(tdir, "haproxy.cfg.tmpl"), tmpl)
            ddir = tempfile.mkdtemp(prefix="hcb-%s-" % svc, dir="/tmp")
            self.tmp_dirs.append(ddir)
            self.proxies[svc] = Proxy(svc, harness.free_port(), tdir, ddir)
        self.local = {"redis": harness.free_port(), "api": harness.free_port(), "api-open": harness.free_port()}
        p = self.proxies
        self.register({"Name": "redis", "Port": self.iperf_port, "Connect": {"SidecarService": {"Port": p["redis"].port}}})
        for svc in ("api", "api-open"):
            self.register({"Name": svc, "Port": self.app_port, "Connect": {"SidecarService": {"Port": p[svc].port}}})
        ups = [{"DestinationName": d, "LocalBindPort": port} for d, port in self.local.items()]
        self.register({"Name": "web", "Port": harness.free_port(),
                       "Connect": {"SidecarService": {"Port": p["web"].port, "Proxy": {"Upstreams": ups}}}})
        for svc in p:
            self.sim.control("PUT", "/_sim/health", {"ServiceID": "%s-sidecar-proxy" % svc, "Status": "passing"})
        self.iid = self.intention("web", "api", "allow")
        for svc, px in p.items():
            argv = [harness.bin_path("connect-certsync"), "-sidecar-for", svc, "-http-addr", self.sim.http_addr,
                    "-data-dir", px.ddir, "-log-level", "info", "-spoa-bin", harness.bin_path("connect-spoa"),
                    "-haproxy-bin", HAPROXY, "-template-dir", px.tdir]
            if nbthread:
                argv += ["-nbthread", str(nbthread)]
            env = {"CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_ADDR": "", "CONNECT_PROXY_ID": "", "CONSUL_PROXY_ID": ""}
            px.proc = group.start("certsync-" + svc, argv, env=env)

    def register(self, body):
        st, _, out = self.sim.api("PUT", "/v1/agent/service/register", body)
        if st != 200:
            raise RuntimeError("register %s: %s %r" % (body["Name"], st, out))

    def intention(self, src, dst, action):
        st, _, out = self.sim.api("POST", "/v1/connect/intentions",
                                  {"SourceName": src, "DestinationName": dst, "Action": action, "SourceType": "consul"})
        if st != 200:
            raise RuntimeError("intention: %s %r" % (st, out))
        return out["ID"]

    def set_intention(self, iid, src, dst, action):
        st, _, out = self.sim.api("PUT", "/v1/connect/intentions/%s" % iid,
                                  {"SourceName": src, "DestinationName": dst, "Action": action, "SourceType": "consul"})
        if st != 200:
            raise RuntimeError("intention update: %s %r" % (st, out))

    def check_alive(self):
        for px in self.proxies.values():
            if not px.proc.alive():
                raise RuntimeError("connect-certsync for %s exited:\n%s" % (px.service, px.proc.log()[-3000:]))

    def bulk_ok(self):
        r = iperf(self.local["redis"], 1, 1)
        return "gbps" in r and r["gbps"] > 0

    def wait_flowing(self, timeout=60):
        def ready():
            self.check_alive()
            return all(http_get(self.local[s], 3) == "HTTP/1.1 200 OK" for s in ("api", "api-open")) and self.bulk_ok()
        harness.wait_until(ready, timeout, interval=0.5, what="traffic through every upstream")

    def reloads(self, px):
        for line in px.master("show proc").splitlines():
            f = line.split()
            if len(f) >= 4 and f[1] == "master":
                return int(f[2])
        return None

    def set_template(self, svc, text, marker, present):
        """Writes a proxy's haproxy.cfg template, SIGHUPs its connect-certsync and waits until the rendered
        configuration (checked with haproxy -c by certsync) shows the marker (or lost it) and was reloaded."""
        px = self.proxies[svc]
        before = self.reloads(px)
        write(os.path.join(px.tdir, "haproxy.cfg.tmpl"), text)
        px.proc.signal(signal.SIGHUP)
        harness.wait_until(lambda: (marker in read(px.cfg)) == present and self.reloads(px) not in (None, before),
                           30, interval=0.2, what="%s reloaded with the template variant" % svc)
        # a reload's new worker serves once its listeners are back
        time.sleep(0.5)

    def close(self):
        for d in self.tmp_dirs:
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- phases

def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def phase_bulk(mesh, secs, rounds):
    """Row 1: iperf3 1 and 4 streams, direct to the iperf3 server vs through web -> mTLS -> redis -> it."""
    res = {}
    for r in range(rounds):
        order = [("direct", 1), ("mesh", 1), ("direct", 4), ("mesh", 4)]
        if r % 2:
            order.reverse()
        for path, streams in order:
            x = iperf(mesh.iperf_port, streams, secs) if path == "direct" else mesh_iperf(mesh, streams, secs)
            log("bulk %s %d stream(s): %s" % (path, streams, x))
            res.setdefault("%s%d" % (path, streams), []).append(x)
    return res


def phase_conns(mesh, secs, rounds, conns):
    """Row 2: wrk `Connection: close`: direct to the app, through the mesh with the intentions check ON
    (api) and OFF (api-open, same template without the SPOE filter/rules), ON and OFF in alternation.
    Also the CPU time the inbound proxy (connect-certsync's process tree: HAProxy and connect-spoa) spent
    per connection, a figure less sensitive than the rate to the other load on the machine."""
    res = {}
    ports = {"direct": mesh.app_port, "on": mesh.local["api"], "off": mesh.local["api-open"]}
    inbound = {"on": mesh.proxies["api"], "off": mesh.proxies["api-open"]}
    for r in range(rounds):
        order = ["direct", "on", "off"] if r % 2 == 0 else ["off", "on"]
        for key in order:
            px = inbound.get(key)
            pids = [px.proc.pid] if px else []
            c0 = tree_cpu(pids)
            x = wrk(ports[key], secs, conns)
            c1 = tree_cpu(pids)
            if px and x["requests"]:
                x["cpu_us"] = cpu_delta(c0, c1) * 1e6 / x["requests"]
                spoa = {p: v for p, v in c1.items() if comm(p) == "connect-spoa"}
                x["spoa_cpu_us"] = cpu_delta(c0, spoa) * 1e6 / x["requests"]
            log("conns %s: %.0f/s p50 %s ms p99 %s ms errors %d non2xx %d cpu/conn %s us" % (
                key, x["rate"], x["p50"], x["p99"], x["errors"], x["non2xx"], x.get("cpu_us")))
            res.setdefault(key, []).append(x)
    return res


def leaf_serial(mesh, svc):
    st, _, leaf = mesh.sim.api("GET", "/v1/agent/connect/ca/leaf/%s" % svc)
    if st != 200:
        raise RuntimeError("leaf %s: %s" % (svc, st))
    return norm_serial(leaf["SerialNumber"])


def _served_all(mesh, svcs):
    want = {svc: leaf_serial(mesh, svc) for svc in svcs}
    return all(mesh.proxies[svc].served_serial() == want[svc] for svc in svcs)


def phase_rotation(mesh, secs, conns, kind):
    """Row 3: new connections (wrk on api, check ON) and one long iperf3 stream (redis, 200 Mbit/s) while the
    simulator rotates the leaves of web, api and redis (kind "leaf") or the CA (kind "ca"); counts failures
    and how long until every proxy served its new leaf."""
    svcs = ("web", "api", "redis")
    wrk_p = subprocess.Popen(wrk_argv(mesh.local["api"], secs, conns), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    ip_p = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(mesh.local["redis"]), "-t", str(secs),
                             "-b", "200M", "-J"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    res = {"kind": kind}
    try:
        t0 = time.monotonic()
        time.sleep(min(3, secs / 4))
        before = {svc: leaf_serial(mesh, svc) for svc in svcs}
        t_rot = time.monotonic()
        if kind == "leaf":
            for svc in svcs:
                mesh.sim.control("POST", "/_sim/leaf/rotate", {"Service": svc})
        else:
            mesh.sim.control("POST", "/_sim/ca/rotate", {})
        try:
            harness.wait_until(lambda: all(leaf_serial(mesh, s) != before[s] for s in svcs) and _served_all(mesh, svcs),
                               max(5, secs - 2), interval=0.1, what="every proxy serving its new leaf")
            res["applied_s"] = time.monotonic() - t_rot
            res["in_window"] = time.monotonic() - t0 < secs
        except AssertionError as e:
            res["applied_s"] = None
            res["note"] = str(e)
        out, _ = wrk_p.communicate(timeout=secs + 30)
        ipo, _ = ip_p.communicate(timeout=secs + 30)
    except BaseException:
        for p in (wrk_p, ip_p):
            p.kill()
            p.wait()
        raise
    res["wrk"] = parse_wrk(out.decode("utf-8", "replace"))
    try:
        ij = json.loads(ipo.decode("utf-8", "replace"))
    except ValueError:
        ij = {"error": ipo.decode("utf-8", "replace")[-300:]}
    if "error" in ij:
        res["stream"] = {"error": ij["error"]}
    else:
        res["stream"] = {"mbytes": ij["end"]["sum_received"]["bytes"] / 1e6,
                         "mbps": ij["end"]["sum_received"]["bits_per_second"] / 1e6}
    log("rotation %s: %s" % (kind, res))
    return res


def phase_lever(mesh, name, measure):
    """One lever: shipped template (A) and variant (B) measured A B B A (two reloads, linear drift cancels)."""
    lever = LEVERS[name]
    variant = {svc: lever["edit"](mesh.base_tmpl) for svc in lever["proxies"]}
    res = {"what": lever["what"], "base": [], "variant": []}
    switched = []
    try:
        res["base"].append(measure())
        for svc in lever["proxies"]:
            switched.append(svc)
            mesh.set_template(svc, variant[svc], lever["marker"], True)
        res["variant"].append(measure())
        res["variant"].append(measure())
    finally:
        for svc in switched:
            mesh.set_template(svc, mesh.base_tmpl, lever["marker"], False)
    res["base"].append(measure())
    log("lever %s: %s" % (name, res))
    return res


def _spop_result(out):
    """The RESULT line of bench/spop-load as a dict of floats (empty when missing)."""
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return {k: float(v) for k, v in (kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)}
    return {}


def _metric(port, name):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
            text = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                text += chunk
    except OSError:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(name), text.decode("utf-8", "replace"), re.M)
    return float(m.group(1)) if m else None


SPOP_VARIANTS = ("spoa", "spoa_bp", "trivial", "trivial_bp")


def phase_spop(mesh, group, spop_load, secs, rounds=2):
    """Row 4: connect-spoa alone, pinned to CPU 1 (taskset), bench/spop-load pinned to CPU 0, over a unix
    socket (what connect-certsync gives HAProxy): the generator's own ceiling (spop-load -serve -trivial), the
    cached maximum (closed loop; also over TCP), then p50/p99 in open loop at 100,000/s (half the 200,000/s
    target) and at half the measured maximum, for connect-spoa and the trivial responder, each without and
    with -busy-poll 1ms, in alternated rounds; a light load; decisions that go to the agent."""
    if not os.path.exists(spop_load):
        return {"skipped": "%s is not built" % os.path.relpath(spop_load, TOP)}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"skipped": "needs two CPUs (agent and generator pinned apart)"}
    agent_cpu, gen_cpu = str(cpus[1]), str(cpus[0])
    st, _, leaf = mesh.sim.api("GET", "/v1/agent/connect/ca/leaf/web")
    if st != 200:
        return {"skipped": "no leaf for web from the simulator"}
    cert = os.path.join(mesh.workdir, "spop-web.pem")
    write(cert, leaf["CertPEM"])
    res = {"rounds": rounds}

    def load(addr, extra, timeout):
        argv = ["taskset", "-c", gen_cpu, spop_load, "-addr", addr, "-cert", cert, "-target", "api"] + extra
        rc, out, err = run_client(argv, timeout)
        r = _spop_result(out)
        if rc != 0 or not r:
            r["error"] = (out + err).strip()[-200:] or "exit %d" % rc
        return r

    sock = {v: os.path.join(mesh.workdir, "spop-%s.sock" % v) for v in SPOP_VARIANTS}
    addr = {v: "unix:" + sock[v] for v in SPOP_VARIANTS}
    procs = {}
    for v in ("trivial", "trivial_bp"):
        procs[v] = group.start("spop-" + v, ["taskset", "-c", agent_cpu, spop_load, "-serve", addr[v], "-trivial"] +
                               (["-busy-poll", "0.001"] if v.endswith("_bp") else []))
    port = harness.free_port()
    mports = {v: harness.free_port() for v in ("spoa", "spoa_bp", "spoa_tcp")}
    for v in ("spoa", "spoa_bp", "spoa_tcp"):
        argv = ["taskset", "-c", agent_cpu, harness.bin_path("connect-spoa"),
                "-listen", "127.0.0.1:%d" % port if v == "spoa_tcp" else addr[v],
                "-http-addr", mesh.sim.http_addr, "-target", "api", "-log-level", "warn",
                "-metrics-addr", "127.0.0.1:%d" % mports[v]] + (["-busy-poll", "1ms"] if v == "spoa_bp" else [])
        procs[v] = group.start("spoa-alone-" + v.replace("_", "-"), argv,
                               env={"CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_ADDR": ""})
    harness.wait_until(lambda: all(harness.unix_open(sock[v]) for v in SPOP_VARIANTS) and harness.port_open(port)
                       and all(harness.port_open(m) for m in mports.values()), 10,
                       what="connect-spoa and the trivial responders")

    def misses():
        return sum(_metric(m, "connect_spoa_cache_misses_total") or 0 for m in mports.values())

    closed = ["-c", "4", "-k", "32", "-d", str(secs)]
    try:
        for a in (addr["spoa"], addr["spoa_bp"], "127.0.0.1:%d" % port):
            load(a, ["-c", "1", "-k", "1", "-n", "10"], 20)   # first decision fills each cache
        miss0 = misses()
        res["trivial"] = load(addr["trivial"], closed, secs + 20)
        res["cached_max"] = load(addr["spoa"], closed, secs + 20)
        res["cached_max_tcp"] = load("127.0.0.1:%d" % port, closed, secs + 20)
        rates = [100000]
        if res["cached_max"].get("rate"):
            rates.append(int(res["cached_max"]["rate"] / 2))
        res["open"] = {}
        for rate in rates:
            # -tick 0: the pinned generator spins and releases each frame when due (timerfd ticks fire late
            # on this VM and would add their error to every latency figure)
            args = ["-c", "4", "-k", "64", "-d", str(secs), "-rate", str(rate), "-tick", "0"]
            runs = {v: [] for v in SPOP_VARIANTS}
            for rnd in range(rounds):
                for v in (SPOP_VARIANTS if rnd % 2 == 0 else tuple(reversed(SPOP_VARIANTS))):
                    runs[v].append(load(addr[v], args, secs + 20))
            res["open"][str(rate)] = runs
        light = ["-c", "1", "-k", "8", "-d", str(secs), "-rate", "2000", "-tick", "0"]
        res["light"] = {v: load(addr[v], light, secs + 20) for v in ("spoa", "spoa_bp", "trivial")}
        res["misses_during_cached_runs"] = misses() - miss0
        mport = mports["spoa"]
        m0 = _metric(mport, "connect_spoa_cache_misses_total") or 0
        lat = []
        for _ in range(12):
            procs["spoa"].signal(signal.SIGHUP)
            time.sleep(0.15)
            r = load(addr["spoa"], ["-c", "1", "-k", "1", "-n", "1"], 20)
            if "p50_us" in r:
                lat.append(r["p50_us"])
        misses = (_metric(mport, "connect_spoa_cache_misses_total") or 0) - m0
        n = _metric(mport, "connect_spoa_agent_request_duration_seconds_count")
        tot = _metric(mport, "connect_spoa_agent_request_duration_seconds_sum")
        lat.sort()
        res["agent"] = {"samples": len(lat), "misses": misses,
                        "p50_us": lat[len(lat) // 2] if lat else None, "max_us": lat[-1] if lat else None,
                        "agent_mean_us": tot / n * 1e6 if n else None}
    finally:
        for p in procs.values():
            p.stop()
    log("spop: %s" % res)
    return res


def phase_enforced(mesh, iid):
    """Sanity: the ON path really asks connect-spoa: a deny intention closes it, the OFF path still serves."""
    mesh.set_intention(iid, "web", "api", "deny")
    try:
        harness.wait_until(lambda: http_get(mesh.local["api"], 3) is None, 15, interval=0.2,
                           what="the deny intention enforced on the ON path")
        on_denied = True
    except AssertionError:
        on_denied = False
    off = http_get(mesh.local["api-open"], 3)
    mesh.set_intention(iid, "web", "api", "allow")
    return {"on_denied": on_denied, "off_served": off == "HTTP/1.1 200 OK"}


# ---------------------------------------------------------------- the table

def _rng(vals, fmt):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    m = sum(vals) / len(vals)
    if len(vals) == 1 or min(vals) == max(vals):
        return fmt % m
    return (fmt % m) + " (" + (fmt % min(vals)) + "-" + (fmt % max(vals)) + ")"


def _gbps(xs):
    vals = [x.get("gbps") for x in xs]
    errs = [x["error"] for x in xs if "error" in x]
    return _rng(vals, "%.2f Gbit/s") + ("; errors: %s" % errs[0][:60] if errs else "")


def _ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "n/a"


def _conn(xs):
    rate = _rng([x["rate"] for x in xs], "%.0f/s")
    p50 = _rng([x["p50"] for x in xs], "%.2f")
    p99 = _rng([x["p99"] for x in xs], "%.1f")
    bad = sum(x["errors"] + x["non2xx"] for x in xs)
    return "%s, p50 %s ms, p99 %s ms%s" % (rate, p50, p99, ", %d failed" % bad if bad else "")


def table(res, meta):
    rows = []

    def row(n, what, figure, against="", ratio="", note=""):
        rows.append("| %s | %s | %s | %s | %s | %s |" % (n, what, figure, against, ratio, note))

    b = res.get("bulk")
    if b:
        for st in (1, 4):
            d, m = b.get("direct%d" % st, []), b.get("mesh%d" % st, [])
            row(1, "bulk, %d stream%s, direct to the app" % (st, "s" if st > 1 else ""), _gbps(d))
            row(1, "bulk, %d stream%s, web -> mTLS -> redis -> app" % (st, "s" if st > 1 else ""), _gbps(m),
                "direct", _ratio(mean([x.get("gbps") for x in m]), mean([x.get("gbps") for x in d])),
                "both proxies: " + _rng([x.get("cpu_s_per_gb") for x in m], "%.2f CPU s/GB"))
        m4 = mean([x.get("gbps") for x in b.get("mesh4", [])])
        row(1, "Consul docs: built-in proxy \"could sustain 5 Gbps\"", "%.1f Gbit/s (claim)" % CONSUL_CLAIM_GBPS,
            "ours, 4 streams", _ratio(m4, CONSUL_CLAIM_GBPS), "ours / claim")
    c = res.get("conns")
    if c:
        row(2, "new connections, direct to the app", _conn(c.get("direct", [])), "", "", "bound by the Python app")
        on, off = c.get("on", []), c.get("off", [])
        row(2, "new connections, mesh, intentions check OFF", _conn(off))
        per_round = [x["rate"] / y["rate"] for x, y in zip(on, off) if y["rate"]]
        row(2, "new connections, mesh, intentions check ON", _conn(on), "check OFF",
            _rng(per_round, "%.2f"), "target >= 0.95 (rate)")
        con, coff = mean([x.get("cpu_us") for x in on]), mean([x.get("cpu_us") for x in off])
        if con and coff:
            row(2, "inbound proxy CPU per connection (HAProxy + connect-spoa), check ON",
                _rng([x.get("cpu_us") for x in on], "%.0f us"), "OFF " + _rng([x.get("cpu_us") for x in off], "%.0f us"),
                _ratio(coff, con), "OFF/ON: 1 - the check's share of the inbound CPU")
            row(2, "... of which connect-spoa, check ON", _rng([x.get("spoa_cpu_us") for x in on], "%.1f us"),
                "", "", "the rest of the check's cost is HAProxy's SPOE filter")
        row(2, "p99 latency, check ON vs OFF", _rng([x["p99"] for x in on], "%.1f ms"), "check OFF",
            _ratio(mean([x["p99"] for x in on]), mean([x["p99"] for x in off])), "lower is better")
    for r in res.get("rotation", []):
        w = r["wrk"]
        failed = w["errors"] + w["non2xx"]
        st = r["stream"]
        stream = ("long stream %.0f MB, ok" % st["mbytes"]) if "mbytes" in st else ("long stream FAILED: %s" % st["error"][:60])
        applied = ("all 3 proxies served the new leaf %.1f s after the rotation" % r["applied_s"]
                   if r.get("applied_s") is not None else "NOT applied during the load: %s" % r.get("note", "")[:80])
        row(3, "%s rotation during load (web, api, redis)" % ("leaf" if r["kind"] == "leaf" else "CA"),
            "%d failed of %d connections; %s" % (failed, w["requests"], stream), "", "",
            "must be 0 failed; " + applied)
    sp = res.get("spop")
    if sp and "skipped" in sp:
        row(4, "connect-spoa alone (bench/spop-load)", "not run", "", "", sp["skipped"])
    elif sp:
        def dec(r):
            if "error" in r:
                return "FAILED: " + r["error"][:80]
            return "%.0f decisions/s, p50 %.0f us, p99 %.0f us" % (r.get("rate", 0), r.get("p50_us", 0), r.get("p99_us", 0))
        tr, cm = sp.get("trivial", {}), sp.get("cached_max", {})
        row(4, "spop-load vs a trivial responder (the generator's ceiling)", dec(tr), "", "",
            "closed loop, 4 conns x 32, unix socket")
        if "misses_during_cached_runs" in sp:
            row(4, "agent calls during the cached runs below", "%d" % sp["misses_during_cached_runs"], "", "",
                "0: every decision below came from the cache")
        row(4, "connect-spoa, cached decisions, one core, max (unix socket)", dec(cm), "trivial responder",
            _ratio(cm.get("rate"), tr.get("rate")), "target >= 200,000/s; closed-loop latency is queueing")
        if "cached_max_tcp" in sp:
            ct = sp["cached_max_tcp"]
            row(4, "connect-spoa, cached decisions, one core, max (TCP loopback)", dec(ct), "unix socket",
                _ratio(ct.get("rate"), cm.get("rate")), "")

        def lat(runs, key):
            return _rng([r.get(key) for r in runs if "error" not in r], "%.0f us")

        names = {"spoa": "connect-spoa", "spoa_bp": "connect-spoa -busy-poll 1ms",
                 "trivial": "trivial responder", "trivial_bp": "trivial responder, busy polling"}
        for rate, runs in sorted(sp.get("open", {}).items(), key=lambda kv: int(kv[0])):
            what = ("half the 200,000/s target" if int(rate) == 100000 else "half the measured maximum")
            for v in ("spoa", "spoa_bp"):
                tv = "trivial_bp" if v.endswith("_bp") else "trivial"
                errs = [r["error"] for r in runs[v] if "error" in r]
                p99s = [r.get("p99_us") for r in runs[v] if "error" not in r]
                row(4, "%s, cached, %s/s offered (%s)" % (names[v], rate, what),
                    ("FAILED: " + errs[0][:60]) if errs else "p50 %s, p99 %s" % (lat(runs[v], "p50_us"), lat(runs[v], "p99_us")),
                    "%s: p50 %s, p99 %s" % (names[tv], lat(runs[tv], "p50_us"), lat(runs[tv], "p99_us")),
                    _ratio(mean(p99s) if p99s else None,
                           mean([r.get("p99_us") for r in runs[tv] if "error" not in r] or [0]) or None),
                    "target p99 < 100 us: met in %d of %d runs (%s: %d of %d); ratio of mean p99s" % (
                        sum(1 for x in p99s if x is not None and x < 100), len(runs[v]), names[tv],
                        sum(1 for r in runs[tv] if "error" not in r and r.get("p99_us", 1e9) < 100), len(runs[tv])))
        lt = sp.get("light", {})
        if lt:
            row(4, "connect-spoa, cached, light load (2,000/s offered)", dec(lt.get("spoa", {})),
                "-busy-poll 1ms: p50 %.0f us, p99 %.0f us; trivial responder: p50 %.0f us, p99 %.0f us" % (
                    lt.get("spoa_bp", {}).get("p50_us", 0), lt.get("spoa_bp", {}).get("p99_us", 0),
                    lt.get("trivial", {}).get("p50_us", 0), lt.get("trivial", {}).get("p99_us", 0)),
                _ratio(lt.get("spoa", {}).get("p99_us"), lt.get("trivial", {}).get("p99_us")),
                "ratio of p99s (vs trivial)")
        ref = sp.get("light", {}).get("spoa", cm)
        ag = sp.get("agent")
        if ag:
            row(4, "connect-spoa, decision that goes to the agent (cache dropped)",
                "p50 %s us, max %s us (%d samples, %d agent calls)" % (
                    "%.0f" % ag["p50_us"] if ag["p50_us"] else "n/a", "%.0f" % ag["max_us"] if ag["max_us"] else "n/a",
                    ag["samples"], ag["misses"]),
                "cached, light load, p50 %.0f us" % ref.get("p50_us", 0),
                _ratio(ag["p50_us"], ref.get("p50_us")),
                "agent = the Python simulator (authorize mean %s us)" % (
                    "%.0f" % ag["agent_mean_us"] if ag.get("agent_mean_us") else "n/a"))
    for name, lv in res.get("levers", {}).items():
        if "error" in lv:
            row("L", lv.get("what", name), "not measured", "", "", lv["error"][:100])
            continue
        kind = lv["kind"]
        if kind == "bulk":
            for st in (1, 4):
                bv = [x.get("gbps") for m in lv["base"] for x in [m["%d" % st]]]
                vv = [x.get("gbps") for m in lv["variant"] for x in [m["%d" % st]]]
                row("L", "%s: bulk %d stream%s" % (lv["what"], st, "s" if st > 1 else ""), _rng(vv, "%.2f Gbit/s"),
                    "shipped " + _rng(bv, "%.2f"), _ratio(mean(vv), mean(bv)), "A B B A")
                bc = [m["%d" % st].get("cpu_s_per_gb") for m in lv["base"]]
                vc = [m["%d" % st].get("cpu_s_per_gb") for m in lv["variant"]]
                row("L", "... same, CPU of both proxies per GB", _rng(vc, "%.2f s/GB"), "shipped " + _rng(bc, "%.2f"),
                    _ratio(mean(vc), mean(bc)), "< 1: the variant is cheaper")
        else:
            bv, vv = [x["rate"] for x in lv["base"]], [x["rate"] for x in lv["variant"]]
            row("L", "%s: new connections (check ON)" % lv["what"],
                _rng(vv, "%.0f/s") + ", p99 " + _rng([x["p99"] for x in lv["variant"]], "%.1f ms"),
                "shipped " + _rng(bv, "%.0f/s") + ", p99 " + _rng([x["p99"] for x in lv["base"]], "%.1f ms"),
                _ratio(mean(vv), mean(bv)), "A B B A")
            bc, vc = [x.get("cpu_us") for x in lv["base"]], [x.get("cpu_us") for x in lv["variant"]]
            row("L", "... same, CPU of web + api per connection", _rng(vc, "%.0f us"), "shipped " + _rng(bc, "%.0f"),
                _ratio(mean(vc), mean(bc)), "< 1: the variant is cheaper")
    e = res.get("enforced")
    if e:
        row("S", "sanity: deny intention web -> api", "ON path %s, OFF path %s" % (
            "refused" if e["on_denied"] else "STILL SERVED", "served" if e["off_served"] else "NOT served"),
            "", "", "the ON rows really ran the check")
    head = ["", "## haproxy-connect bench, %s" % meta["date"], "",
            "%s; %s CPUs; %s; connect-certsync nbthread %s; load average %s at start, %s at end; %d s." % (
                meta["host"], meta["cpus"], meta["haproxy"], meta["nbthread"], meta["load_start"],
                meta.get("load_end", "?"), meta.get("elapsed", 0)),
            "Figures: mean (min-max) of the runs in alternation; ratios compare figures of this run only.", "",
            "| # | measurement | figure | compared with | ratio | note |", "|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


# ---------------------------------------------------------------- main

def _loadavg():
    try:
        return read("/proc/loadavg").split()[0]
    except OSError:
        return "?"


def _on_term(signum, frame):
    raise KeyboardInterrupt()


def main():
    ap = argparse.ArgumentParser(description="haproxy-connect benchmarks (see bench/README.md)")
    ap.add_argument("--quick", action="store_true", help="one round of everything, shorter runs, no levers")
    ap.add_argument("--no-levers", action="store_true", help="skip the template levers")
    ap.add_argument("--secs", type=int, default=4, help="seconds per iperf3/wrk measurement (default 4)")
    ap.add_argument("--rounds", type=int, default=2, help="alternated rounds of row 1 (default 2)")
    ap.add_argument("--conn-rounds", type=int, default=3, help="alternated rounds of row 2 (default 3)")
    ap.add_argument("--spop-rounds", type=int, default=2,
                    help="alternated rounds of row 4's open-loop latency runs (default 2; a p99 on this VM needs many)")
    ap.add_argument("--conns", type=int, default=16, help="wrk concurrent connections (default 16)")
    ap.add_argument("--nbthread", type=int, default=0, help="HAProxy threads (default: connect-certsync's)")
    ap.add_argument("--budget", type=int, default=540, help="skip phases that would end after this many s")
    ap.add_argument("--json", default=os.path.join(os.environ.get("HC_BIN_DIR", os.path.join(TOP, "build")),
                                                   "bench", "results.json"))
    ap.add_argument("--only", default="bulk,conns,rotation,spop,levers,sanity",
                    help="comma-separated phases to run (default: all of bulk,conns,rotation,spop,levers,sanity)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) after the run")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.conn_rounds, a.secs, a.no_levers = 1, 1, 3, True
    only = set(a.only.split(","))
    if a.no_levers:
        only.discard("levers")
    for tool in ("iperf3", "wrk", HAPROXY, harness.bin_path("connect-certsync"), harness.bin_path("connect-spoa")):
        if shutil.which(tool) is None:
            log("missing %s (make deps; make)" % tool)
            return 2
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    t_start = time.monotonic()
    hv = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": "%s %s" % (platform.node(), platform.machine()), "cpus": os.cpu_count(),
            "haproxy": " ".join(hv.split()[:3]), "nbthread": a.nbthread or "default (CPUs, max 4)",
            "load_start": _loadavg()}
    workdir = tempfile.mkdtemp(prefix="hc-bench-")
    group = Group(workdir)
    mesh = None
    res = {}
    rc = 0

    def left(need):
        ok = time.monotonic() - t_start + need < a.budget
        if not ok:
            log("skipping a phase: it would overrun the %d s budget" % a.budget)
        return ok

    try:
        log("work directory %s; starting the simulator, the apps and 4 proxies" % workdir)
        mesh = Mesh(group, workdir, a.nbthread)
        mesh.wait_flowing()
        log("mesh up in %.1f s" % (time.monotonic() - t_start))
        if "bulk" in only:
            res["bulk"] = phase_bulk(mesh, a.secs, a.rounds)
        if "conns" in only:
            res["conns"] = phase_conns(mesh, a.secs, a.conn_rounds, a.conns)
        res["rotation"] = []
        for kind in ("leaf", "ca"):
            if "rotation" in only and left(20):
                res["rotation"].append(phase_rotation(mesh, 14, a.conns, kind))
                mesh.check_alive()
        if "spop" in only and left((8 * max(1, a.spop_rounds) + 6) * (a.secs + 1) + 40):
            res["spop"] = phase_spop(mesh, group, harness.bin_path(os.path.join("bench", "spop-load")), a.secs,
                                     rounds=1 if a.quick else max(1, a.spop_rounds))
        if "levers" in only:
            res["levers"] = {}
            measures = {
                "bulk": lambda: {"%d" % st: mesh_iperf(mesh, st, a.secs) for st in (1, 4)},
                "conns": lambda: wrk_cpu(mesh, a.secs, a.conns),
            }
            for name, kind in (("bufsize", "bulk"), ("aes256", "bulk"), ("tls12", "conns"), ("noreuse", "conns"),
                               ("quietlog", "conns")):
                need = 4 * (a.secs + 2) * (2 if kind == "bulk" else 1) + 15
                if not left(need):
                    continue
                try:
                    lv = phase_lever(mesh, name, measures[kind])
                except (RuntimeError, AssertionError) as e:
                    lv = {"what": LEVERS[name]["what"], "error": str(e)}
                    log("lever %s: %s" % (name, e))
                lv["kind"] = kind
                res["levers"][name] = lv
                mesh.check_alive()
        if "sanity" in only:
            res["enforced"] = phase_enforced(mesh, mesh.iid)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        rc = 130
    except Exception as e:  # noqa: BLE001 - report, stop everything, show the logs
        log("FAILED: %s: %s" % (type(e).__name__, e))
        sys.stderr.write(group.dump_logs()[-12000:] + "\n")
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        group.close()
        if mesh is not None:
            mesh.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    meta["load_end"] = _loadavg()
    meta["elapsed"] = time.monotonic() - t_start
    out = table(res, meta)
    sys.stdout.write(out)
    try:
        os.makedirs(os.path.dirname(a.json), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "results": res}, f, indent=1, default=str)
        log("results in %s" % a.json)
    except OSError as e:
        log("cannot write %s: %s" % (a.json, e))
    if rc == 0 and not a.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log("logs kept in %s" % workdir)
    return rc


if __name__ == "__main__":
    sys.exit(main())
