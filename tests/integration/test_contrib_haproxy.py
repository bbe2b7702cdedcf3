"""contrib/haproxy/intentions-only.cfg + intentions-only.spoe.conf, for operators who run their own HAProxy:
rendered with real paths and ports, `haproxy -c` accepts them, and with connect-spoa and the agent simulator
an allowed caller passes and a caller denied by an intention is refused.

What the test substitutes (each original string must still be in the file, or the test fails):
- the certificate paths under /etc/haproxy/connect/ -> the leaf of service web and the CA roots from the
  simulator, written into tmp_path; the spoe.conf path -> the copy of intentions-only.spoe.conf in tmp_path;
- the fixed ports (inbound :21000, the app 127.0.0.1:8080, connect-spoa 127.0.0.1:12345) -> free loopback
  ports (the inbound listener on 127.0.0.1 only, not every address).
"""
import os
import re
import subprocess

import harness
import spoa_support

CONTRIB = os.path.join(harness.TOP, "contrib", "haproxy")


def _render(name, subst, dest):
    with open(os.path.join(CONTRIB, name)) as f:
        text = f.read()
    for old, new in subst:
        assert old in text, "%s no longer contains %r" % (name, old)
        text = text.replace(old, new)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def test_intentions_only_snippet(procs, sim, tmp_path):
    # connect-spoa's -target is another service: the snippet's own "target=str(web)" argument must win
    spoa, spoa_port = spoa_support.start_spoa(procs, sim, target="not-web")
    echo = spoa_support.start_echo(procs)
    crt, ca = spoa_support.write_server_cert(sim, tmp_path, "web")
    port = harness.free_port()
    spoe = _render("intentions-only.spoe.conf", [], str(tmp_path / "spoe.conf"))
    cfg = _render("intentions-only.cfg", [
        ("bind :21000 ", "bind 127.0.0.1:%d " % port),
        ("/etc/haproxy/connect/leaf.pem", crt),
        ("/etc/haproxy/connect/ca.pem", ca),
        ("/etc/haproxy/connect/spoe.conf", spoe),
        ("127.0.0.1:8080", "127.0.0.1:%d" % echo),
        ("127.0.0.1:12345", "127.0.0.1:%d" % spoa_port),
    ], str(tmp_path / "haproxy.cfg"))
    # valid, and valid without warnings (a warning here is a problem for whoever copies the snippet)
    chk = subprocess.run([spoa_support.HAPROXY, "-c", "-f", cfg], capture_output=True, text=True)
    assert chk.returncode == 0 and "Configuration file is valid" in chk.stdout + chk.stderr, chk
    assert "WARNING" not in chk.stdout + chk.stderr, chk.stdout + chk.stderr
    hap = spoa_support.start_haproxy(procs, cfg, port)

    spoa_support.intention(sim, "api", "web", "deny")
    db_cert, db_key, _ = spoa_support.client_cert(sim, tmp_path, "db")
    api_cert, api_key, _ = spoa_support.client_cert(sim, tmp_path, "api")
    # allowed (no intention for db -> web; the simulator's default, like a dev agent's, is allow); the
    # SPOE backend's health check needs a round before the server is up, so the first calls may be refused
    harness.wait_until(lambda: spoa_support.mtls_call(port, ca, db_cert, db_key) == b"ping\n", 30,
                       what="allowed caller through the intentions-only frontend")
    assert spoa_support.mtls_call(port, ca, api_cert, api_key) is None
    assert spoa_support.mtls_call(port, ca, db_cert, db_key) == b"ping\n"
    # connect-spoa answered for target web (from the message), not for its -target
    log = spoa.log()
    assert re.search(r"caller=spiffe://\S+/svc/api target=web result=deny", log), log[-3000:]
    assert re.search(r"caller=spiffe://\S+/svc/db target=web result=allow", log), log[-3000:]
    assert "target=not-web" not in log, log[-3000:]
    # a caller without a client certificate never reaches the app
    assert spoa_support.mtls_call(port, ca) is None
    assert hap.alive()


def test_intentions_only_fails_closed_without_agent(procs, sim, tmp_path):
    """No connect-spoa listening: set-on-error and the reject rules refuse every caller."""
    echo = spoa_support.start_echo(procs)
    crt, ca = spoa_support.write_server_cert(sim, tmp_path, "web")
    port = harness.free_port()
    spoe = _render("intentions-only.spoe.conf", [], str(tmp_path / "spoe.conf"))
    cfg = _render("intentions-only.cfg", [
        ("bind :21000 ", "bind 127.0.0.1:%d " % port),
        ("/etc/haproxy/connect/leaf.pem", crt),
        ("/etc/haproxy/connect/ca.pem", ca),
        ("/etc/haproxy/connect/spoe.conf", spoe),
        ("127.0.0.1:8080", "127.0.0.1:%d" % echo),
        ("127.0.0.1:12345", "127.0.0.1:%d" % harness.free_port()),
    ], str(tmp_path / "haproxy.cfg"))
    spoa_support.start_haproxy(procs, cfg, port)
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "db")
    for _ in range(3):
        assert spoa_support.mtls_call(port, ca, cert, key) is None
