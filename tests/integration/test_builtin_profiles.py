"""The built-in profiles validate, plan and apply cleanly in a namespace lab, and the keys
others own are left to them: kube-proxy's conntrack keys are never written by
kubernetes-node, even when they differ, unless a node takes one over explicitly.

(In a non-initial namespace the global net.core keys do not exist: they are planned as
skipped here; the kernel-lab check with them is still to come.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodenetd.config.loader import builtin_profile_dir

pytestmark = pytest.mark.root

BUILTIN = ("kubernetes-node", "throughput", "latency")
EXAMPLES = sorted((Path(builtin_profile_dir()) / "examples").glob("*.yaml"))


def builtin_config(node, profiles, extra=""):
    """A node config using the built-in profile directory (no profile_dirs of its own)."""
    node.config.write_text(f"profiles: {json.dumps(profiles)}\nstate_dir: {node.state_dir}\n"
                           f"daemon: {{control_socket: {node.root / 'ctl.sock'}}}\n" + extra)


@pytest.mark.parametrize("name", BUILTIN)
def test_each_builtin_profile_validates_plans_applies_and_restores(node, name):
    node.nics(2)
    builtin_config(node, [name])
    before = node.ns.sysctl("net.core.somaxconn")

    assert node.ctl("validate", str(Path(builtin_profile_dir()) / f"{name}.yaml")).returncode == 0
    plan = node.ctl_json("plan")
    applied = node.ctl("apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = node.ctl_json("plan")

    assert plan["changes"], "the lab's defaults differ from every profile somewhere"
    assert again["changes"] == []
    assert node.ns.sysctl("net.ipv4.ip_forward") == "1"
    assert int(node.ns.sysctl("net.core.somaxconn")) >= 4096
    skipped = {s["setting"]: s["reason"] for s in plan["skipped"]}
    assert "no such key" in skipped["net.core.netdev_max_backlog"]  # global: kernel lab only
    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stderr
    assert node.ns.sysctl("net.core.somaxconn") == before


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_example_node_configs_validate(node, path):
    assert EXAMPLES, "examples are shipped"
    proc = node.ctl("validate", str(path))
    assert proc.returncode == 0, proc.stderr


def test_kube_proxys_conntrack_keys_are_left_to_it_even_when_they_differ(node):
    builtin_config(node, ["kubernetes-node"], "overrides:\n  sysctls:\n"
                   "    net.netfilter.nf_conntrack_tcp_timeout_established: 86400\n")
    conntrack_max = node.ns.sysctl("net.netfilter.nf_conntrack_max")
    timeout = node.ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_established")
    assert int(conntrack_max) < 524288 and timeout != "86400"  # both differ from the profile

    plan = node.ctl_json("plan")
    applied = node.ctl("apply")

    assert applied.returncode == 0, applied.stderr
    owned = {s["setting"]: s["reason"] for s in plan["owned"]}
    assert set(owned) == {"net.netfilter.nf_conntrack_max",
                          "net.netfilter.nf_conntrack_tcp_timeout_established"}
    assert all(reason.startswith("owned by kube-proxy") for reason in owned.values())
    assert "override: kube-proxy" in owned["net.netfilter.nf_conntrack_max"]
    assert node.ns.sysctl("net.netfilter.nf_conntrack_max") == conntrack_max
    assert node.ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_established") == timeout
    assert not [k for k in node.journal["originals"] if "conntrack" in k]
    text = node.ctl("plan").stdout
    assert "left to their owners (never written):" in text


def test_an_explicit_override_takes_a_key_over_from_its_owner(node):
    builtin_config(node, ["kubernetes-node"], "overrides:\n  sysctls:\n"
                   "    net.netfilter.nf_conntrack_tcp_timeout_established:\n"
                   "      {enforce: 86400, override: kube-proxy}\n")

    applied = node.ctl("apply")

    assert applied.returncode == 0, applied.stderr
    assert node.ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_established") == "86400"
    assert node.ctl("restore").returncode == 0
    assert node.ns.sysctl("net.netfilter.nf_conntrack_tcp_timeout_established") != "86400"


def test_observe_only_keys_are_reported_and_never_written(node):
    node.nics(1)
    builtin_config(node, ["kubernetes-node"], "overrides:\n  sysctls:\n"
                   "    net.ipv4.tcp_fin_timeout: {observe: 5}\n")
    before = node.ns.sysctl("net.ipv4.tcp_fin_timeout")
    assert before != "5"

    plan = node.ctl_json("plan")
    assert node.ctl("apply").returncode == 0
    status = node.ctl_json("status")

    assert [(o["setting"], o["desired"]) for o in plan["observed"]] == [
        ("net.ipv4.tcp_fin_timeout", "5")]
    assert node.ns.sysctl("net.ipv4.tcp_fin_timeout") == before
    states = {e["setting"]: e["state"] for e in status["node"]}
    assert states["net.ipv4.tcp_fin_timeout"] == "observed"
    assert status["converged"] is True  # observing is not drift to correct
