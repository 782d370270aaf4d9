"""Apply, verify, idempotence and restore for every setting kind veth supports, read back
through independent tools (ip -j -d link, ethtool -k/-l, sysctl -n) and nodenetd's status."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root

PROFILE = """\
sysctls:
  net.ipv4.tcp_slow_start_after_idle: 0
  net.core.somaxconn: ">=8192"
  net.ipv4.tcp_rmem: "4096 131072 16777216"
interfaces:
  - name: lab-nics
    match: {name: ["lab*"]}
    mtu: 9000
    txqueuelen: 5000
    state: up
    features:
      gro: true
      tso: false
      tx-generic-segmentation: false
    channels: {rx: 2, tx: 2}
    sysctls:
      net.ipv4.conf.IF.rp_filter: 2
      net.ipv6.conf.IF.accept_ra: 0
"""


def witness(node, nic: str) -> dict:
    """Everything the profile touches, as the standard tools report it."""
    link = node.ns.link(nic)
    features = node.ns.features(nic)
    channels = node.ns.channels(nic)
    return {
        "mtu": link["mtu"],
        "txqlen": link["txqlen"],
        "up": "UP" in link["flags"],
        "gro": features["generic-receive-offload"],
        "tso": features["tx-tcp-segmentation"],
        "gso": features["generic-segmentation-offload"],
        "channels": (channels["rx"], channels["tx"]),
        "rp_filter": node.ns.sysctl(f"net.ipv4.conf.{nic}.rp_filter"),
        "accept_ra": node.ns.sysctl(f"net.ipv6.conf.{nic}.accept_ra"),
    }


def node_sysctls(node) -> dict:
    keys = ("net.ipv4.tcp_slow_start_after_idle", "net.core.somaxconn", "net.ipv4.tcp_rmem")
    return {key: node.ns.sysctl(key) for key in keys}


def test_apply_verify_idempotent_restore(node):
    nics = node.nics(2)
    node.ns.run("ip", "link", "set", "lab1", "down")  # admin state is managed too
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"])
    before = {nic: witness(node, nic) for nic in nics}
    before_sysctls = node_sysctls(node)
    assert before["lab1"]["up"] is False

    plan = node.ctl("plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stderr  # changes pending
    assert "lab0" in plan.stdout and "link.mtu" in plan.stdout and "1500" in plan.stdout

    applied = node.ctl("apply")
    assert applied.returncode == 0, applied.stderr

    for nic in nics:
        assert witness(node, nic) == {
            "mtu": 9000,
            "txqlen": 5000,
            "up": True,
            "gro": "on",
            "tso": "off",
            "gso": "off",
            "channels": ("2", "2"),
            "rp_filter": "2",
            "accept_ra": "0",
        }
    assert node_sysctls(node) == {
        "net.ipv4.tcp_slow_start_after_idle": "0",
        "net.core.somaxconn": "8192",
        "net.ipv4.tcp_rmem": "4096 131072 16777216",
    }

    status = node.ctl_json("status")
    assert status["converged"] is True
    states = {s["state"] for d in status["interfaces"].values() for s in d["settings"]}
    assert states == {"in-sync"}
    assert set(status["interfaces"]) == set(nics)  # only lab* is managed, not lo

    again = node.ctl("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout
    assert "Nothing to change" in again.stdout
    second = node.ctl_json("apply")
    assert second["applied"] == []

    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stderr
    assert {nic: witness(node, nic) for nic in nics} == before
    assert node_sysctls(node) == before_sysctls
    assert node.journal["originals"] == {}


def test_second_profile_never_overwrites_the_first_original(node):
    node.nics(1)
    node.write_profile("big", "interfaces: [{match: {name: lab0}, mtu: 9000}]\n")
    node.write_profile("mid", "interfaces: [{match: {name: lab0}, mtu: 4000}]\n")
    node.write_config(["big"])
    assert node.ctl("apply").returncode == 0
    node.write_config(["mid"])
    assert node.ctl("apply").returncode == 0
    assert node.ns.link("lab0")["mtu"] == 4000
    assert node.journal["originals"]["link/lab0/mtu"]["value"] == 1500
    assert node.ctl("restore").returncode == 0
    assert node.ns.link("lab0")["mtu"] == 1500


def test_floor_only_raises(node):
    node.write_profile("floor", "sysctls: {net.core.somaxconn: '>=128'}\n")
    node.write_config(["floor"])
    node.ns.run("sysctl", "-qw", "net.core.somaxconn=5000")
    plan = node.ctl_json("plan")
    assert plan["changes"] == []
    assert node.ctl("apply").returncode == 0
    assert node.ns.sysctl("net.core.somaxconn") == "5000"


def test_restore_forgets_interfaces_that_are_gone(node):
    node.nics(2)
    node.write_profile("p", "interfaces: [{match: {name: 'lab*'}, txqueuelen: 2000}]\n")
    node.write_config(["p"])
    assert node.ctl("apply").returncode == 0
    node.ns.run("ip", "link", "del", "lab1")
    result = node.ctl_json("restore")
    assert [r["device"] for r in result["restored"]] == ["lab0"]
    assert [g["device"] for g in result["gone"]] == ["lab1"]
    assert result["failed"] == []
    assert node.ns.link("lab0")["txqlen"] == 1000
    assert node.journal["originals"] == {}
