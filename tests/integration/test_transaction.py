"""The transaction never leaves a node half-configured: rollback on a real kernel refusal,
recovery after kill -9 mid-apply, unsupported settings skipped (or fatal with --strict),
one mutator at a time, and bad input that changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.lab.netns import REPO

pytestmark = pytest.mark.root


def wait_stopped(pid: int, timeout: float = 60) -> None:
    """Wait until the process froze itself at the failpoint (state T in /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)
    raise AssertionError("nodenetctl never reached the failpoint")


def start_frozen_apply(node, after_writes: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "NODENETD_FAILPOINT_STOP_AFTER_WRITES": str(after_writes)}
    argv = node.ns.python_argv("nodenetd.cli.main", "apply", "--config", str(node.config))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_stopped(proc.pid)
    return proc


def test_refused_change_rolls_back_every_earlier_change(node):
    node.nics(1)
    node.ns.run("ip", "link", "add", "link", "lab0", "name", "mv0", "type", "macvlan")
    node.write_profile("p", """\
        sysctls:
          net.core.somaxconn: 8192
        interfaces:
          - match: {name: lab0}
            txqueuelen: 3000
            features: {gro: true}
          - match: {name: mv0}
            mtu: 9000            # above its lower device's MTU: the kernel says EINVAL
    """)
    node.write_config(["p"])
    somaxconn = node.ns.sysctl("net.core.somaxconn")
    gro = node.ns.features("lab0")["generic-receive-offload"]

    result = node.ctl("apply")

    assert result.returncode == 1
    assert "mv0 link.mtu" in result.stderr and "EINVAL" in result.stderr
    assert "rolled back" in result.stderr
    assert node.ns.sysctl("net.core.somaxconn") == somaxconn
    assert node.ns.link("lab0")["txqlen"] == 1000
    assert node.ns.features("lab0")["generic-receive-offload"] == gro
    assert node.ns.link("mv0")["mtu"] == 1500
    assert node.journal["originals"] == {} and node.journal["pending"] is None


def test_kill9_mid_apply_then_restore_returns_exactly_the_originals(node):
    nics = node.nics(40, queues=2)
    node.write_profile("p", """\
        sysctls: {net.ipv4.tcp_slow_start_after_idle: 0}
        interfaces:
          - match: {name: "lab*"}
            mtu: 4000
            txqueuelen: 2500
            features: {gro: true, gso: false}
            channels: {rx: 1, tx: 1}
            sysctls: {net.ipv4.conf.IF.rp_filter: 1}
    """)
    node.write_config(["p"])

    def snapshot():
        return {n: (node.ns.link(n)["mtu"], node.ns.link(n)["txqlen"],
                    node.ns.features(n)["generic-receive-offload"],
                    node.ns.sysctl(f"net.ipv4.conf.{n}.rp_filter")) for n in nics}

    before = snapshot()
    proc = start_frozen_apply(node, after_writes=90)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    middle = snapshot()
    mtu_changed = [n for n in nics if middle[n][0] != before[n][0]]
    assert 0 < len(mtu_changed) < len(nics)  # killed in the middle of the link writes
    assert node.journal["pending"] is not None
    status = node.ctl("status")
    assert "INTERRUPTED apply" in status.stdout

    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stderr
    assert snapshot() == before
    assert node.ns.sysctl("net.ipv4.tcp_slow_start_after_idle") == "1"
    assert node.journal["originals"] == {} and node.journal["pending"] is None


