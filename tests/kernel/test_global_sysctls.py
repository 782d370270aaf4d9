"""A profile that sets global sysctls which exist only in the initial network namespace
(net.core.*, default_qdisc, tcp_congestion_control): apply, verify, restore.

It writes the initial namespace's globals, so it runs only inside the kernel lab VM, whose
kernel is a throwaway; a real host's global sysctls are never touched by a test."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.kernel.markers import INITIAL_NAMESPACE_IN_VM_ONLY
from tests.lab.netns import nodenetctl_main

pytestmark = [pytest.mark.kernel, pytest.mark.root, INITIAL_NAMESPACE_IN_VM_ONLY]

KEYS = ("net.core.netdev_max_backlog", "net.core.default_qdisc",
        "net.ipv4.tcp_congestion_control")


def sysctl(key: str) -> str:
    return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                          check=True).stdout.strip()


def nodenetctl(*args: str) -> subprocess.CompletedProcess:
    """nodenetctl's main in this process (a new interpreter costs 10 s or more under TCG)."""
    return nodenetctl_main(list(args))


def test_initial_namespace_globals_apply_verify_restore(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "globals.yaml").write_text(
        "sysctls:\n"
        "  net.core.netdev_max_backlog: '>=5000'\n"
        "  net.core.default_qdisc: fq\n"
        "  net.ipv4.tcp_congestion_control: bbr\n"
    )
    config = tmp_path / "nodenetd.yaml"
    config.write_text(f"profiles: [globals]\nprofile_dirs: [{tmp_path / 'profiles'}]\n"
                      f"state_dir: {tmp_path / 'state'}\n")
    before = {key: sysctl(key) for key in KEYS}
    assert before["net.core.default_qdisc"] != "fq"
    assert before["net.ipv4.tcp_congestion_control"] != "bbr"

    applied = nodenetctl("apply", "--config", str(config))
    try:
        assert applied.returncode == 0, applied.stderr
        assert sysctl("net.core.default_qdisc") == "fq"
        assert sysctl("net.ipv4.tcp_congestion_control") == "bbr"
        assert int(sysctl("net.core.netdev_max_backlog")) >= 5000
        status = json.loads(nodenetctl("status", "--config", str(config), "-o", "json").stdout)
        assert status["converged"] is True
        assert {e["setting"] for e in status["node"] if e["state"] == "in-sync"} == set(KEYS)
    finally:
        restored = nodenetctl("restore", "--config", str(config))
    assert restored.returncode == 0, restored.stderr
    assert {key: sysctl(key) for key in KEYS} == before
