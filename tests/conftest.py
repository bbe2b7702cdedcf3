"""pytest fixtures shared by tests/sim and tests/integration (see tests/harness.py)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


@pytest.fixture
def procs(tmp_path, request):
    """A ProcGroup in tmp_path; every process is stopped at teardown, and logs shown on failure."""
    group = harness.ProcGroup(tmp_path)
    yield group
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write("\n" + group.dump_logs() + "\n")
    group.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def sim(procs, tmp_path):
    """A Consul agent simulator with ACLs disabled (Consul's dev-agent default)."""
    return harness.start_sim(procs, tmp_path)
