"""--launch-managed: the simulator starts, restarts and stops managed proxy commands like Consul 1.2-1.5."""
import json
import os
import signal
import sys

import harness

sys.path.insert(0, os.path.join(harness.TOP, "tests", "consul_sim"))
import managed  # noqa: E402

PROXY = r'''
import json, os, signal, sys, time
out = sys.argv[1]
def bye(*_):
    with open(out + ".sigint", "a") as f:
        f.write("%d\n" % os.getpid())
    sys.exit(0)
signal.signal(signal.SIGINT, bye)
with open(out + ".%d" % os.getpid(), "w") as f:
    json.dump({"env": {k: v for k, v in os.environ.items() if k.startswith(("CONSUL_", "CONNECT_"))},
               "sid": os.getsid(0), "pid": os.getpid(), "argv": sys.argv[1:]}, f)
print("proxy stdout line", flush=True)
print("proxy stderr line", file=sys.stderr, flush=True)
while True:
    time.sleep(0.2)
'''


def test_backoff_schedule():
    assert [managed.backoff(n) for n in range(1, 12)] == [0, 0, 0, 2, 4, 8, 16, 32, 60, 60, 60]


def _runs(tmp_path, prefix):
    out = []
    for name in sorted(os.listdir(tmp_path)):
        if name.startswith(prefix + ".") and name[len(prefix) + 1:].isdigit():
            with open(os.path.join(tmp_path, name)) as f:
                try:
                    out.append(json.load(f))
                except ValueError:
                    pass
    return out


def test_launch_managed_lifecycle(start_sim, tmp_path):
    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    data = tmp_path / "data"
    s = start_sim("--launch-managed", "--data-dir", str(data))
    out = str(tmp_path / "run")
    cmd = [harness.PYTHON, str(script), out]
    s.api("PUT", "/v1/agent/service/register", {"Name": "web", "Port": 8080, "Connect": {"Proxy": {"Command": cmd}}})
    runs = harness.wait_until(lambda: _runs(tmp_path, "run"), 30, what="managed proxy started")
    r = runs[0]
    ctl = s.control("GET", "/_sim/proxy/web-proxy")
    assert r["env"] == ctl["Env"]
    assert r["env"]["CONNECT_PROXY_ID"] == "web-proxy" and r["env"]["CONNECT_PROXY_TOKEN"] == ctl["ProxyToken"]
    assert r["sid"] == r["pid"]                                  # its own session (setsid)
    pidfile = data / "proxy" / "pids" / "web-proxy.pid"
    assert pidfile.read_text() == str(r["pid"])
    for stream in ("stdout", "stderr"):
        log = data / "proxy" / "logs" / ("web-proxy-%s.log" % stream)
        harness.wait_until(lambda: ("proxy %s line" % stream) in log.read_text(), 10, what=stream)
        assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    # Killed: restarted at once (first restarts have no backoff).
    os.kill(r["pid"], signal.SIGKILL)
    harness.wait_until(lambda: len(_runs(tmp_path, "run")) >= 2, 30, what="restart after kill")
    # A changed command restarts it with the new arguments (and SIGINT to the old one).
    out2 = str(tmp_path / "second")
    s.api("PUT", "/v1/agent/service/register",
          {"Name": "web", "Port": 8080, "Connect": {"Proxy": {"Command": [harness.PYTHON, str(script), out2]}}})
    second = harness.wait_until(lambda: _runs(tmp_path, "second"), 30, what="restart on command change")
    harness.wait_until(lambda: os.path.exists(out + ".sigint"), 30, what="SIGINT to the old proxy")
    assert second[0]["env"]["CONNECT_PROXY_TOKEN"] == ctl["ProxyToken"]   # token kept across re-registration
    # Deregistration stops it with SIGINT.
    s.api("PUT", "/v1/agent/service/deregister/web")
    harness.wait_until(lambda: os.path.exists(out2 + ".sigint"), 30, what="SIGINT on deregistration")
    harness.wait_until(lambda: not pidfile.exists(), 10, what="pid file removed")


def test_managed_proxies_stop_with_simulator(start_sim, tmp_path):
    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    s = start_sim("--launch-managed", "--data-dir", str(tmp_path / "data"))
    out = str(tmp_path / "run")
    s.api("PUT", "/v1/agent/service/register",
          {"Name": "db", "Port": 1, "Connect": {"Proxy": {"Command": [harness.PYTHON, str(script), out]}}})
    r = harness.wait_until(lambda: _runs(tmp_path, "run"), 30, what="managed proxy started")[0]
    s.proc.signal(signal.SIGTERM)
    assert s.proc.popen.wait(30) == 0
    assert os.path.exists(out + ".sigint")
    try:
        os.kill(r["pid"], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    if alive:        # the zombie may linger a moment if init has not reaped it; it must not be running
        with open("/proc/%d/stat" % r["pid"]) as f:
            assert f.read().split(")")[1].split()[0] == "Z"


def test_restarted_simulator_readopts_running_proxy(start_sim, tmp_path):
    """Killed and restarted with the same state file and data dir, the agent re-adopts the proxy by pid
    (Consul 1.2-1.5) instead of starting a second copy."""
    script = tmp_path / "proxy.py"
    script.write_text(PROXY)
    data = str(tmp_path / "data")
    sf = str(tmp_path / "state.json")
    out = str(tmp_path / "run")
    s = start_sim("--launch-managed", "--data-dir", data, "--state-file", sf)
    s.api("PUT", "/v1/agent/service/register",
          {"Name": "web", "Port": 1, "Connect": {"Proxy": {"Command": [harness.PYTHON, str(script), out]}}})
    r = harness.wait_until(lambda: _runs(tmp_path, "run"), 30, what="managed proxy started")[0]
    try:
        os.kill(s.proc.pid, signal.SIGKILL)     # only the simulator: the proxy lives in its own session
        s.proc.popen.wait(10)
        assert os.path.exists("/proc/%d" % r["pid"])
        s2 = start_sim("--launch-managed", "--data-dir", data, "--state-file", sf)
        proc = harness.wait_until(lambda: s2.control("GET", "/_sim/proxy/web-proxy").get("Process"), 30,
                                  what="proxy supervised again")
        assert proc["Pid"] == r["pid"] and proc["Running"] and proc["Starts"] == 0
        assert len(_runs(tmp_path, "run")) == 1
        s2.proc.signal(signal.SIGTERM)
        assert s2.proc.popen.wait(30) == 0
        assert os.path.exists(out + ".sigint")
    finally:
        try:
            os.kill(r["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
