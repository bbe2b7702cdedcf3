"""HAProxy or connect-spoa killed: restarted by certsync, traffic resumes."""
import os
import signal

import harness
from certsync_support import Mesh, call, ddir, master  # noqa: F401


def _pid_of(name, parent):
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read()
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        if ppid == parent and os.path.basename(cmd[0].decode()) == name:
            return int(p)
    return None


def test_haproxy_killed_restarted(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    mpid = _pid_of("haproxy", m.redis.pid)
    assert mpid
    os.killpg(mpid, signal.SIGKILL) if os.getpgid(mpid) != os.getpgid(m.redis.pid) else os.kill(mpid, signal.SIGKILL)
    harness.wait_until(lambda: (_pid_of("haproxy", m.redis.pid) or mpid) != mpid, 30, what="haproxy restarted")
    m.wait_flowing()
    assert m.redis.alive()


def test_spoa_killed_restarted(procs, sim, ddir):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    spid = _pid_of("connect-spoa", m.redis.pid)
    assert spid
    os.kill(spid, signal.SIGKILL)
    harness.wait_until(lambda: (_pid_of("connect-spoa", m.redis.pid) or spid) != spid, 30, what="spoa restarted")
    m.wait_flowing()
    assert "connect-spoa (pid %d) killed by signal 9" % spid in m.redis.log()
