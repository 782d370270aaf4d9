"""Peer notification frames: gratuitous ARP and unsolicited NA, against the kernel's own.

The known bytes are what Linux 6.18 itself put on a veth for the same announcements: a node
namespace with ``arp_notify=1`` and ``ndisc_notify=1`` on ``n0`` (192.0.2.10/24,
2001:db8::a/64 and the link-local fe80::ff:fe00:a), whose MAC was then changed to
02:00:00:00:00:0c (NETDEV_CHANGEADDR makes the kernel announce every address, with the same
``inetdev_send_gratuitous_arp`` and ``ndisc_send_unsol_na`` a bond's peer notification uses),
captured on the peer with an AF_PACKET socket; once with ``forwarding=0`` and once with
``net.ipv6.conf.n0.forwarding=1``. The builders must produce those bytes exactly, and the
existing parsers and an independent field-by-field reading must agree on what they say.
"""

from __future__ import annotations

import socket
import struct

import pytest

from nodenetd.failover.notify import NotifyCounters, NotifyError, NotifySettings, PeerNotifier
from nodenetd.health.probes import packets as p

MAC = bytes.fromhex("02000000000c")
IP = socket.inet_pton(socket.AF_INET, "192.0.2.10")
IP6 = socket.inet_pton(socket.AF_INET6, "2001:db8::a")
LL6 = socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:a")

KERNEL_GARP = bytes.fromhex(
    "ffffffffffff02000000000c0806000108000604000102000000000cc000020a000000000000c000020a"
)
KERNEL_UNSOL_NA = bytes.fromhex(
    "33330000000102000000000c86dd6000000000203aff20010db800000000000000000000000a"
    "ff0200000000000000000000000000018800f90d2000000020010db800000000000000000000000a"
    "020102000000000c"
)
KERNEL_UNSOL_NA_LINK_LOCAL = bytes.fromhex(
    "33330000000102000000000c86dd6000000000203afffe80000000000000000000fffe00000a"
    "ff0200000000000000000000000000018800597e20000000fe80000000000000000000fffe00000a"
    "020102000000000c"
)
KERNEL_UNSOL_NA_FORWARDING = bytes.fromhex(
    "33330000000102000000000c86dd6000000000203aff20010db800000000000000000000000a"
    "ff0200000000000000000000000000018800790da000000020010db800000000000000000000000a"
    "020102000000000c"
)
ETH, IP6_HEADER = 14, 40
OTHER_MACS = [bytes.fromhex("020000000001"), bytes.fromhex("52540012abcd"), bytes(6)]
OTHER_IP6 = ["2001:db8::1", "fe80::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", "fd00::1:2"]


# -- gratuitous ARP ------------------------------------------------------------------------


def test_gratuitous_arp_is_byte_for_byte_the_kernels_announcement():
    assert p.build_gratuitous_arp(MAC, IP) == KERNEL_GARP


def test_gratuitous_arp_fields_are_an_rfc_5227_announcement():
    frame = p.build_gratuitous_arp(MAC, IP)
    assert len(frame) == 42  # unpadded: the driver pads to 60, as for the kernel's own
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    assert (dst, src, ethertype) == (b"\xff" * 6, MAC, 0x0806)
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack_from(
        "!HHBBH6s4s6s4s", frame, ETH
    )
    assert (htype, ptype, hlen, plen) == (1, 0x0800, 6, 4)  # Ethernet, IPv4
    assert op == 1  # a request, not a reply
    assert sha == MAC and spa == tpa == IP  # "who has A? tell A"
    assert tha == bytes(6)  # RFC 5227 section 2.1.1: ignored, SHOULD be zero


def test_gratuitous_arp_is_a_request_the_reply_parser_rejects():
    assert p.parse_arp_reply(p.build_gratuitous_arp(MAC, IP)) is None
    assert p.parse_arp_reply(KERNEL_GARP) is None


