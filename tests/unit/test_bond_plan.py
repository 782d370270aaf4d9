"""Which writes ``set_options`` sends for a bond as it is, in which order, and what it refuses
before touching the kernel; and how a read-back is judged. Pure logic, no kernel.

The rules come from the kernel (drivers/net/bonding/bond_options.c), seen in the kernel lab:
mode needs the bond down and without members, fail_over_mac needs it without members, delays
are kept in miimon ticks, miimon and arp_interval turn each other off.
"""

from __future__ import annotations

import dataclasses

import pytest

from nodenetd.errors import Refused, Unsupported
from nodenetd.kernel.bond import (
    ArpValidate,
    BondMember,
    BondMode,
    BondOptions,
    BondStatus,
    FailOverMac,
    MemberState,
    MiiStatus,
    PrimaryReselect,
    plan_options,
    verify_options,
)

# What the kernel reports for a fresh active-backup bond with miimon 100 (Linux 6.1).
KERNEL_DEFAULTS = BondOptions(
    mode="active-backup",
    miimon=100,
    updelay=0,
    downdelay=0,
    peer_notif_delay=0,
    primary_reselect="always",
    fail_over_mac="none",
    num_peer_notif=1,
    arp_interval=0,
    arp_ip_target=(),
    arp_validate="none",
    arp_all_targets="any",
    arp_missed_max=2,
    ns_ip6_target=(),
    resend_igmp=1,
)


def member(name: str, index: int, state: MemberState = MemberState.BACKUP) -> BondMember:
    return BondMember(name, index, state, MiiStatus.UP, 0, "02:00:00:00:00:01", 0)


def bond(*, up: bool = True, members: bool = True, **options) -> BondStatus:
    found = (member("m0", 3, MemberState.ACTIVE), member("m1", 5)) if members else ()
    active = {"active_slave": "m0"} if members else {}
    return BondStatus(
        name="bond0",
        index=7,
        admin_up=up,
        carrier=up,
        options=dataclasses.replace(KERNEL_DEFAULTS, **{**active, **options}),
        members=found,
    )


def refusal(current: BondStatus, options: BondOptions) -> Refused:
    with pytest.raises(Refused) as err:
        plan_options(current, options)
    assert err.value.target == "bond0"
    return err.value


# -- BondOptions ------------------------------------------------------------------------------


def test_options_take_names_and_normalise_them():
    options = BondOptions(
        mode="active-backup",
        primary_reselect="failure",
        arp_ip_target=["192.0.2.1"],
        ns_ip6_target=["2001:DB8:0::0001"],
    )

    assert options.mode is BondMode.ACTIVE_BACKUP
    assert options.primary_reselect is PrimaryReselect.FAILURE
    assert options.arp_ip_target == ("192.0.2.1",)
    assert options.ns_ip6_target == ("2001:db8::1",)


def test_only_given_options_are_listed_in_the_kernels_order():
    options = BondOptions(num_peer_notif=3, miimon=50, fail_over_mac="active")

    assert options.given() == {
        "miimon": 50,
        "fail_over_mac": FailOverMac.ACTIVE,
        "num_peer_notif": 3,
    }
    assert BondOptions().given() == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "roundrobin"}, "mode must be one of balance-rr, active-backup"),
        ({"miimon": -1}, "miimon must be within 0..2147483647"),
        ({"miimon": True}, "miimon must be an int"),
        ({"num_peer_notif": 256}, "num_peer_notif must be within 0..255"),
        ({"arp_missed_max": 0}, "arp_missed_max must be within 1..255"),
        ({"resend_igmp": 300}, "resend_igmp must be within 0..255"),
        ({"arp_ip_target": ["2001:db8::1"]}, "is not an IPv4 address"),
        ({"ns_ip6_target": ["192.0.2.1"]}, "is not an IPv6 address"),
        ({"arp_ip_target": "192.0.2.1"}, "must be a sequence of addresses"),
        ({"arp_ip_target": [f"192.0.2.{i}" for i in range(17)]}, "at most 16 targets"),
        ({"arp_ip_target": ["192.0.2.1", "192.0.2.1"]}, "duplicate target"),
        ({"primary": 3}, "primary must be an interface name"),
    ],
)
def test_bad_values_are_rejected_when_the_options_are_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BondOptions(**kwargs)


