"""Probe packets, kernel filters and spec checks: pure functions, no root, no namespaces.

The known bytes are frames the Linux kernel and iputils ping put on a veth between two
namespaces (MACs 02:00:00:00:00:0a and :0b; 192.0.2.10/.11; 2001:db8::a/::b; ping with
``-s 8 -p 6e6f64656e657464`` so its payload is nodenetd's ``nodenetd``). Builders must produce
the kernel's bytes exactly; parsers must read the kernel's replies. The BPF programs run on a
small classic-BPF interpreter against the same frames.

(These are unit tests; they live beside the namespace tests of the probes because this change
may only add files matching tests/integration/test_probes*.py.)
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from nodenetd.health.probes import MIN_INTERVAL, ProbeKind, ProbeSpec, ProbeSpecError
from nodenetd.health.probes import packets as p
from nodenetd.health.probes import sockets as s

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
IP_A = socket.inet_pton(socket.AF_INET, "192.0.2.10")
IP_B = socket.inet_pton(socket.AF_INET, "192.0.2.11")
IP6_A = socket.inet_pton(socket.AF_INET6, "2001:db8::a")
IP6_B = socket.inet_pton(socket.AF_INET6, "2001:db8::b")

# Ethernet frames as captured on A's side.
KERNEL_ARP_REQUEST = bytes.fromhex(
    "ffffffffffff02000000000a0806000108000604000102000000000ac000020a000000000000c000020b"
)
KERNEL_ARP_REPLY = bytes.fromhex(
    "02000000000a02000000000b0806000108000604000202000000000bc000020b02000000000ac000020a"
)
PING_ECHO_REQUEST = bytes.fromhex(
    "02000000000b02000000000a0800450000249b14400040011bafc000020ac000020b"
    "08003cbc05a400016e6f64656e657464"
)
KERNEL_ECHO_REPLY = bytes.fromhex(
    "02000000000a02000000000b080045000024dc0f000040011ab4c000020bc000020a"
    "000044bc05a400016e6f64656e657464"
)
KERNEL_NS = bytes.fromhex(
    "3333ff00000b02000000000a86dd6000000000203aff20010db800000000000000000000000a"
    "ff0200000000000000000001ff00000b87001c030000000020010db800000000000000000000000b"
    "010102000000000a"
)
KERNEL_NA = bytes.fromhex(
    "02000000000a02000000000b86dd6000000000203aff20010db800000000000000000000000b"
    "20010db800000000000000000000000a88008a4d6000000020010db800000000000000000000000b"
    "020102000000000b"
)
PING6_ECHO_REQUEST = bytes.fromhex(
    "02000000000b02000000000a86dd60001dd600103a4020010db800000000000000000000000a"
    "20010db800000000000000000000000b800068e905a500016e6f64656e657464"
)
KERNEL_ECHO6_REPLY = bytes.fromhex(
    "02000000000a02000000000b86dd6007757c00103a4020010db800000000000000000000000b"
    "20010db800000000000000000000000a810067e905a500016e6f64656e657464"
)
ETH, IP6_HEADER = 14, 40


# -- checksums and addresses ---------------------------------------------------------------


def test_internet_checksum_matches_the_rfc_1071_example():
    # RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is ~ddf2
    assert p.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_internet_checksum_pads_an_odd_length_with_a_zero_byte():
    assert p.internet_checksum(b"\x01") == p.internet_checksum(b"\x01\x00") == 0xFEFF


def test_icmp6_checksum_over_the_pseudo_header_matches_ping6():
    message = PING6_ECHO_REQUEST[ETH + IP6_HEADER :]
    zeroed = message[:2] + b"\x00\x00" + message[4:]
    assert p.icmp6_checksum(IP6_A, IP6_B, zeroed) == 0x68E9


def test_solicited_node_group_and_its_mac():
    assert p.solicited_node(IP6_B) == socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:b")
    assert p.solicited_node_mac(IP6_B) == bytes.fromhex("3333ff00000b")


def test_link_local_from_mac_is_the_kernels_eui64_address():
    # the kernel gave the veth with MAC 02:00:00:00:00:0b the address fe80::ff:fe00:b
    assert p.link_local_from_mac(MAC_B) == socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:b")


def test_local_mac_is_a_stable_locally_administered_unicast_address():
    mac = p.local_mac(MAC_A + b"m0")
    assert len(mac) == 6
    assert mac[0] & 0x02 and not mac[0] & 0x01  # locally administered, unicast
    assert mac == p.local_mac(MAC_A + b"m0") != p.local_mac(MAC_A + b"m1")


def test_mac_text_round_trip_and_rejects_garbage():
    assert p.parse_mac("02:00:00:00:00:0A") == MAC_A
    assert p.format_mac(MAC_A) == "02:00:00:00:00:0a"
    with pytest.raises(ValueError, match="not a MAC"):
        p.parse_mac("02:00:00")


# -- ICMP echo -----------------------------------------------------------------------------


def test_echo_request_is_byte_for_byte_pings():
    assert p.build_echo_request(0x05A4, 1) == PING_ECHO_REQUEST[ETH + 20 :]


def test_echo_reply_parses_from_the_ip_datagram_a_raw_socket_reads():
    reply = p.parse_echo_reply(KERNEL_ECHO_REPLY[ETH:])
    assert reply == p.EchoReply(IP_B, 0x05A4, 1, b"nodenetd")


def test_echo_request_is_not_a_reply():
    assert p.parse_echo_reply(PING_ECHO_REQUEST[ETH:]) is None


def test_echo_reply_parser_rejects_truncated_and_non_icmp_datagrams():
    datagram = KERNEL_ECHO_REPLY[ETH:]
    assert p.parse_echo_reply(datagram[:27]) is None
    udp = datagram[:9] + b"\x11" + datagram[10:]
    assert p.parse_echo_reply(udp) is None


def test_echo_reply_honours_ip_options():
    datagram = bytearray(KERNEL_ECHO_REPLY[ETH:])
    datagram[0] = 0x46  # a 24-byte header: one word of options (NOPs) before the ICMP
    with_options = bytes(datagram[:20]) + b"\x01\x01\x01\x00" + bytes(datagram[20:])
    assert p.parse_echo_reply(with_options) == p.EchoReply(IP_B, 0x05A4, 1, b"nodenetd")


def test_echo6_request_leaves_the_checksum_to_the_kernel():
    expected = PING6_ECHO_REQUEST[ETH + IP6_HEADER :]
    built = p.build_echo6_request(0x05A5, 1)
    assert built == expected[:2] + b"\x00\x00" + expected[4:]


def test_echo6_reply_parses_from_the_message_a_raw_socket_reads():
    reply = p.parse_echo6_reply(KERNEL_ECHO6_REPLY[ETH + IP6_HEADER :])
    assert reply == p.EchoReply(b"", 0x05A5, 1, b"nodenetd")
    assert p.parse_echo6_reply(PING6_ECHO_REQUEST[ETH + IP6_HEADER :]) is None


# -- ARP -----------------------------------------------------------------------------------


def test_arp_request_is_byte_for_byte_the_kernels():
    assert p.build_arp_request(MAC_A, IP_A, IP_B) == KERNEL_ARP_REQUEST


def test_unicast_arp_request_goes_to_the_given_mac():
    frame = p.build_arp_request(MAC_A, IP_A, IP_B, MAC_B)
    assert frame[:6] == MAC_B
    assert frame[6:] == KERNEL_ARP_REQUEST[6:]


def test_arp_reply_parses():
    assert p.parse_arp_reply(KERNEL_ARP_REPLY) == p.ArpReply(MAC_A, MAC_B, IP_B, MAC_A, IP_A)


def test_arp_parser_ignores_requests_padding_and_short_frames():
    assert p.parse_arp_reply(KERNEL_ARP_REQUEST) is None
    assert p.parse_arp_reply(KERNEL_ARP_REPLY[:40]) is None
    padded = KERNEL_ARP_REPLY + bytes(18)  # a 60-byte frame from a real NIC
    assert p.parse_arp_reply(padded) == p.parse_arp_reply(KERNEL_ARP_REPLY)


# -- neighbour discovery -------------------------------------------------------------------


def test_neighbor_solicit_is_byte_for_byte_the_kernels():
    assert p.build_neighbor_solicit(MAC_A, IP6_A, IP6_B) == KERNEL_NS


def test_unicast_neighbor_solicit_goes_to_the_target_itself():
    frame = p.build_neighbor_solicit(MAC_A, IP6_A, IP6_B, MAC_B)
    assert frame[:6] == MAC_B
    assert frame[ETH + 24 : ETH + 40] == IP6_B  # IPv6 destination
    message = frame[ETH + IP6_HEADER :]
    assert p.icmp6_checksum(IP6_A, IP6_B, message) == 0  # a valid checksum sums to zero


def test_neighbor_solicit_from_unspecified_has_no_source_option_and_stays_multicast():
    frame = p.build_neighbor_solicit(MAC_A, p.UNSPECIFIED6, IP6_B, MAC_B)
    assert frame[:6] == bytes.fromhex("3333ff00000b")
    message = frame[ETH + IP6_HEADER :]
    assert len(message) == 24  # type, code, checksum, reserved, target: no options
    assert p.icmp6_checksum(p.UNSPECIFIED6, p.solicited_node(IP6_B), message) == 0


def test_neighbor_advert_parses_flags_and_target_mac():
    advert = p.parse_neighbor_advert(KERNEL_NA)
    assert advert == p.NeighborAdvert(
        eth_dst=MAC_A,
        eth_src=MAC_B,
        source=IP6_B,
        destination=IP6_A,
        target=IP6_B,
        router=False,
        solicited=True,
        override=True,
        target_mac=MAC_B,
    )


def test_neighbor_advert_parser_rejects_what_rfc_4861_says_to_drop():
    assert p.parse_neighbor_advert(KERNEL_NS) is None  # a solicitation
    forwarded = bytearray(KERNEL_NA)
    forwarded[ETH + 7] = 254  # hop limit below 255: came through a router
    assert p.parse_neighbor_advert(bytes(forwarded)) is None
    zero_option = KERNEL_NA[:-8] + b"\x02\x00" + KERNEL_NA[-6:]
    assert p.parse_neighbor_advert(zero_option) is None


def test_neighbor_advert_options_stop_at_the_ipv6_payload_length():
    # trailing bytes past the payload (padding) are not read as options
    padded = KERNEL_NA + bytes.fromhex("0201ffffffffffff")
    assert p.parse_neighbor_advert(padded).target_mac == MAC_B


# -- kernel filters ------------------------------------------------------------------------


def run_bpf(program: bytes, packet: bytes) -> int:
    """A classic BPF interpreter for the instructions the probe filters use."""
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x28:
            a = int.from_bytes(packet[k : k + 2], "big")
        elif code == 0x30:
            a = packet[k]
        elif code == 0x48:
            a = int.from_bytes(packet[x + k : x + k + 2], "big")
        elif code == 0x50:
            a = packet[x + k]
        elif code == 0xB1:
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def test_echo_filter_passes_only_echo_replies_with_our_identifier():
    assert run_bpf(s.echo_reply_program(0x05A4), KERNEL_ECHO_REPLY[ETH:]) > 0
    assert run_bpf(s.echo_reply_program(0x05A5), KERNEL_ECHO_REPLY[ETH:]) == 0
    assert run_bpf(s.echo_reply_program(0x05A4), PING_ECHO_REQUEST[ETH:]) == 0


def test_echo6_filter_passes_only_echo_replies_with_our_identifier():
    reply = KERNEL_ECHO6_REPLY[ETH + IP6_HEADER :]
    assert run_bpf(s.echo6_reply_program(0x05A5), reply) > 0
    assert run_bpf(s.echo6_reply_program(0x05A4), reply) == 0
    assert run_bpf(s.echo6_reply_program(0x05A5), PING6_ECHO_REQUEST[ETH + IP6_HEADER :]) == 0


def test_arp_filter_passes_replies_not_requests():
    assert run_bpf(s.arp_reply_program(), KERNEL_ARP_REPLY) > 0
    assert run_bpf(s.arp_reply_program(), KERNEL_ARP_REQUEST) == 0


def test_neighbor_filter_passes_adverts_only():
    assert run_bpf(s.neighbor_advert_program(), KERNEL_NA) > 0
    for other in (KERNEL_NS, KERNEL_ECHO6_REPLY, KERNEL_ARP_REPLY):
        assert run_bpf(s.neighbor_advert_program(), other) == 0


# -- specs and sources ---------------------------------------------------------------------


def test_spec_defaults_the_timeout_to_the_interval_and_normalises_addresses():
    spec = ProbeSpec("ns", "2001:DB8:0::0:1", interval=0.01)
    assert spec.kind is ProbeKind.NS
    assert spec.target == "2001:db8::1"
    assert spec.timeout == 0.01
    assert spec.key == (ProbeKind.NS, "2001:db8::1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "ping", "target": "192.0.2.1"}, "unknown kind"),
        ({"kind": "icmp", "target": "2001:db8::1"}, "not an IPv4 address"),
        ({"kind": "ns", "target": "192.0.2.1"}, "not an IPv6 address"),
        ({"kind": "arp", "target": "example.net"}, "not an IP address"),
        ({"kind": "ns", "target": "ff02::1"}, "unicast"),
        ({"kind": "icmp", "target": "192.0.2.1", "interval": 0.001}, "below the minimum"),
        ({"kind": "icmp", "target": "192.0.2.1", "timeout": 0}, "timeout must be positive"),
        ({"kind": "arp", "target": "192.0.2.1", "source": "2001:db8::1"}, "source"),
    ],
)
def test_spec_rejects_what_cannot_work(kwargs, message):
    with pytest.raises(ProbeSpecError, match=message):
        ProbeSpec(**kwargs)


def test_the_minimum_interval_is_ten_milliseconds():
    assert MIN_INTERVAL == 0.01
    assert ProbeSpec("icmp", "192.0.2.1", interval=0.01).interval == 0.01


def iface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(text)


def test_source_prefers_the_members_address_in_the_targets_prefix():
    facts = s.MemberFacts(
        "eth1", 3, "02:00:00:00:00:01", (iface("198.51.100.2/24"), iface("192.0.2.2/24"))
    )
    assert facts.source_for(ipaddress.ip_address("192.0.2.1")) == iface("192.0.2.2/24")
    assert facts.source_for(ipaddress.ip_address("203.0.113.1")) == iface("198.51.100.2/24")


def test_ipv6_source_falls_back_to_link_local_then_to_the_master():
    facts = s.MemberFacts(
        "eth1",
        3,
        None,
        (iface("2001:db8:1::2/64"), iface("fe80::1/64")),
        master="bond0",
        master_addresses=(iface("192.0.2.9/24"),),
    )
    assert facts.source_for(ipaddress.ip_address("2001:db8:2::1")) == iface("fe80::1/64")
    assert facts.source_for(ipaddress.ip_address("192.0.2.1")) == iface("192.0.2.9/24")


def test_no_source_at_all_is_none():
    facts = s.MemberFacts("eth1", 3, None)
    assert facts.source_for(ipaddress.ip_address("192.0.2.1")) is None
