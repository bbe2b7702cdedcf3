"""connect-spoa -busy-poll=<dur>: adaptive busy polling, end to end.

- behind real HAProxy it still answers allow and deny (the option changes when the loop sleeps, not what
  it decides);
- idle, it sleeps: its CPU time grows by far less than the wall time;
- under a steady, modest stream of decisions (bench/spop-load, open loop) it spins: it is running or
  waiting for a CPU nearly all the time, while the same load without the option leaves it asleep most
  of the time. This is what the option costs, and the proof that it does something;
- bad values are refused at start-up (exit 2, a message naming the flag);
- connect-certsync -spoa-busy-poll hands it to the connect-spoa it supervises.

CPU figures come from /proc/<pid>/stat (utime + stime, in clock ticks) and /proc/<pid>/schedstat (time
spent on a CPU and time spent runnable waiting for one, in ns, of the main thread: connect-spoa is one
libev loop). "Demand" (running + runnable) is what a spinning loop keeps near the wall time even on a
loaded machine, where its CPU time alone can fall short because others take the CPU from it. The
thresholds are fractions of the measured interval: behaviours, not speeds.
"""
import os
import re
import subprocess
import time

import harness
import spoa_support as ss
from certsync_support import Mesh, ddir, start_certsync  # noqa: F401

CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW = "5ms"


def cpu_seconds(pid):
    """utime + stime of the process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def sched_seconds(pid):
    """(on a CPU, runnable but waiting for one) of the main thread, in seconds; None without schedstat."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            run, wait = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    return int(run) / 1e9, int(wait) / 1e9


def measure(pid, seconds):
    """Over about `seconds` of wall time: (elapsed, cpu, demand) where cpu is utime+stime grown and
    demand is on-CPU + runnable time grown (cpu when schedstat is missing)."""
    c0, s0, t0 = cpu_seconds(pid), sched_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, s1, t1 = cpu_seconds(pid), sched_seconds(pid), time.monotonic()
    cpu = c1 - c0
    demand = cpu if s0 is None or s1 is None else (s1[0] - s0[0]) + (s1[1] - s0[1])
    return t1 - t0, cpu, demand


def run_spoa(*args, timeout=10):
    return subprocess.run([harness.bin_path("connect-spoa")] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def start_load(procs, spoa_port, cert, seconds, rate=500, name="spop-load"):
    """bench/spop-load sending `rate` check-intentions frames a second (open loop) for db from the caller
    certificate `cert` at connect-spoa, for `seconds`. Pacing ticks every millisecond: the generator
    sleeps between them and leaves the CPUs to connect-spoa."""
    argv = [harness.bin_path("bench/spop-load"), "-addr", "127.0.0.1:%d" % spoa_port, "-c", "2", "-k", "8",
            "-rate", str(rate), "-tick", "1000", "-d", str(seconds), "-cert", cert, "-target", "db"]
    return procs.start(name, argv)


def load_result(load):
    """The generator's last line, RESULT key=value ..., as a dict of numbers."""
    harness.wait_until(lambda: not load.alive(), 30, what="spop-load done")
    m = re.search(r"^RESULT (.*)$", load.log(), re.M)
    assert m, load.log()
    return {k: float(v) for k, v in (kv.split("=", 1) for kv in m.group(1).split())}


def test_busy_poll_behind_haproxy_allows_denies_then_sleeps(procs, sim, tmp_path):
    ss.intention(sim, "web", "db", "allow")
    ss.intention(sim, "api", "db", "deny")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_args=["-busy-poll=%s" % WINDOW])
    assert "busy polling" in st["spoa"].log()
    web = ss.client_cert(sim, tmp_path, "web")
    api = ss.client_cert(sim, tmp_path, "api")
    for i in range(20):
        payload = b"call %d\n" % i
        assert ss.mtls_call(st["port"], st["ca"], web[0], web[1], payload) == payload, i
        assert ss.mtls_call(st["port"], st["ca"], api[0], api[1], payload) is None, i
    log = st["spoa"].log()
    assert "caller=%s target=db result=allow" % web[2] in log
    assert "caller=%s target=db result=deny" % api[2] in log
    # Traffic stopped (HAProxy's SPOP health checks still come every 500 ms, each one a short spin).
    time.sleep(0.2)
    elapsed, cpu, demand = measure(st["spoa"].pid, 2.0)
    assert cpu < 0.3 * elapsed, (elapsed, cpu, demand)
    assert demand < 0.3 * elapsed, (elapsed, cpu, demand)
    # Still deciding after the idle stretch (the loop went back to sleeping in the poller, and woke).
    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1], b"after\n") == b"after\n"
    assert ss.mtls_call(st["port"], st["ca"], api[0], api[1], b"after\n") is None
    assert st["spoa"].alive()