def test_gratuitous_arp_is_the_arp_request_builder_asking_for_itself():
    for mac in OTHER_MACS:
        for address in ("10.0.0.1", "198.51.100.254"):
            packed = socket.inet_pton(socket.AF_INET, address)
            assert p.build_gratuitous_arp(mac, packed) == p.build_arp_request(mac, packed, packed)


# -- unsolicited neighbour advertisement ---------------------------------------------------


@pytest.mark.parametrize(
    ("address", "router", "kernel"),
    [
        (IP6, False, KERNEL_UNSOL_NA),
        (LL6, False, KERNEL_UNSOL_NA_LINK_LOCAL),
        (IP6, True, KERNEL_UNSOL_NA_FORWARDING),
    ],
    ids=["global", "link-local", "forwarding"],
)
def test_unsolicited_na_is_byte_for_byte_the_kernels(address, router, kernel):
    assert p.build_unsolicited_na(MAC, address, router=router) == kernel


def test_unsolicited_na_fields_follow_rfc_4861_section_7_2_6():
    frame = p.build_unsolicited_na(MAC, IP6)
    assert len(frame) == ETH + IP6_HEADER + 24 + 8
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    assert (dst, src, ethertype) == (bytes.fromhex("333300000001"), MAC, 0x86DD)
    first, length, next_header, hop_limit, source, destination = struct.unpack_from(
        "!IHBB16s16s", frame, ETH
    )
    assert first == 6 << 28  # version 6, traffic class 0, flow label 0
    assert length == 32 and next_header == 58  # ICMPv6, no extension headers
    assert hop_limit == 255  # RFC 4861 section 7.1.2: receivers drop anything else
    assert source == IP6  # the address itself, as ndisc_send_na picks for its own address
    assert destination == socket.inet_pton(socket.AF_INET6, "ff02::1")
    kind, code, _, flags, target = struct.unpack_from("!BBHI16s", frame, ETH + IP6_HEADER)
    assert (kind, code) == (136, 0)
    assert flags == 0x20 << 24  # Override only: Router and Solicited clear, reserved zero
    assert target == IP6
    option = frame[ETH + IP6_HEADER + 24 :]
    assert option == bytes((2, 1)) + MAC  # target link-layer address, 1 x 8 bytes


def test_router_flag_is_the_only_difference_when_forwarding():
    plain = p.build_unsolicited_na(MAC, IP6)
    router = p.build_unsolicited_na(MAC, IP6, router=True)
    flags = ETH + IP6_HEADER + 4
    assert router[flags] == 0xA0 and plain[flags] == 0x20
    differing = [i for i in range(len(plain)) if plain[i] != router[i]]
    assert differing[0] in (flags - 2, flags - 1, flags)  # the checksum and the flags
    assert set(differing) <= {flags - 2, flags - 1, flags}


def test_unsolicited_na_parses_back_with_the_probes_parser():
    for address, router in ((IP6, False), (LL6, False), (IP6, True)):
        advert = p.parse_neighbor_advert(p.build_unsolicited_na(MAC, address, router=router))
        assert advert == p.NeighborAdvert(
            eth_dst=p.ALL_NODES_MAC,
            eth_src=MAC,
            source=address,
            destination=p.ALL_NODES,
            target=address,
            router=router,
            solicited=False,
            override=True,
            target_mac=MAC,
        )


@pytest.mark.parametrize("mac", OTHER_MACS, ids=lambda mac: mac.hex())
@pytest.mark.parametrize("text", OTHER_IP6)
def test_unsolicited_na_checksum_verifies_by_recomputation(mac, text):
    address = socket.inet_pton(socket.AF_INET6, text)
    for router in (False, True):
        frame = p.build_unsolicited_na(mac, address, router=router)
        message = frame[ETH + IP6_HEADER :]
        stored = int.from_bytes(message[2:4], "big")
        zeroed = message[:2] + b"\x00\x00" + message[4:]
        assert p.icmp6_checksum(address, p.ALL_NODES, zeroed) == stored
        # independently: the one's-complement sum over pseudo-header and message, checksum
        # included, is all ones, so the receiver's check (RFC 1071) gives zero
        pseudo = address + p.ALL_NODES + struct.pack("!I3xB", len(message), 58)
        assert p.internet_checksum(pseudo + message) == 0


