"""Process harness shared by the simulator's tests and the integration tests.

Everything a test starts goes through a ProcGroup, which stops it at teardown (SIGTERM, then SIGKILL
to the whole process group), also when the test fails. Each test works in its own tmp_path.
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.environ.get("HC_PYTHON", "/usr/bin/python3")
SIM = os.path.join(TOP, "tests", "consul_sim", "consul_sim.py")


def bin_path(name):
    """Path of one of our built binaries (HC_BIN_DIR, set by make, else build/)."""
    return os.path.join(os.environ.get("HC_BIN_DIR", os.path.join(TOP, "build")), name)


def free_port(host="127.0.0.1"):
    """A TCP port free on host right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value, which is returned. Raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the predicate may fail until ready
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s%s" % (what, ": %r" % last_exc if last_exc else ""))


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_open(path):
    """True when something accepts connections on the unix socket at path (port_open's twin)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(0.5)
            c.connect(path)
            return True
    except OSError:
        return False


class Proc:
    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def signal(self, sig):
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, timeout=5.0):
        """SIGTERM, wait, then SIGKILL the whole process group. Returns the exit status."""
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            return self.popen.wait(5)
        except subprocess.TimeoutExpired:
            return None


class ProcGroup:
    """Starts processes with their output in <dir>/<name>.log and stops all of them at close()."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.procs = []

    def start(self, name, argv, env=None, cwd=None):
        log_path = os.path.join(self.workdir, "%s.log" % name)
        logf = open(log_path, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, cwd=cwd or self.workdir, start_new_session=True)
        logf.close()
        proc = Proc(name, p, log_path)
        self.procs.append(proc)
        return proc

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def dump_logs(self):
        out = []
        for p in self.procs:
            out.append("----- %s (pid %d, %s) -----\n%s" % (
                p.name, p.pid, "running" if p.alive() else "exit %s" % p.popen.returncode, p.log()[-6000:]))
        return "\n".join(out)


class Sim:
    """A running Consul agent simulator (tests/consul_sim). http_addr is "127.0.0.1:<port>"."""

    def __init__(self, proc, ports, master_token=None):
        self.proc = proc
        self.ports = ports
        self.http_port = ports["http"]
        self.http_addr = "127.0.0.1:%d" % self.http_port
        self.url = "http://" + self.http_addr
        self.control_url = "http://127.0.0.1:%d" % ports["control"]
        self.master_token = master_token

    def api(self, method, path, body=None, token=None, raw=False, timeout=30):
        """Calls the agent API; returns (status, headers, parsed JSON or text)."""
        return _http(self.url, method, path, body, token if token is not None else self.master_token, raw, timeout)

    def control(self, method, path, body=None, timeout=30):
        """Calls the simulator's test-control API (/_sim/...); returns the parsed JSON (or text)."""
        status, _, data = _http(self.control_url, method, path, body, None, False, timeout)
        if status >= 300:
            raise AssertionError("sim control %s %s -> %d %r" % (method, path, status, data))
        return data


def _http(base, method, path, body, token, raw, timeout):
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        if isinstance(data, str):
            data = data.encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if token:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, headers, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, headers, payload = e.code, dict(e.headers), e.read()
    if raw:
        return status, headers, payload
    text = payload.decode("utf-8", "replace")
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


def start_sim(procs, workdir, args=(), master_token=None, name="consul-sim"):
    """Starts the simulator on free loopback ports and waits until it serves."""
    port_file = os.path.join(str(workdir), "%s.ports.json" % name)
    if os.path.exists(port_file):
        os.unlink(port_file)
    argv = [PYTHON, SIM, "--http-addr", "127.0.0.1:0", "--control-addr", "127.0.0.1:0",
            "--port-file", port_file] + list(args)
    if master_token:
        argv += ["--acl-master-token", master_token]
    proc = procs.start(name, argv)
    wait_until(lambda: os.path.exists(port_file) or not proc.alive(), 20, what="simulator port file")
    if not proc.alive():
        raise AssertionError("simulator exited:\n" + proc.log())
    with open(port_file) as f:
        ports = json.load(f)
    return Sim(proc, ports, master_token)
