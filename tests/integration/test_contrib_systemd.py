"""contrib/systemd/*.service: `systemd-analyze verify` accepts the units (binary paths pointed at build/, as
the units name /usr/local/bin), every flag of an ExecStart exists in the daemon's -help, and the ExecStart
command lines actually run: connect-spoa's serves /metrics on its -metrics-addr, and connect-certsync@web's
finds web's sidecar and writes its files (with -once added, and the agent address from the unit's
EnvironmentFile). Fixed addresses and directories in the units become free ports / tmp_path, said below."""
import os
import re
import shlex
import shutil
import subprocess
import urllib.request

import pytest

import harness
import spoa_support
from certsync_support import ddir, passing, register  # noqa: F401 - ddir is a fixture

UNITS = os.path.join(harness.TOP, "contrib", "systemd")
BIN = {"connect-spoa": "connect-spoa.service", "connect-certsync": "connect-certsync@.service"}


def unit(name):
    """{key: [values]} of the [Service] section and the raw text."""
    with open(os.path.join(UNITS, name)) as f:
        text = f.read()
    keys = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        k, _, v = line.partition("=")
        keys.setdefault((section, k.strip()), []).append(v.strip())
    return keys, text


def exec_start(name, instance="web"):
    keys, _ = unit(name)
    (cmd,) = keys[("[Service]", "ExecStart")]
    return shlex.split(cmd.replace("%i", instance))


def help_text(binary):
    out = subprocess.run([harness.bin_path(binary), "-help"], capture_output=True, text=True)
    return out.stdout + out.stderr


def test_units_are_listed():
    assert sorted(n for n in os.listdir(UNITS) if n.endswith(".service")) == sorted(BIN.values())


@pytest.mark.parametrize("binary", sorted(BIN))
def test_exec_start_flags_exist(binary):
    argv = exec_start(BIN[binary])
    assert argv[0] == "/usr/local/bin/%s" % binary
    flags = [a for a in argv[1:] if a.startswith("-")]
    assert flags
    text = help_text(binary)
    for f in flags:
        assert re.search(r"^\s+%s[=\s]" % re.escape(f), text, re.M), "%s not in %s -help" % (f, binary)


@pytest.mark.parametrize("name", sorted(BIN.values()))
def test_systemd_analyze_verify(name, tmp_path):
    sa = shutil.which("systemd-analyze")
    if sa is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's binary exists: point it at build/ in a copy (instance "web" for the
    # template unit, which verify cannot take uninstantiated)
    _, text = unit(name)
    for b in BIN:
        text = text.replace("/usr/local/bin/%s " % b, os.path.abspath(harness.bin_path(b)) + " ")
    dest = tmp_path / name.replace("@.", "@web.")
    dest.write_text(text)
    res = subprocess.run([sa, "verify", str(dest)], capture_output=True, text=True, cwd=str(tmp_path))
    out = res.stdout + res.stderr
    if res.returncode != 0 and re.search(r"Failed to (connect to bus|initialize manager)|not booted", out):
        pytest.skip("systemd-analyze verify cannot run in this sandbox: " + out.strip()[:200])
    assert res.returncode == 0 and not out.strip(), out


def _env_file(path, values):
    with open(path, "w") as f:
        for k, v in values.items():
            f.write("%s=%s\n" % (k, v))


def _read_env_file(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
    return env


def test_spoa_unit_command_runs(procs, sim, tmp_path):
    """connect-spoa.service's ExecStart (its two fixed ports -> free ports; the agent address from the unit's
    EnvironmentFile, here written into tmp_path) answers HAProxy and serves metrics."""
    argv = exec_start("connect-spoa.service")
    argv[0] = harness.bin_path("connect-spoa")
    listen, mport = harness.free_port(), harness.free_port()
    assert argv[argv.index("-listen") + 1] == "127.0.0.1:12345"
    argv[argv.index("-listen") + 1] = "127.0.0.1:%d" % listen
    argv[argv.index("-metrics-addr") + 1] = "127.0.0.1:%d" % mport
    keys, _ = unit("connect-spoa.service")
    assert keys[("[Service]", "EnvironmentFile")] == ["-/etc/haproxy-connect/spoa.env"]
    env_path = str(tmp_path / "spoa.env")
    _env_file(env_path, {"CONSUL_HTTP_ADDR": sim.http_addr})
    proc = procs.start("connect-spoa", argv + ["-target", "db"], env=_read_env_file(env_path))
    harness.wait_until(lambda: "listening on" in proc.log() or not proc.alive(), 10, what="connect-spoa")
    crt, ca = spoa_support.write_server_cert(sim, tmp_path, "db")
    echo = spoa_support.start_echo(procs)
    port = harness.free_port()
    cfg, _ = spoa_support.haproxy_cfg(tmp_path, port, crt, ca, echo, listen)
    spoa_support.start_haproxy(procs, cfg, port)
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "web")
    harness.wait_until(lambda: spoa_support.mtls_call(port, ca, cert, key) == b"ping\n", 30,
                       what="a call allowed by the unit's connect-spoa")
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport, timeout=5) as r:
        assert 'connect_spoa_decisions_total{result="allow"} ' in r.read().decode()


def test_certsync_unit_command_runs(procs, sim, tmp_path, ddir):  # noqa: F811
    """connect-certsync@web's ExecStart with -once added (its -data-dir -> a tmp dir; the agent address
    from the EnvironmentFile): it finds web's sidecar and writes the certificates and a valid haproxy.cfg."""
    argv = exec_start("connect-certsync@.service", "web")
    assert argv[1:3] == ["-sidecar-for", "web"]
    argv[0] = harness.bin_path("connect-certsync")
    data = ddir("unit")
    assert argv[argv.index("-data-dir") + 1] == "/var/lib/haproxy-connect/web"
    argv[argv.index("-data-dir") + 1] = data
    register(sim, {"Name": "web", "Port": harness.free_port(),
                   "Connect": {"SidecarService": {"Port": harness.free_port()}}})
    passing(sim, "web-sidecar-proxy")
    env_path = str(tmp_path / "web.env")
    _env_file(env_path, {"CONSUL_HTTP_ADDR": sim.http_addr})
    env = _read_env_file(env_path)
    # systemd's default PATH for services (where "haproxy" is found), and nothing of ours leaking in
    env.update({"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CONSUL_HTTP_TOKEN": "",
                "CONNECT_PROXY_ID": "", "CONSUL_PROXY_ID": ""})
    proc = procs.start("connect-certsync", argv + ["-once"], env=env)
    assert proc.popen.wait(60) == 0, proc.log()
    for f in ("leaf.pem", "ca.pem", "haproxy.cfg"):
        assert os.path.exists(os.path.join(data, f)), (f, proc.log())
    chk = subprocess.run([spoa_support.HAPROXY, "-c", "-f", os.path.join(data, "haproxy.cfg")],
                         capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr


def test_spoa_unit_matches_haproxy_snippet():
    """contrib/haproxy/intentions-only.cfg's SPOE server is where connect-spoa.service listens."""
    argv = exec_start("connect-spoa.service")
    listen = argv[argv.index("-listen") + 1]
    with open(os.path.join(harness.TOP, "contrib", "haproxy", "intentions-only.cfg")) as f:
        servers = re.findall(r"^\s*server spoa1 (\S+)", f.read(), re.M)
    assert servers == [listen], (servers, listen)
