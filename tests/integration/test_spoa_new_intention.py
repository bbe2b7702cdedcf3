"""A deny intention created while everything runs blocks new connections within one second."""
import time

import spoa_support as ss


def test_new_deny_intention_applies_within_one_second(procs, sim, tmp_path):
    st = ss.setup_stack(procs, sim, tmp_path)
    cert, key, _ = ss.client_cert(sim, tmp_path, "web")
    # Allowed (ACLs disabled: default allow), and now cached.
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    assert ss.mtls_call(st["port"], st["ca"], cert, key) == b"ping\n"
    ss.intention(sim, "web", "db", "deny")
    created = time.monotonic()
    while True:
        got = ss.mtls_call(st["port"], st["ca"], cert, key)
        if got is None:
            break
        assert got == b"ping\n"
        assert time.monotonic() - created <= 1.0, "deny intention not applied within 1 s"
    # And it stays denied.
    assert ss.mtls_call(st["port"], st["ca"], cert, key) is None
    assert "dropped" in st["spoa"].log()
