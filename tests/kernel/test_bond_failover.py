"""Kernel bonding through nodenetd's adapter: create, enslave, fail over, move, release.

The node's bond has two veth members whose peers live in a 'switch' namespace. Pulling a
switch port down drops the member's carrier, as a dead cable or switch port would. Every
result is read twice: through the adapter (netlink) and through ``ip -j -d link`` (the
independent witness).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from nodenetd.errors import Gone, Refused
from nodenetd.kernel.bond import BondAdapter, BondOptions, BondStatus, MemberState, MiiStatus
from tests.lab.netns import Netns

pytestmark = [pytest.mark.kernel, pytest.mark.root]

MEMBERS = {"m0": "s0", "m1": "s1"}  # member on the node -> its port on the switch


@dataclass
class BondLab:
    node: Netns
    switch: Netns
    bond: BondAdapter

    def witness(self, name: str) -> dict:
        """``ip -j -d link show NAME`` inside the node namespace."""
        return self.node.link(name)

    def wait_for(self, what: str, check: Callable[[BondStatus], bool], timeout: float = 15.0):
        """Poll the adapter until ``check`` holds (monotonic deadline); the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.bond.status("bond0")
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {status}")
            time.sleep(0.05)


@pytest.fixture
def lab(make_netns) -> Iterator[BondLab]:
    node, switch = make_netns("node"), make_netns("switch")
    for member, port in MEMBERS.items():
        node.veth(member, port, peer_ns=switch)
    with BondAdapter(netns=node.name) as adapter:
        adapter.create_active_backup("bond0", BondOptions(miimon=50, updelay=0, downdelay=0))
        for member in MEMBERS:
            adapter.enslave("bond0", member)
        adapter.set_up("bond0")
        lab = BondLab(node, switch, adapter)
        lab.wait_for(
            "an active member and both members up",
            lambda s: (
                s.active_member is not None and all(m.mii_status is MiiStatus.UP for m in s.members)
            ),
        )
        yield lab


def test_bond_is_created_with_its_options(lab):
    status = lab.bond.status("bond0")
    data = lab.witness("bond0")["linkinfo"]["info_data"]

    options = status.options
    assert (status.mode, data["mode"]) == ("active-backup", "active-backup")
    assert (options.miimon, data["miimon"]) == (50, 50)
    assert (options.updelay, options.downdelay) == (data["updelay"], data["downdelay"]) == (0, 0)
    assert [m.name for m in status.members] == ["m0", "m1"]
    for member in status.members:
        assert lab.witness(member.name)["master"] == "bond0"


def test_kernel_moves_active_member_when_its_switch_port_goes_down(lab):
    before = lab.bond.status("bond0")
    first = before.active_member
    other = next(name for name in MEMBERS if name != first)
    assert before.member(first).state is MemberState.ACTIVE
    assert before.member(other).state is MemberState.BACKUP
    assert lab.witness("bond0")["linkinfo"]["info_data"]["active_slave"] == first

    lab.switch.run("ip", "link", "set", MEMBERS[first], "down")
    after = lab.wait_for(f"failover away from {first}", lambda s: s.active_member == other)

    assert after.member(other).state is MemberState.ACTIVE
    assert after.member(first).state is MemberState.BACKUP
    assert after.member(first).mii_status is MiiStatus.DOWN
    assert after.member(first).link_failure_count >= 1
    assert lab.witness("bond0")["linkinfo"]["info_data"]["active_slave"] == other
    slave = lab.witness(first)["linkinfo"]["info_slave_data"]
    assert (slave["state"], slave["mii_status"]) == ("BACKUP", "DOWN")


def test_set_active_moves_the_active_member_on_request(lab):
    other = next(name for name in MEMBERS if name != lab.bond.status("bond0").active_member)

    lab.bond.set_active("bond0", other)

    assert lab.bond.status("bond0").active_member == other
    assert lab.witness("bond0")["linkinfo"]["info_data"]["active_slave"] == other


def test_set_active_to_a_member_without_link_is_refused(lab):
    first = lab.bond.status("bond0").active_member
    other = next(name for name in MEMBERS if name != first)
    lab.switch.run("ip", "link", "set", MEMBERS[other], "down")
    lab.wait_for(f"{other} down", lambda s: s.member(other).mii_status is MiiStatus.DOWN)

    with pytest.raises(Refused) as err:
        lab.bond.set_active("bond0", other)

    assert (err.value.target, err.value.setting) == ("bond0", "bond.active_slave")
    assert f"make {other} active" in err.value.reason
    assert lab.bond.status("bond0").active_member == first


def test_release_detaches_a_member(lab):
    lab.bond.release("m1")

    assert [m.name for m in lab.bond.status("bond0").members] == ["m0"]
    assert "master" not in lab.witness("m1")


def test_creating_an_existing_bond_is_refused(lab):
    with pytest.raises(Refused) as err:
        lab.bond.create_active_backup("bond0")

    assert err.value.target == "bond0"
    assert "EEXIST" in str(err.value)
    assert "bonding" not in err.value.reason  # the module hint is only for EOPNOTSUPP


def test_delete_removes_the_bond_and_frees_its_members(lab):
    lab.bond.delete("bond0")

    with pytest.raises(Gone):
        lab.bond.status("bond0")
    for member in MEMBERS:
        assert "master" not in lab.witness(member)