def test_next_apply_undoes_an_interrupted_one_first(node):
    node.nics(3)
    node.write_profile("p", "interfaces: [{match: {name: 'lab*'}, txqueuelen: 2222}]\n")
    node.write_config(["p"])
    proc = start_frozen_apply(node, after_writes=1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = node.ctl("apply")
    assert result.returncode == 0, result.stderr
    assert "undid an interrupted earlier apply" in result.stdout
    assert [node.ns.link(f"lab{i}")["txqlen"] for i in range(3)] == [2222] * 3
    assert node.journal["pending"] is None


def test_unsupported_settings_are_skipped_with_reason_or_fatal_when_strict(node):
    node.nics(1)
    node.write_profile("p", """\
        interfaces:
          - match: {name: lab0}
            mtu: 2000
            rings: {rx: 512}
            coalesce: {rx-usecs: 10}
    """)
    node.write_config(["p"])

    strict = node.ctl("apply", "--strict")
    assert strict.returncode == 1
    assert "rings.rx" in strict.stderr and "strict" in strict.stderr
    assert node.ns.link("lab0")["mtu"] == 1500  # nothing applied

    plan = node.ctl_json("plan")
    reasons = {s["setting"]: s["reason"] for s in plan["skipped"]}
    assert set(reasons) == {"rx", "rx-usecs"}
    assert "ring" in reasons["rx"] and "coalesc" in reasons["rx-usecs"]

    lenient = node.ctl("apply")
    assert lenient.returncode == 0, lenient.stderr
    assert "skipped" in lenient.stdout
    assert node.ns.link("lab0")["mtu"] == 2000


def test_fixed_feature_is_skipped_not_failed(node):
    node.nics(1)
    fixed = node.ns.run("ethtool", "-k", "lab0").stdout
    assert "large-receive-offload: off [fixed]" in fixed
    node.write_profile("p", "interfaces: [{match: {name: lab0}, features: {lro: true}}]\n")
    node.write_config(["p"])
    plan = node.ctl_json("plan")
    assert [(s["setting"], s["reason"]) for s in plan["skipped"]] == [
        ("rx-lro", "fixed off by the driver")
    ]
    assert node.ctl("apply").returncode == 0


def test_only_one_mutator_at_a_time(node):
    node.nics(1)
    node.write_profile("p", "interfaces: [{match: {name: lab0}, txqueuelen: 1234}]\n")
    node.write_config(["p"])
    holder = start_frozen_apply(node, after_writes=0)
    try:
        loser = node.ctl("apply")
        assert loser.returncode == 4
        assert f"pid {holder.pid}" in loser.stderr
        assert node.ctl("restore").returncode == 4
        assert node.ctl("plan").returncode == 0  # read-only commands need no lock
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert node.ctl("apply").returncode == 0  # the lock died with its holder


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("interfaces: [{match: {name: lab0}, mtu: nine}]\n", "p.yaml:1"),
        ("interfaces: [{match: {name: lab0}, features: {groo: true}}]\n", "did you mean 'gro'"),
        ("sysctls: {net.core.somaxconn: 8192}\nbogus: 1\n", "p.yaml:2"),
        ("interfaces:\n  - match: {name: lab0}\n    channels: {rx: maxx}\n", "p.yaml:3"),
    ],
)
def test_bad_profile_changes_nothing(node, profile, message):
    node.nics(1)
    node.write_profile("p", profile)
    node.write_config(["p"])
    somaxconn = node.ns.sysctl("net.core.somaxconn")
    result = node.ctl("apply")
    assert result.returncode == 3
    assert message in result.stderr
    assert "nothing was changed" in result.stderr
    assert node.ns.sysctl("net.core.somaxconn") == somaxconn
    assert node.ns.link("lab0")["mtu"] == 1500
    assert not (node.state_dir / "journal.log").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("profiles: [nosuch]\n", "unknown profile 'nosuch'"),
        ("profile: [p]\n", "did you mean 'profiles'"),
        ("profiles: [p]\nstrict: maybe\n", "nodenetd.yaml:4: strict"),
    ],
)
def test_bad_node_config_changes_nothing(node, config, message):
    node.nics(1)
    node.write_profile("p", "interfaces: [{match: {name: lab0}, mtu: 2000}]\n")
    node.config.write_text(f"profile_dirs: [{node.root / 'profiles'}]\n"
                           f"state_dir: {node.state_dir}\n" + config)
    result = node.ctl("apply")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr
    assert node.ns.link("lab0")["mtu"] == 1500
    assert not (node.state_dir / "journal.log").exists()


def test_dry_run_plans_under_the_lock_and_changes_nothing(node):
    node.nics(1)
    node.write_profile("p", "interfaces: [{match: {name: lab0}, mtu: 2000}]\n")
    node.write_config(["p"])
    result = node.ctl("apply", "--dry-run")
    assert result.returncode == 0
    assert "dry run: nothing was changed" in result.stdout and "link.mtu" in result.stdout
    assert node.ns.link("lab0")["mtu"] == 1500
    assert not (node.state_dir / "journal.log").exists()


def test_validate_reports_every_issue_with_file_and_line(node):
    good = node.write_profile("good", "sysctls: {net.core.somaxconn: '>=4096'}\n")
    bad = node.write_profile("bad", "interfaces:\n  - match: {name: x}\n    mtuu: 9000\n"
                                    "    features: {tsoo: true}\n")
    ok = node.ns.nodenetctl("validate", str(good))
    assert ok.returncode == 0 and "valid" in ok.stdout
    result = node.ns.nodenetctl("validate", str(good), str(bad))
    assert result.returncode == 3
    assert f"{bad}:3" in result.stderr and "did you mean 'mtu'" in result.stderr
    assert f"{bad}:4" in result.stderr and "did you mean 'tso'" in result.stderr