# -- plan_options: what is sent ---------------------------------------------------------------


def test_options_equal_to_the_bonds_send_nothing():
    current = bond(num_peer_notif=3, primary="m0")

    assert plan_options(current, BondOptions(miimon=100, num_peer_notif=3, primary="m0")) == []
    assert plan_options(current, BondOptions()) == []


def test_only_the_options_that_differ_are_sent_in_the_kernels_order():
    steps = plan_options(
        bond(),
        BondOptions(arp_missed_max=5, num_peer_notif=4, miimon=100, primary_reselect="failure"),
    )

    assert steps == [
        ("primary_reselect", PrimaryReselect.FAILURE),
        ("num_peer_notif", 4),
        ("arp_missed_max", 5),
    ]


def test_active_slave_goes_last_so_a_primary_change_cannot_undo_it():
    steps = plan_options(
        bond(), BondOptions(active_slave="m1", primary="m0", primary_reselect="failure")
    )

    assert [option for option, _ in steps] == ["primary", "primary_reselect", "active_slave"]


def test_clearing_primary_and_active_slave_is_sent_only_when_they_are_set():
    assert plan_options(bond(), BondOptions(primary="")) == []
    assert plan_options(bond(primary="m1"), BondOptions(primary="")) == [("primary", "")]
    assert plan_options(bond(), BondOptions(active_slave="")) == [("active_slave", "")]


def test_a_miimon_change_resends_every_delay_so_they_keep_their_milliseconds():
    current = bond(updelay=200, downdelay=400, peer_notif_delay=0)

    steps = plan_options(current, BondOptions(miimon=50))

    # alone, the kernel would turn 200 ms (2 ticks of 100) into 100 ms (2 ticks of 50)
    assert steps == [("miimon", 50), ("updelay", 200), ("downdelay", 400), ("peer_notif_delay", 0)]


def test_a_miimon_change_takes_given_delays():
    steps = plan_options(bond(updelay=200), BondOptions(miimon=300, updelay=600))

    assert steps == [("miimon", 300), ("updelay", 600), ("downdelay", 0), ("peer_notif_delay", 0)]


def test_turning_miimon_on_sends_every_delay_since_hidden_ticks_may_remain():
    current = bond(miimon=0, arp_interval=100, arp_ip_target=("192.0.2.1",))

    steps = plan_options(current, BondOptions(arp_interval=0, miimon=100, downdelay=200))

    assert steps == [
        ("arp_interval", 0),
        ("miimon", 100),
        ("updelay", 0),
        ("downdelay", 200),
        ("peer_notif_delay", 0),
    ]


def test_switching_to_the_arp_monitor_zeroes_the_delays_first_then_turns_miimon_off():
    current = bond(updelay=200, peer_notif_delay=300)

    steps = plan_options(
        current,
        BondOptions(miimon=0, arp_interval=200, arp_ip_target=("192.0.2.1",), arp_validate="all"),
    )

    assert steps == [
        ("updelay", 0),
        ("peer_notif_delay", 0),
        ("miimon", 0),
        ("arp_interval", 200),
        ("arp_ip_target", ("192.0.2.1",)),
        ("arp_validate", ArpValidate.ALL),
    ]


def test_a_target_list_is_sent_whole_when_it_differs():
    current = bond(arp_ip_target=("192.0.2.1", "192.0.2.2"))

    assert plan_options(current, BondOptions(arp_ip_target=("192.0.2.1", "192.0.2.2"))) == []
    assert plan_options(current, BondOptions(arp_ip_target=())) == [("arp_ip_target", ())]


def test_the_mode_changes_on_a_bond_that_is_down_and_empty():
    steps = plan_options(bond(up=False, members=False), BondOptions(mode="balance-xor"))

    assert steps == [("mode", BondMode.BALANCE_XOR)]


