"""The built-in profiles in the kernel lab's initial namespace, where their global keys exist
(net.core.*, default_qdisc, busy polling): each applies cleanly, converges, keeps the
socket caps at or above the TCP maxima, and restores every original.

It writes the initial namespace's globals, so it runs only inside the kernel lab VM, whose
kernel is a throwaway; a real host's global sysctls are never touched by a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.lab.netns import REPO

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.root,
    pytest.mark.skipif(
        os.environ.get("NODENETD_KERNEL_LAB") != "vm",
        reason="writes initial-namespace global sysctls: runs only inside the kernel lab VM",
    ),
]

GLOBALS = ("net.core.netdev_max_backlog", "net.core.somaxconn", "net.core.rmem_max",
           "net.core.wmem_max", "net.core.default_qdisc", "net.core.busy_read",
           "net.ipv4.tcp_rmem")


def sysctl(key: str) -> str:
    return " ".join(subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                   check=True).stdout.split())


def nodenetctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nodenetd.cli.main", *args],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("name", ["kubernetes-node", "throughput", "latency"])
def test_builtin_profile_applies_converges_and_restores_with_global_keys(tmp_path, name):
    config = tmp_path / "nodenetd.yaml"
    config.write_text(f"profiles: [{name}]\nstate_dir: {tmp_path / 'state'}\n"
                      f"daemon: {{control_socket: {tmp_path / 'ctl.sock'}}}\n")
    before = {key: sysctl(key) for key in GLOBALS}

    applied = nodenetctl("apply", "--config", str(config))
    try:
        assert applied.returncode == 0, applied.stdout + applied.stderr
        status = json.loads(nodenetctl("status", "--config", str(config), "-o", "json").stdout)
        assert status["converged"] is True, status
        assert int(sysctl("net.core.netdev_max_backlog")) >= 1000
        assert int(sysctl("net.core.somaxconn")) >= 4096
        tcp_max = int(sysctl("net.ipv4.tcp_rmem").split()[-1])
        assert int(sysctl("net.core.rmem_max")) >= tcp_max
        if name == "throughput":
            assert sysctl("net.core.default_qdisc") == "fq"
            assert tcp_max == 16777216
        if name == "latency":
            assert sysctl("net.core.busy_read") == "50"
    finally:
        restored = nodenetctl("restore", "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    assert {key: sysctl(key) for key in GLOBALS} == before