def _under_load(procs, sim, cert, args, name):
    """connect-spoa with args under a steady 500 frames/s from cert's caller: (elapsed, cpu, demand)
    while it flows and after it stopped, and the generator's RESULT. Logs at info: at debug every
    decision is a log line, and the figures would be the logging's."""
    spoa, port = ss.start_spoa(procs, sim, target="db", args=list(args) + ["-log-level", "info"], name=name)
    load = start_load(procs, port, cert, 8, name=name + "-load")
    # The first frame asks the agent, the later ones hit the cache: leave that behind.
    time.sleep(1.0)
    assert load.alive(), load.log()
    busy = measure(spoa.pid, 2.0)
    # Still running after the measurement: the load covered all of it.
    assert load.alive(), load.log()
    res = load_result(load)
    time.sleep(0.2)
    idle = measure(spoa.pid, 2.0)
    assert spoa.alive(), spoa.log()
    spoa.stop()
    return busy, idle, res


def test_busy_poll_spins_under_load_and_sleeps_when_idle(procs, sim, tmp_path):
    ss.intention(sim, "web", "db", "allow")
    cert = ss.client_cert(sim, tmp_path, "web")[0]
    plain_busy, plain_idle, plain_res = _under_load(procs, sim, cert, [], "spoa-plain")
    bp_busy, bp_idle, bp_res = _under_load(procs, sim, cert, ["-busy-poll=%s" % WINDOW], "spoa-busypoll")
    figures = {"plain": (plain_busy, plain_idle, plain_res), "busy-poll": (bp_busy, bp_idle, bp_res)}
    # Frames flowed and every one was answered allow, by both.
    for res in (plain_res, bp_res):
        assert res["answers"] > 0 and res["allow"] == res["answers"] and res["errors"] == 0, figures
    # With -busy-poll, 2 ms between frames never lets the 5 ms window run out: the loop spins.
    elapsed, cpu, demand = bp_busy
    assert demand > 0.5 * elapsed, figures
    # Without it the same load leaves the loop asleep most of the time: clearly less CPU.
    p_elapsed, p_cpu, p_demand = plain_busy
    assert p_demand < 0.5 * p_elapsed and p_demand < demand / 2, figures
    assert p_cpu < cpu / 2, figures
    # Once the load stops, the busy-polling loop sleeps again, as the plain one does.
    elapsed, cpu, demand = bp_idle
    assert cpu < 0.3 * elapsed and demand < 0.3 * elapsed, figures


def test_invalid_busy_poll_exits_2():
    for args in (["-busy-poll=abc"], ["-busy-poll=-1"], ["-busy-poll=61s"], ["-busy-poll", "1x"],
                 ["-busy-poll="], ["-busy-poll=1e-3"], ["-busy-poll=inf"]):
        r = run_spoa("-listen", "127.0.0.1:%d" % harness.free_port(), "-target", "db",
                     "-http-addr", "127.0.0.1:1", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert 'invalid -busy-poll "%s"' % args[-1].split("=", 1)[-1] in r.stderr, (args, r.stderr)
        assert "Usage: connect-spoa" in r.stderr, args
    assert "-busy-poll" in run_spoa("-help").stdout


def test_busy_poll_zero_is_off(procs, sim):
    spoa, _ = ss.start_spoa(procs, sim, args=["-busy-poll=0"])
    assert "busy polling" not in spoa.log()
    spoa2, _ = ss.start_spoa(procs, sim, args=["-busy-poll=60s"], name="spoa-60s")
    assert "busy polling" in spoa2.log()


def _children(parent, name):
    """(pid, argv) of parent's children running the binary `name`."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0")[:-1]]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and argv and os.path.basename(argv[0]) == name:
            out.append((int(p), argv))
    return out


def _flag_value(argv, flag):
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a[len(flag) + 1:]
    return None


def test_certsync_hands_busy_poll_to_supervised_spoa(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir, redis_args=["-sidecar-for", "redis", "-spoa-busy-poll=1ms"])
    ss.intention(sim, "web", "redis", "allow")
    m.wait_flowing()
    kids = _children(m.redis.pid, "connect-spoa")
    assert len(kids) == 1, kids
    pid, argv = kids[0]
    assert _flag_value(argv, "-busy-poll") == "1ms", argv
    # ... and connect-spoa took it (it logs its settings at start, into certsync's output).
    assert "busy polling" in m.redis.log(), m.redis.log()
    # web's certsync was not given the flag: its connect-spoa sleeps as before.
    kids = _children(m.web.pid, "connect-spoa")
    assert len(kids) == 1, kids
    assert _flag_value(kids[0][1], "-busy-poll") is None, kids[0][1]


def test_certsync_refuses_bad_spoa_busy_poll(procs, sim, ddir):  # noqa: F811
    for bad in ("abc", "-1", "61s"):
        p = start_certsync(procs, sim, ddir("bad"), ["-sidecar-for", "redis", "-spoa-busy-poll=%s" % bad],
                           name="certsync-bad-%s" % bad)
        harness.wait_until(lambda: not p.alive(), 10, what="certsync exits")
        assert p.popen.returncode not in (0, None), p.log()
        assert "-spoa-busy-poll" in p.log() and bad in p.log(), p.log()
