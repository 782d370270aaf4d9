"""The bond adapter's wire format, without a kernel: options encoded to known bytes, and
messages recorded from a real kernel decoded.

The recorded RTM_NEWLINK replies come from Debian's 6.1 kernel in the kernel lab (bonds built
with ``ip link add ... type bond ...``, read with RTM_GETLINK); the statistics, IFLA_MAP and
IFLA_AF_SPEC attributes were cut out for size, everything else is the kernel's bytes. pyroute2
0.9.7 cannot decode attributes 28, 30, 31 of the bond nor the slave's prio (9): these bytes are
the proof that nodenetd's own tables do.
"""

from __future__ import annotations

import struct

import pytest

from nodenetd.kernel.bond import (
    ArpAllTargets,
    ArpValidate,
    BondMember,
    BondMode,
    BondOptions,
    FailOverMac,
    MemberState,
    MiiStatus,
    PrimaryReselect,
    decode_bond_link,
    encode_bond_data,
    encode_slave_data,
)
from nodenetd.kernel.netlink import iter_attrs

# b1: ip link add b1 type bond mode active-backup miimon 100 updelay 200 downdelay 300
#     peer_notify_delay 400 num_grat_arp 4 resend_igmp 3 fail_over_mac active
#     primary_reselect better arp_missed_max 5 ns_ip6_target 2001:db8::1,2001:db8::2
#     arp_ip_target 192.0.2.1,192.0.2.2 arp_all_targets all
# then m0 (ifindex 3) and m1 (ifindex 5) enslaved, primary m0, bond up.
BOND_MII = bytes.fromhex(
    "2402000010000000010000002501000000000100070000004314010000000000070003006231000008000d00"
    "e80300000500100006000000050011000000000008000400dc050000080032004400000008003300ffff0000"
    "08001b000000000008001e000000000008003d000000000008001f001000000008002800ffff000008002900"
    "0000010008003a000000010008003b00f8ff070008003c00ffff000008002000100000000500210001000000"
    "0c0006006e6f717565756500080023000200000008002f000100000008003000010000000500270000000000"
    "0a00010096485708542a00000a000200ffffffffffff00000c002b0005000200000000002401120009000100"
    "626f6e64000000001401020005000100010000000800020003000000080003006400000008000400c8000000"
    "080005002c01000008001c0090010000050006000100000008000700000000001400080008000000c0000201"
    "08000100c0000202080009000000000008000a00010000002c001f801400000020010db80000000000000000"
    "000000011400010020010db800000000000000000000000208000b000300000005000c000100000005000d00"
    "0100000005000e000000000008000f0003000000050010000400000005001100000000000800120000000000"
    "0800130001000000080014000100000005001d00010000000500150000000000050016000000000005001b00"
    "0100000005001e00050000000500200001000000"
)

# b2: ip link add b2 type bond mode active-backup arp_interval 100
#     arp_ip_target 192.0.2.1,192.0.2.2 ns_ip6_target 2001:db8::1 arp_validate all
#     arp_all_targets all arp_missed_max 3          (no members)
BOND_ARP = bytes.fromhex(
    "0002000010000000010000001a01000000000100080000000214000000000000070003006232000008000d00"
    "e80300000500100002000000050011000000000008000400dc050000080032004400000008003300ffff0000"
    "08001b000000000008001e000000000008003d000000000008001f001000000008002800ffff000008002900"
    "0000010008003a000000010008003b000000010008003c00ffff000008002000100000000500210000000000"
    "090006006e6f6f7000000000080023000100000008002f000000000008003000010000000500270000000000"
    "0a000100ea24633cfa5300000a000200ffffffffffff00000c002b0005000200000000000001120009000100"
    "626f6e6400000000f00002000500010001000000080003000000000008000400000000000800050000000000"
    "08001c0000000000050006000100000008000700640000001400080008000000c000020108000100c0000202"
    "080009000300000008000a000100000018001f801400000020010db800000000000000000000000105000c00"
    "0000000005000d000000000005000e000000000008000f000100000005001000010000000500110000000000"
    "08001200000000000800130001000000080014000100000005001d0001000000050015000000000005001600"
    "0000000005001b000100000005001e00030000000500200001000000"
)

