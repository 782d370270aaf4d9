"""The built-in profiles in the kernel lab's initial namespace, where their global keys exist
(net.core.*, default_qdisc, busy polling): each applies cleanly, converges and restores
every original; where a profile raises the TCP buffer maxima (throughput), the socket caps
(rmem_max) follow.

It writes the initial namespace's globals, so it runs only inside the kernel lab VM, whose
kernel is a throwaway; a real host's global sysctls are never touched by a test."""

from __future__ import annotations

import subprocess

import pytest

from nodenetd.tuning import engine
from nodenetd.tuning.session import KernelSession
from tests.kernel.markers import INITIAL_NAMESPACE_IN_VM_ONLY

pytestmark = [pytest.mark.kernel, pytest.mark.root, INITIAL_NAMESPACE_IN_VM_ONLY]

GLOBALS = ("net.core.netdev_max_backlog", "net.core.somaxconn", "net.core.rmem_max",
           "net.core.wmem_max", "net.core.default_qdisc", "net.core.busy_read",
           "net.ipv4.tcp_rmem")


def sysctl(key: str) -> str:
    return " ".join(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                   check=True).stdout.split())


@pytest.mark.parametrize("name", ["kubernetes-node", "throughput", "latency"])
def test_builtin_profile_applies_converges_and_restores_with_global_keys(tmp_path, name):
    config = tmp_path / "nodenetd.yaml"
    config.write_text(f"profiles: [{name}]\nstate_dir: {tmp_path / 'state'}\n"
                      f"daemon: {{control_socket: {tmp_path / 'ctl.sock'}}}\n")
    before = {key: sysctl(key) for key in GLOBALS}
    loaded = engine.load(str(config))  # in-process: a Python start costs ~10 s under TCG

    outcome = engine.apply(loaded)
    try:
        assert outcome.result.applied, "the VM's defaults differ from every profile"
        with KernelSession() as session:
            again = engine.compute_plan(loaded, session)
        assert again.changes == [], again.changes
        assert int(sysctl("net.core.netdev_max_backlog")) >= 1000
        assert int(sysctl("net.core.somaxconn")) >= 4096
        if name == "throughput":  # it raises tcp_rmem: the socket cap follows (constraints)
            tcp_max = int(sysctl("net.ipv4.tcp_rmem").split()[-1])
            assert tcp_max == 16777216
            assert int(sysctl("net.core.rmem_max")) >= tcp_max
            assert sysctl("net.core.default_qdisc") == "fq"
        if name == "latency":
            assert sysctl("net.core.busy_read") == "50"
    finally:
        report = engine.restore_state(loaded.state_dir)
    assert not report.failed, report.failed
    assert {key: sysctl(key) for key in GLOBALS} == before