def test_kernel_checksums_verify_with_the_same_recomputation():
    for frame in (KERNEL_UNSOL_NA, KERNEL_UNSOL_NA_LINK_LOCAL, KERNEL_UNSOL_NA_FORWARDING):
        source = frame[ETH + 8 : ETH + 24]
        message = frame[ETH + IP6_HEADER :]
        pseudo = source + p.ALL_NODES + struct.pack("!I3xB", len(message), 58)
        assert p.internet_checksum(pseudo + message) == 0


# -- settings and arguments ----------------------------------------------------------------


def test_settings_default_to_three_rounds_200_ms_apart():
    assert NotifySettings() == NotifySettings(count=3, interval=0.2)
    assert NotifySettings(count=0).count == 0  # disabled, as num_grat_arp 0
    assert NotifySettings(count=255, interval=0.01).count == 255


@pytest.mark.parametrize(
    ("count", "interval", "message"),
    [
        (-1, 0.2, "outside 0..255"),
        (256, 0.2, "outside 0..255"),
        (True, 0.2, "integer"),
        (2.0, 0.2, "integer"),
        (3, 0, "below the minimum"),
        (3, 0.001, "below the minimum"),
        (3, float("nan"), "below the minimum"),
        (3, float("inf"), "below the minimum"),
        (3, "0.2", "number"),
    ],
)
def test_settings_that_cannot_work_are_refused(count, interval, message):
    with pytest.raises(NotifyError, match=message):
        NotifySettings(count=count, interval=interval)


def test_counters_are_an_immutable_snapshot():
    counters = PeerNotifier("g", NotifySettings()).counters()
    assert counters == NotifyCounters(0, 0, 0, 0)
    with pytest.raises(AttributeError):
        counters.rounds = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mac": b"\x02\x00"}, "not a unicast MAC"),
        ({"mac": bytes.fromhex("333300000001")}, "not a unicast MAC"),
        ({"ipv4": ["224.0.0.1"]}, "not a unicast address"),
        ({"ipv4": ["0.0.0.0"]}, "not a unicast address"),
        ({"ipv4": ["2001:db8::1"]}, "not an IPv4 address"),
        ({"ipv6": ["ff02::1"]}, "not a unicast address"),
        ({"ipv6": ["192.0.2.1"]}, "not an IPv6 address"),
    ],
)
def test_notify_refuses_arguments_that_cannot_work_before_sending(kwargs, message):
    notifier = PeerNotifier("g", NotifySettings(count=1))
    call = {"ipv4": [], "ipv6": [], "reason": "test", **kwargs}
    with pytest.raises(NotifyError, match=message):
        notifier.notify("eth0", **call)
    assert notifier.counters() == NotifyCounters()


def test_nothing_is_sent_when_disabled_or_without_addresses(caplog):
    caplog.set_level("INFO", logger="nodenetd")
    for settings, addresses in ((NotifySettings(count=0), ["192.0.2.1"]), (NotifySettings(), [])):
        notifier = PeerNotifier("g", settings)
        # no socket is opened, so no such interface and no loop are needed
        notifier.notify("no-such-if0", ipv4=addresses, ipv6=[], reason="test")
        assert notifier.counters() == NotifyCounters()
    assert [r.getMessage() for r in caplog.records] == [
        "group g: no peer notification on no-such-if0: disabled (count 0); test",
        "group g: no peer notification on no-such-if0: no addresses to announce; test",
    ]


def test_a_closed_notifier_refuses_to_notify():
    notifier = PeerNotifier("g", NotifySettings(count=1))
    notifier.close()
    notifier.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        notifier.notify("eth0", ipv4=["192.0.2.1"], ipv6=[], reason="test")
