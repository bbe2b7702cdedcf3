"""--launch-managed: runs managed proxies' commands the way Consul 1.2-1.5's proxy manager does.

daemon mode: started in a new session (setsid) with the agent's environment plus the proxy's variables, stdout
and stderr appended to <data-dir>/proxy/logs/<id>-std{out,err}.log (0600), pid in <data-dir>/proxy/pids/<id>.pid;
restarted when it exits: the first 3 restarts at once, then after 2^(n-3) s capped at 60 s, the count reset when a
run lasted 10 s; restarted when its command, environment or token changes; stopped with SIGINT, then SIGKILL
after 5 s, when its service is deregistered or the simulator stops. script mode: run once per change.
"""
import os
import signal
import subprocess
import threading
import time

RESTART_BACKOFF_MIN = 3
RESTART_HEALTHY = 10.0
RESTART_MAX_WAIT = 60.0
GRACEFUL_WAIT = 5.0


def backoff(attempts):
    """Seconds to wait before start number `attempts` (1-based) since the last reset."""
    if attempts <= RESTART_BACKOFF_MIN:
        return 0.0
    exp = min(attempts - RESTART_BACKOFF_MIN, 31)
    return min(float(1 << exp), RESTART_MAX_WAIT)


class Adopted:
    """A proxy process left running by a previous simulator (Consul re-adopts its proxies by pid after an agent
    restart). Offers the subset of Popen that Daemon uses; it is not our child, so exit is seen by polling."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and not _alive(self.pid):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("adopted proxy", timeout)
            time.sleep(0.1)
        return self.returncode

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _proc_argv_env(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = dict(kv.decode(errors="replace").split("=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        return argv, env
    except OSError:
        return None, None


class Daemon:
    def __init__(self, sup, proxy_id, argv, env, mode):
        self.sup = sup
        self.id = proxy_id
        self.argv = argv
        self.env = env
        self.mode = mode
        self.stop_ev = threading.Event()
        self.proc = None
        self.lock = threading.Lock()
        self.starts = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def key(self):
        return (tuple(self.argv), tuple(sorted(self.env.items())), self.mode)

    def _spawn(self):
        d = self.sup.data_dir
        logs = os.path.join(d, "proxy", "logs")
        pids = os.path.join(d, "proxy", "pids")
        os.makedirs(logs, exist_ok=True)
        os.makedirs(pids, exist_ok=True)
        out = os.open(os.path.join(logs, "%s-stdout.log" % self.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(os.path.join(logs, "%s-stderr.log" % self.id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            env = dict(os.environ)
            env.update(self.env)
            p = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 start_new_session=True)
        finally:
            os.close(out)
            os.close(err)
        pidfile = os.path.join(pids, "%s.pid" % self.id)
        tmp = pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d" % p.pid)
        os.rename(tmp, pidfile)
        return p

    def adopt(self):
        """The proxy a previous simulator started, if its pid file names a live process with the same command,
        id and token; one with the same id but another command or token is stopped instead."""
        pidfile = os.path.join(self.sup.data_dir, "proxy", "pids", "%s.pid" % self.id)
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if pid <= 1 or not _alive(pid):
            return None
        argv, env = _proc_argv_env(pid)
        if argv is None or env.get("CONNECT_PROXY_ID") != self.id:
            return None
        old = Adopted(pid)
        if argv == self.argv and env.get("CONNECT_PROXY_TOKEN") == self.env.get("CONNECT_PROXY_TOKEN"):
            return old
        self.sup.sim.log("info", "managed proxy %s: stopping stale pid %d" % (self.id, pid))
        _stop(old)
        return None

    def run(self):
        attempts = 0
        deadline = 0.0
        adopted = self.adopt()
        if adopted is not None:
            with self.lock:
                self.proc = adopted
            self.sup.sim.log("info", "managed proxy %s re-adopted (pid %d)" % (self.id, adopted.pid))
            adopted.wait()
            deadline = time.monotonic() + RESTART_HEALTHY
        while not self.stop_ev.is_set():
            if time.monotonic() > deadline:
                attempts = 0
            deadline = time.monotonic() + RESTART_HEALTHY
            attempts += 1
            wait = backoff(attempts)
            if wait and self.stop_ev.wait(wait):
                break
            try:
                with self.lock:
                    if self.stop_ev.is_set():
                        break
                    self.proc = self._spawn()
                    self.starts += 1
            except OSError as e:
                self.sup.sim.log("err", "managed proxy %s: start failed: %s" % (self.id, e))
                if self.mode == "script":
                    return
                continue
            self.sup.sim.log("info", "managed proxy %s started (pid %d)" % (self.id, self.proc.pid))
            rc = self.proc.wait()
            self.sup.sim.log("info", "managed proxy %s exited with %s" % (self.id, rc))
            if self.mode == "script":
                return

    def stop(self):
        self.stop_ev.set()
        with self.lock:
            p = self.proc
        if p is not None:
            _stop(p)
        self.thread.join(GRACEFUL_WAIT + 5)
        try:
            os.unlink(os.path.join(self.sup.data_dir, "proxy", "pids", "%s.pid" % self.id))
        except OSError:
            pass


def _stop(p):
    """SIGINT, then SIGKILL (to its whole session's group) after GRACEFUL_WAIT."""
    if p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGINT)
        p.wait(GRACEFUL_WAIT)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.kill()
        p.wait()
    except OSError:
        pass


class Supervisor:
    def __init__(self, sim):
        self.sim = sim
        self.data_dir = sim.opts.data_dir
        self.daemons = {}
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self):
        os.makedirs(os.path.join(self.data_dir, "proxy"), exist_ok=True)
        self.thread.start()

    def wanted(self):
        st = self.sim.state
        out = {}
        with st.cond:
            for pid, m in st.managed.items():
                if m["TargetServiceID"] not in st.services:
                    continue
                argv = list(m["Command"]) or st.default_proxy_command()
                out[pid] = (argv, self.sim.proxy_env(pid), m["ExecMode"])
        return out

    def reconcile(self):
        want = self.wanted()
        for pid in list(self.daemons):
            d = self.daemons[pid]
            w = want.get(pid)
            if w is None or d.key() != (tuple(w[0]), tuple(sorted(w[1].items())), w[2]):
                self.sim.log("info", "managed proxy %s: stopping (%s)" % (pid, "removed" if w is None else "changed"))
                del self.daemons[pid]
                d.stop()
        for pid, (argv, env, mode) in want.items():
            if pid not in self.daemons:
                d = Daemon(self, pid, argv, env, mode)
                self.daemons[pid] = d
                d.thread.start()

    def loop(self):
        st = self.sim.state
        last = -1
        while not self.stop_ev.is_set():
            with st.cond:
                if st.index == last:
                    st.cond.wait(0.5)
                last = st.index
            if self.stop_ev.is_set():
                break
            try:
                self.reconcile()
            except Exception as e:  # noqa: BLE001 - keep supervising
                self.sim.log("err", "managed proxy supervisor: %r" % e)

    def stop(self):
        self.stop_ev.set()
        self.thread.join(5)
        for pid in list(self.daemons):
            self.daemons.pop(pid).stop()

    def status(self):
        out = {}
        for pid, d in list(self.daemons.items()):
            p = d.proc
            out[pid] = {"Pid": p.pid if p else None, "Running": bool(p and p.poll() is None), "Starts": d.starts}
        return out