# -- plan_options: what is refused, before anything is sent ------------------------------------


def test_a_mode_change_on_a_bond_with_members_is_refused():
    err = refusal(bond(), BondOptions(mode="balance-rr"))

    assert err.setting == "bond.mode"
    assert "needs a bond without members (it has m0, m1): release them first" in err.reason


def test_a_mode_change_on_a_bond_that_is_up_is_refused():
    err = refusal(bond(members=False), BondOptions(mode="balance-rr"))

    assert err.setting == "bond.mode"
    assert "needs the bond down" in err.reason


def test_fail_over_mac_on_a_bond_with_members_is_refused():
    err = refusal(bond(), BondOptions(fail_over_mac="active"))

    assert err.setting == "bond.fail_over_mac"
    assert "without members" in err.reason
    # the same value is no change, so nothing to refuse
    assert plan_options(bond(), BondOptions(fail_over_mac="none")) == []


def test_both_link_monitors_at_once_are_refused():
    err = refusal(bond(), BondOptions(arp_interval=100, arp_ip_target=("192.0.2.1",)))

    assert err.setting == "bond.arp_interval"
    assert "exclude each other" in err.reason
    assert "set the other to 0 in the same call" in err.reason


def test_a_delay_that_is_not_a_multiple_of_miimon_is_refused():
    err = refusal(bond(), BondOptions(updelay=250))

    assert err.setting == "bond.updelay"
    assert "not a multiple of miimon 100 ms; the kernel would round it down to 200 ms" in (
        err.reason
    )


def test_a_miimon_change_that_a_kept_delay_does_not_fit_is_refused():
    err = refusal(bond(updelay=200), BondOptions(miimon=300))

    assert err.setting == "bond.updelay"
    assert "(kept from before the miimon change)" in err.reason


def test_a_delay_without_the_mii_monitor_is_refused():
    err = refusal(bond(miimon=0), BondOptions(peer_notif_delay=200))

    assert err.setting == "bond.peer_notif_delay"
    assert "needs the MII monitor, but miimon is 0" in err.reason


@pytest.mark.parametrize("option", ["primary", "active_slave"])
def test_a_primary_or_active_member_that_is_not_a_member_is_refused(option):
    err = refusal(bond(), BondOptions(**{option: "eth9"}))

    assert err.setting == f"bond.{option}"
    assert "eth9 is not a member of bond0 (members: m0, m1)" in err.reason


# -- verify_options -----------------------------------------------------------------------------


def test_a_read_back_that_matches_passes():
    after = dataclasses.replace(KERNEL_DEFAULTS, num_peer_notif=4, primary="m0")

    assert verify_options("bond0", [("num_peer_notif", 4), ("primary", "m0")], after) is None
    assert verify_options("bond0", [("active_slave", "")], after) is None  # kernel reselects


def test_an_option_the_kernel_does_not_report_is_unsupported():
    after = dataclasses.replace(KERNEL_DEFAULTS, arp_missed_max=None)

    err = verify_options("bond0", [("num_peer_notif", 1), ("arp_missed_max", 5)], after)

    assert isinstance(err, Unsupported)
    assert err.setting == "bond.arp_missed_max"
    assert "this kernel ignored IFLA_BOND_MISSED_MAX (added in Linux 5.18)" in err.reason


def test_ipv6_targets_a_kernel_drops_are_unsupported():
    err = verify_options("bond0", [("ns_ip6_target", ("2001:db8::1",))], KERNEL_DEFAULTS)

    assert isinstance(err, Unsupported)
    assert err.setting == "bond.ns_ip6_target"


def test_a_value_the_kernel_changed_is_refused():
    after = dataclasses.replace(KERNEL_DEFAULTS, updelay=200)

    err = verify_options("bond0", [("updelay", 250)], after)

    assert isinstance(err, Refused)
    assert "asked for 250, the kernel reports 200" in err.reason