# m1 enslaved to b1 (ifindex 7), then: ip link set m1 type bond_slave prio -5
MEMBER_M1 = bytes.fromhex(
    "6c01000010000000010000002401000000000100050000004318010000000000070003006d31000008000d00"
    "e80300000500100006000000050011000000000008000400dc050000080032004400000008003300ffff0000"
    "08001b000000000008001e000000000008003d000000000008001f000100000008002800ffff000008002900"
    "0000010008003a000000010008003b00f8ff070008003c00ffff0000080020000100000008000a0007000000"
    "05002100010000000c0006006e6f717565756500080023000400000008002f00020000000800300002000000"
    "05002700000000000a000100ee057ca18de000000a000200ffffffffffff00000c002b000500020000000000"
    "5400120009000100766574680000000009000400626f6e640000000038000500050001000100000005000200"
    "0000000008000300000000000a000400ee057ca18de00000060005000000000008000900fbffffff08002500"
    "000000000800050004000000"
)


@pytest.mark.parametrize(
    ("options", "wire"),
    [
        (BondOptions(mode="active-backup"), "05000100 01000000"),
        (BondOptions(mode=BondMode.IEEE8023AD), "05000100 04000000"),
        (BondOptions(miimon=100), "08000300 64000000"),
        (BondOptions(updelay=200), "08000400 c8000000"),
        (BondOptions(downdelay=300), "08000500 2c010000"),
        (BondOptions(peer_notif_delay=400), "08001c00 90010000"),  # 28: not in pyroute2
        (BondOptions(arp_interval=100), "08000700 64000000"),
        (BondOptions(arp_validate="filter_backup"), "08000900 06000000"),
        (BondOptions(arp_all_targets=ArpAllTargets.ALL), "08000a00 01000000"),
        (BondOptions(primary_reselect="failure"), "05000c00 02000000"),
        (BondOptions(fail_over_mac="follow"), "05000d00 02000000"),
        (BondOptions(resend_igmp=3), "08000f00 03000000"),
        (BondOptions(num_peer_notif=4), "05001000 04000000"),
        (BondOptions(arp_missed_max=5), "05001e00 05000000"),  # 30: not in pyroute2
        # the target nests: entries numbered 0, 1, ... holding addresses in network order,
        # byte for byte what the kernel dumps (see BOND_MII)
        (
            BondOptions(arp_ip_target=("192.0.2.1", "192.0.2.2")),
            "14000800 08000000 c0000201 08000100 c0000202",
        ),
        (
            BondOptions(ns_ip6_target=("2001:db8::1",)),  # 31: not in pyroute2
            "18001f00 14000000 20010db8 00000000 00000000 00000001",
        ),
        (BondOptions(arp_ip_target=()), "04000800"),  # an empty nest clears the list
    ],
)
def test_each_option_encodes_to_the_kernels_layout(options, wire):
    assert encode_bond_data(options).hex() == wire.replace(" ", "")


def test_members_are_sent_by_ifindex_and_an_empty_name_clears():
    ifindex = {"m0": 3, "m1": 5}

    assert encode_bond_data([("primary", "m1")], ifindex).hex() == "08000b0005000000"
    assert encode_bond_data([("active_slave", "m0")], ifindex).hex() == "0800020003000000"
    assert encode_bond_data([("active_slave", "")], ifindex).hex() == "0800020000000000"


def test_options_are_encoded_in_the_kernels_order_whatever_order_they_were_given_in():
    options = BondOptions(arp_missed_max=2, num_peer_notif=1, miimon=50, mode="active-backup")

    assert encode_bond_data(options).hex() == (
        "0500010001000000" "0800030032000000" "0500100001000000" "05001e0002000000"
    )


