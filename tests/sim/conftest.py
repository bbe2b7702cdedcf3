"""Fixtures for the simulator's own tests (tests/sim). The shared `procs` and `sim` fixtures are in
tests/conftest.py; here: a module-wide simulator for read-mostly tests and a factory for special ones."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import harness  # noqa: E402


@pytest.fixture(scope="module")
def msim(tmp_path_factory, request):
    """One simulator (ACLs off, Consul 1.4.4) shared by the tests of a module: use distinct service names."""
    d = tmp_path_factory.mktemp("msim")
    group = harness.ProcGroup(d)
    try:
        yield harness.start_sim(group, d)
    finally:
        group.close()


@pytest.fixture
def start_sim(procs, tmp_path):
    """start_sim(*args, master_token=None, name=...) -> harness.Sim, stopped at teardown."""
    counter = [0]

    def start(*args, master_token=None, name=None):
        counter[0] += 1
        return harness.start_sim(procs, tmp_path, list(args), master_token=master_token,
                                 name=name or "consul-sim-%d" % counter[0])
    return start
