"""An upstream server presenting a valid mesh certificate of ANOTHER service is refused (verifyhost)."""
import os
import ssl
import subprocess
import sys

import harness
import spoa_support
from certsync_support import Mesh, call, ddir, passing, register  # noqa: F401 - ddir is a fixture

TLS_ECHO = r'''
import socket, ssl, sys, threading
port, crt, key, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(crt, key)
ctx.load_verify_locations(ca)
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("127.0.0.1", port))
def serve(c):
    try:
        s = ctx.wrap_socket(c, server_side=True)
        while True:
            d = s.recv(65536)
            if not d:
                break
            s.sendall(d)
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def test_wrong_service_identity_refused(procs, sim, ddir, tmp_path):  # noqa: F811
    m = Mesh(procs, sim, ddir)
    m.wait_flowing()
    # an impostor: a valid leaf of the mesh CA, but for "db", registered as a redis proxy
    cert, key, _ = spoa_support.client_cert(sim, tmp_path, "db")
    ca = tmp_path / "roots.pem"
    ca.write_text(spoa_support.roots_pem(sim))
    port = harness.free_port()
    script = tmp_path / "tls_echo.py"
    script.write_text(TLS_ECHO)
    procs.start("impostor", [harness.PYTHON, str(script), str(port), cert, key, str(ca)])
    harness.wait_until(lambda: harness.port_open(port), 10, what="impostor listening")
    # only the impostor is left for redis
    passing(sim, "redis-sidecar-proxy", "critical")
    register(sim, {"ID": "fake-redis-proxy", "Name": "fake-redis-proxy", "Kind": "connect-proxy", "Port": port,
                   "Proxy": {"DestinationServiceName": "redis", "LocalServicePort": 1},
                   "Check": {"TTL": "1h"}})
    passing(sim, "fake-redis-proxy")
    from certsync_support import ready_servers
    harness.wait_until(lambda: ready_servers(m.web_dir) == {"127.0.0.1:%d" % port}, 10, what="impostor in slot")
    for _ in range(5):
        assert call(m.local) is None
    # the genuine redis back: traffic flows again
    passing(sim, "redis-sidecar-proxy", "passing")
    passing(sim, "fake-redis-proxy", "critical")
    m.wait_flowing()