@pytest.mark.parametrize(
    ("prio", "wire"),
    [(10, "080009000a000000"), (-5, "08000900fbffffff"), (-(2**31), "0800090000000080")],
)
def test_member_prio_is_a_signed_32_bit_attribute_9(prio, wire):
    assert encode_slave_data(prio).hex() == wire


def test_a_recorded_mii_bond_decodes_to_every_option():
    options = decode_bond_link(BOND_MII, names={3: "m0", 5: "m1"})

    assert options == BondOptions(
        mode=BondMode.ACTIVE_BACKUP,
        active_slave="m0",
        miimon=100,
        updelay=200,
        downdelay=300,
        peer_notif_delay=400,
        primary="m0",
        primary_reselect=PrimaryReselect.BETTER,
        fail_over_mac=FailOverMac.ACTIVE,
        num_peer_notif=4,
        arp_interval=0,
        arp_ip_target=("192.0.2.1", "192.0.2.2"),
        arp_validate=ArpValidate.NONE,
        arp_all_targets=ArpAllTargets.ALL,
        arp_missed_max=5,
        ns_ip6_target=("2001:db8::1", "2001:db8::2"),
        resend_igmp=3,
    )


def test_a_recorded_arp_bond_decodes_without_members():
    options = decode_bond_link(BOND_ARP)

    assert (options.miimon, options.arp_interval, options.arp_missed_max) == (0, 100, 3)
    assert options.arp_ip_target == ("192.0.2.1", "192.0.2.2")
    assert options.ns_ip6_target == ("2001:db8::1",)
    assert options.arp_validate is ArpValidate.ALL
    assert (options.primary, options.active_slave) == (None, None)  # the kernel omits both
    assert (options.updelay, options.downdelay, options.peer_notif_delay) == (0, 0, 0)


def test_a_recorded_member_decodes_with_its_prio():
    member = decode_bond_link(MEMBER_M1)

    assert member == BondMember(
        name="m1",
        index=5,
        state=MemberState.BACKUP,
        mii_status=MiiStatus.UP,
        link_failure_count=0,
        perm_hwaddr="ee:05:7c:a1:8d:e0",
        prio=-5,
        admin_up=True,
        carrier=True,
    )


def test_an_unknown_active_ifindex_is_named_by_its_number():
    assert decode_bond_link(BOND_MII).active_slave == "ifindex 3"


def test_what_a_kernel_does_not_report_reads_as_none_or_empty():
    # BOND_MII without peer_notif_delay (28), missed_max (30) and ns_ip6_target (31): what an
    # older kernel sends. Cut them out and fix up the nest and message lengths.
    start = BOND_MII.index(bytes.fromhex("09000100626f6e6400000000"))  # IFLA_INFO_KIND "bond"
    data_at = start + 12
    data_len, _ = struct.unpack_from("=HH", BOND_MII, data_at)
    kept = b""
    for atype, begin, end in iter_attrs(BOND_MII, data_at + 4, data_at + data_len):
        if atype not in (28, 30, 31):
            raw = BOND_MII[begin - 4 : end]
            kept += raw + b"\0" * (-len(raw) & 3)
    shrink = data_len - 4 - len(kept)
    msg = bytearray(BOND_MII[:data_at] + struct.pack("=HH", 4 + len(kept), 2) + kept)
    msg += BOND_MII[data_at + data_len :]
    info_at = start - 4  # IFLA_LINKINFO's header
    struct.pack_into("=H", msg, info_at, struct.unpack_from("=H", msg, info_at)[0] - shrink)
    struct.pack_into("=I", msg, 0, len(msg))

    options = decode_bond_link(bytes(msg), names={3: "m0"})

    assert (options.peer_notif_delay, options.arp_missed_max) == (None, None)
    assert options.ns_ip6_target == ()
    assert options.miimon == 100
