"""connect-spoa on a unix socket (-listen unix:/path): HAProxy reaches it, health checks pass, decisions hold."""
import os

import spoa_support as ss


def test_unix_socket_listener(procs, sim, tmp_path):
    ss.intention(sim, "web", "db", "deny")
    sock = os.path.join(str(tmp_path), "spoa.sock")
    st = ss.setup_stack(procs, sim, tmp_path, spoa_listen="unix:" + sock)
    assert os.path.exists(sock)
    api = ss.client_cert(sim, tmp_path, "api")
    web = ss.client_cert(sim, tmp_path, "web")
    assert ss.mtls_call(st["port"], st["ca"], api[0], api[1]) == b"ping\n"
    assert ss.mtls_call(st["port"], st["ca"], web[0], web[1]) is None
