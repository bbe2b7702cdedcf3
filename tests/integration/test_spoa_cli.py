"""connect-spoa's command line: -help, bad flags (exit 2 with usage), a port in use (exit 1)."""
import socket
import subprocess

import spoa_support as ss

FLAGS = ["-listen", "-target", "-http-addr", "-token", "-token-file", "-log-level", "-metrics-addr",
         "-decision-timeout", "-cache-ttl", "-stale-if-error", "-cache-size", "-help"]
ENV = ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONNECT_PROXY_TOKEN",
       "CONSUL_PROXY_TOKEN", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY", "CONSUL_CACERT", "CONSUL_CAPATH",
       "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY", "CONSUL_TLS_SERVER_NAME"]


def run(*args, timeout=10):
    return subprocess.run([ss.harness.bin_path("connect-spoa")] + list(args), capture_output=True, text=True,
                          timeout=timeout)


def test_help_documents_every_flag_and_variable():
    for form in ("-help", "--help", "-h"):
        r = run(form)
        assert r.returncode == 0
        for word in FLAGS + ENV:
            assert word in r.stdout, word


def test_bad_flags_exit_2_with_usage():
    for args in (["-no-such-flag"], ["--listen"], ["-decision-timeout", "soon"], ["-cache-size", "0"],
                 ["-cache-size=-3"], ["-log-level", "loud"], ["stray"], ["-stale-if-error", "1x"]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert "Usage: connect-spoa" in r.stderr, args
        assert r.stdout == ""


def test_port_in_use_exits_1_with_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run("-listen", "127.0.0.1:%d" % port, "-target", "db", "-http-addr", "127.0.0.1:1")
    assert r.returncode == 1
    assert "127.0.0.1:%d" % port in r.stderr
    assert "in use" in r.stderr.lower()


def test_double_dash_and_equals_forms_start(procs, sim):
    port = ss.harness.free_port()
    p = procs.start("spoa", [ss.harness.bin_path("connect-spoa"), "--listen=127.0.0.1:%d" % port,
                             "--target=db", "--http-addr", sim.http_addr, "-decision-timeout=250ms",
                             "-cache-ttl", "1m30s", "-stale-if-error=0", "-cache-size", "10"])
    ss.harness.wait_until(lambda: "listening on" in p.log() or not p.alive(), 10, what="listening")
    assert p.alive(), p.log()
    assert "decision timeout 0.25 s, cache ttl 90 s, stale-if-error 0 s, cache size 10" in p.log()
