"""The bond adapter on a kernel without bonding says so, as Unsupported with a way out.

This is the host lane's view of nodenetd.kernel.bond: the kernel lab (tests/kernel) covers the
working path. Skipped where the kernel does have bonding, since there is nothing to refuse.
"""

from __future__ import annotations

import os

import pytest

from nodenetd.errors import Gone, Refused, Unsupported
from nodenetd.kernel.bond import BondAdapter, BondOptions
from tests.kernel_lab.probe import missing_kernel_features

pytestmark = pytest.mark.root


@pytest.fixture
def adapter(netns):
    with BondAdapter(netns=netns.name) as bond:
        yield bond


@pytest.fixture
def no_bonding():
    if "bonding" not in missing_kernel_features():
        pytest.skip("this kernel has bonding; the kernel lab tests cover it")


def test_creating_a_bond_without_bonding_support_is_unsupported(adapter, netns, no_bonding):
    with pytest.raises(Unsupported) as err:
        adapter.create("bond0")

    assert err.value.target == "bond0"
    assert err.value.setting == "create bond (mode active-backup)"
    assert "EOPNOTSUPP" in str(err.value)
    assert "load the 'bonding' module" in str(err.value)
    assert netns.run("ip", "link", "show", "bond0", check=False).returncode != 0


def test_creating_a_bond_with_every_option_is_still_only_unsupported(adapter, netns, no_bonding):
    options = BondOptions(
        miimon=100,
        updelay=200,
        peer_notif_delay=300,
        num_peer_notif=3,
        primary_reselect="failure",
        arp_missed_max=3,
        ns_ip6_target=("2001:db8::1",),
        resend_igmp=2,
    )

    with pytest.raises(Unsupported) as err:
        adapter.create("bond0", options)

    assert "load the 'bonding' module" in err.value.reason


def test_reading_a_missing_bond_is_gone(adapter):
    with pytest.raises(Gone) as err:
        adapter.status("bond0")

    assert (err.value.target, err.value.setting) == ("bond0", "read bond")


def test_enslaving_a_missing_member_is_gone(adapter, netns):
    netns.veth("m0", "s0")

    with pytest.raises(Gone) as err:
        adapter.enslave("bond-missing", "m0")

    assert err.value.target == "bond-missing"


def test_a_link_that_is_not_a_bond_is_refused_not_misread(adapter, netns):
    netns.veth("m0", "s0")

    for call in (adapter.status, adapter.adopt, adapter.set_up, adapter.delete):
        with pytest.raises(Refused) as err:
            call("m0")
        assert err.value.target == "m0"
        assert "not a bond interface (kind veth)" in err.value.reason
    assert netns.link("m0")["ifname"] == "m0"  # delete refused: still there


def test_setting_prio_on_an_interface_outside_any_bond_is_refused(adapter, netns):
    netns.veth("m0", "s0")

    with pytest.raises(Refused) as err:
        adapter.set_member_prio("m0", 10)

    assert (err.value.target, err.value.setting) == ("m0", "bond_slave.prio")
    assert "not a member of a bond" in err.value.reason


def test_options_for_a_missing_bond_are_gone(adapter):
    with pytest.raises(Gone) as err:
        adapter.set_options("bond0", BondOptions(miimon=50))

    assert err.value.target == "bond0"
    with pytest.raises(Gone):
        adapter.set_active("bond0", "m0")


def test_the_adapter_sees_only_its_namespace(netns):
    netns.veth("nnd-only-here", "nnd-peer-here")

    with BondAdapter() as host, pytest.raises(Gone):  # this process's namespace
        host.status("nnd-only-here")
    with BondAdapter(netns=netns.name) as inside, pytest.raises(Refused):
        inside.status("nnd-only-here")  # found there (and it is no bond)


def test_a_missing_namespace_is_gone_not_created():
    with pytest.raises(Gone) as err:
        BondAdapter(netns="nnd-no-such-namespace")

    assert err.value.target == "netns nnd-no-such-namespace"
    assert not os.path.exists("/run/netns/nnd-no-such-namespace")
