"""Probe packets: pure builders and parsers, no sockets, no clocks.

Addresses are packed bytes here (4 for IPv4, 16 for IPv6, 6 for a MAC): the prober converts
the configured strings once, and the hot path compares bytes. Every parser returns ``None``
for anything that is not the reply it looks for, so a socket can feed it whatever arrives.

What each probe puts on the wire:

- ICMP echo request (IPv4): type 8, identifier, sequence, an 8-byte payload ``nodenetd``.
  The raw socket's kernel adds the IP header; the ICMP checksum is ours.
- ICMPv6 echo request: type 128, same fields. The kernel always computes the ICMPv6 checksum
  on raw ICMPv6 sockets (RFC 3542 section 3.1), so the builder leaves it zero.
- ARP request: a whole Ethernet frame (a packet socket sends frames), broadcast unless the
  target's MAC is known, when it goes unicast as the kernel's own NUD probes do.
- Neighbour solicitation: a whole Ethernet + IPv6 frame with hop limit 255 and the source
  link-layer address option, to the target's solicited-node multicast group, or unicast to
  the target once its MAC is known. The checksum (over the IPv6 pseudo-header) is ours.

And what peer notification after a failover (``nodenetd.failover.notify``) announces:

- Gratuitous ARP: an ARP request "who has A, tell A" (sender and target IP both the announced
  address, target MAC zero, Ethernet broadcast): byte for byte what the kernel sends for a
  bond's peer notification (``inetdev_send_gratuitous_arp``) and RFC 5227 section 2.3 calls
  an ARP announcement.
- Unsolicited neighbour advertisement (RFC 4861 section 7.2.6): from the address itself to
  all-nodes, hop limit 255, Override set, Solicited clear, the target link-layer address
  option; byte for byte the kernel's ``ndisc_send_unsol_na``.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

__all__ = [
    "BROADCAST_MAC",
    "ECHO_PAYLOAD",
    "ArpReply",
    "EchoReply",
    "NeighborAdvert",
    "build_arp_request",
    "build_echo6_request",
    "build_echo_request",
    "build_gratuitous_arp",
    "build_neighbor_solicit",
    "build_unsolicited_na",
    "format_mac",
    "icmp6_checksum",
    "internet_checksum",
    "link_local_from_mac",
    "local_mac",
    "parse_arp_reply",
    "parse_echo6_reply",
    "parse_echo_reply",
    "parse_mac",
    "parse_neighbor_advert",
    "solicited_node",
    "solicited_node_mac",
]

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

ICMP_ECHO_REPLY = 0
ICMP_ECHO_REQUEST = 8
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58

ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2

ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
NA_FLAG_ROUTER = 0x80
NA_FLAG_SOLICITED = 0x40
NA_FLAG_OVERRIDE = 0x20

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
UNSPECIFIED6 = bytes(16)

# Every echo carries this payload; a reply must bring it back unchanged.
ECHO_PAYLOAD = b"nodenetd"

_ETH = struct.Struct("!6s6sH")
_ECHO = struct.Struct("!BBHHH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_NS = struct.Struct("!BBHI16s")  # type, code, checksum, reserved (flags for NA), target


class EchoReply(NamedTuple):
    """An ICMP or ICMPv6 echo reply; ``source`` is packed, and empty for ICMPv6 (the raw
    ICMPv6 socket gives the source as the sender address, not in the message)."""

    source: bytes
    ident: int
    seq: int
    payload: bytes


class ArpReply(NamedTuple):
    eth_dst: bytes
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes


class NeighborAdvert(NamedTuple):
    eth_dst: bytes
    eth_src: bytes
    source: bytes
    destination: bytes
    target: bytes
    router: bool
    solicited: bool
    override: bool
    target_mac: bytes | None  # the target link-layer address option, when present


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum of 16-bit words, as it goes into the header."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp6_checksum(source: bytes, destination: bytes, message: bytes) -> int:
    """ICMPv6 checksum over the IPv6 pseudo-header (RFC 8200 section 8.1) and the message,
    whose own checksum field must be zero."""
    pseudo = source + destination + struct.pack("!I3xB", len(message), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + message)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(part, 16) for part in parts)


def format_mac(mac: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in mac)


def local_mac(seed: bytes) -> bytes:
    """A locally administered unicast MAC derived from ``seed`` (the same seed, the same
    MAC): for a member that has no MAC of its own to probe with."""
    digest = hashlib.sha256(b"nodenetd probe mac " + seed).digest()
    return bytes(((digest[0] & 0xFC) | 0x02,)) + digest[1:6]


def link_local_from_mac(mac: bytes) -> bytes:
    """fe80::/64 with the modified EUI-64 interface identifier of ``mac`` (RFC 4291
    appendix A): the universal/local bit flipped, ff:fe in the middle."""
    identifier = bytes((mac[0] ^ 0x02,)) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return bytes.fromhex("fe80000000000000") + identifier


# ICMP echo -------------------------------------------------------------------------------


def build_echo_request(ident: int, seq: int, payload: bytes = ECHO_PAYLOAD) -> bytes:
    """An ICMP (IPv4) echo request with its checksum."""
    header = _ECHO.pack(ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = internet_checksum(header + payload)
    return _ECHO.pack(ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


def build_echo6_request(ident: int, seq: int, payload: bytes = ECHO_PAYLOAD) -> bytes:
    """An ICMPv6 echo request with a zero checksum, which the raw socket's kernel fills in."""
    return _ECHO.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload


def parse_echo_reply(datagram: bytes) -> EchoReply | None:
    """An IPv4 datagram as a raw ICMP socket reads it (IP header included)."""
    if len(datagram) < 20 + _ECHO.size or datagram[0] >> 4 != 4:
        return None
    header_len = (datagram[0] & 0x0F) * 4
    if datagram[9] != IPPROTO_ICMP or len(datagram) < header_len + _ECHO.size:
        return None
    kind, code, _, ident, seq = _ECHO.unpack_from(datagram, header_len)
    if kind != ICMP_ECHO_REPLY or code != 0:
        return None
    return EchoReply(datagram[12:16], ident, seq, datagram[header_len + _ECHO.size :])


def parse_echo6_reply(message: bytes) -> EchoReply | None:
    """An ICMPv6 message as a raw ICMPv6 socket reads it (no IPv6 header)."""
    if len(message) < _ECHO.size:
        return None
    kind, code, _, ident, seq = _ECHO.unpack_from(message)
    if kind != ICMP6_ECHO_REPLY or code != 0:
        return None
    return EchoReply(b"", ident, seq, message[_ECHO.size :])


# ARP -------------------------------------------------------------------------------------


def build_arp_request(
    src_mac: bytes, src_ip: bytes, target_ip: bytes, dst_mac: bytes = BROADCAST_MAC
) -> bytes:
    """An Ethernet frame with an ARP request "who has target_ip, tell src_ip".

    ``src_ip`` may be 0.0.0.0 (an RFC 5227 probe: the target still answers, to src_mac).
    No padding to 60 bytes: the driver pads short frames, as for the kernel's own ARP.
    """
    return _ETH.pack(dst_mac, src_mac, ETH_P_ARP) + _ARP.pack(
        ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REQUEST, src_mac, src_ip, ZERO_MAC, target_ip
    )


def build_gratuitous_arp(src_mac: bytes, address: bytes) -> bytes:
    """An ARP announcement of ``address`` at ``src_mac``: a broadcast request with sender IP =
    target IP = ``address`` and a zero target MAC (RFC 5227 section 2.3).

    The request form, not the reply form, because every ARP implementation processes a
    broadcast request (RFC 826's merge step runs before the opcode is looked at; RFC 5227
    section 3 explains why announcements are requests), and Linux takes a gratuitous *reply*
    only if its target MAC equals its sender MAC (``arp_is_garp``). The kernel's own bond peer
    notification and arp_notify send exactly this frame. keepalived differs only in a target
    MAC of ff:ff:ff:ff:ff:ff, which receivers ignore.
    """
    return build_arp_request(src_mac, address, address)


def parse_arp_reply(frame: bytes) -> ArpReply | None:
    """An Ethernet frame as a packet socket reads it; only IPv4-over-Ethernet ARP replies."""
    if len(frame) < _ETH.size + _ARP.size:
        return None
    eth_dst, _, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen, op) != (ARPHRD_ETHER, ETH_P_IP, 6, 4, ARPOP_REPLY):
        return None
    return ArpReply(eth_dst, sha, spa, tha, tpa)


# Neighbour discovery ---------------------------------------------------------------------


def solicited_node(address: bytes) -> bytes:
    """The solicited-node multicast address ff02::1:ff00:0/104 plus the low 24 bits of an
    IPv6 address (RFC 4291 section 2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + address[13:]


def solicited_node_mac(address: bytes) -> bytes:
    """33:33 plus the low 32 bits of the solicited-node group (RFC 2464 section 7)."""
    return b"\x33\x33\xff" + address[13:]


def build_neighbor_solicit(
    src_mac: bytes,
    source: bytes,
    target: bytes,
    dst_mac: bytes | None = None,
) -> bytes:
    """An Ethernet frame with a neighbour solicitation for ``target``.

    Multicast to the target's solicited-node group unless ``dst_mac`` is given; then unicast
    to the target itself (a NUD probe, RFC 4861 section 7.2.2). With an unspecified source
    (::) the message carries no source link-layer option (RFC 4861 section 4.3) and may only
    be multicast; the target then answers to all-nodes.
    """
    unspecified = source == UNSPECIFIED6
    if unspecified or dst_mac is None:
        destination, dst_mac = solicited_node(target), solicited_node_mac(target)
    else:
        destination = target
    options = b"" if unspecified else bytes((ND_OPT_SOURCE_LLADDR, 1)) + src_mac
    message = _NS.pack(ND_NEIGHBOR_SOLICIT, 0, 0, 0, target) + options
    checksum = icmp6_checksum(source, destination, message)
    message = message[:2] + checksum.to_bytes(2, "big") + message[4:]
    ip6 = _IP6.pack(6 << 28, len(message), IPPROTO_ICMPV6, 255, source, destination)
    return _ETH.pack(dst_mac, src_mac, ETH_P_IPV6) + ip6 + message


def build_unsolicited_na(src_mac: bytes, address: bytes, *, router: bool = False) -> bytes:
    """An Ethernet frame with an unsolicited neighbour advertisement of ``address`` at
    ``src_mac`` (RFC 4861 section 7.2.6), as the kernel's ``ndisc_send_unsol_na`` sends it:
    from ``address`` itself to all-nodes (ff02::1, 33:33:00:00:00:01), hop limit 255,
    Override set (replace a cached link-layer address), Solicited clear (it asserts no
    reachability), the target link-layer address option carrying ``src_mac``.

    ``router``: the Router flag, which the kernel and keepalived set when the interface
    forwards IPv6. It must tell the truth: a neighbour that sees it clear for a router it
    knows removes that router from its default router list (RFC 4861 section 7.2.5).
    """
    flags = NA_FLAG_OVERRIDE | (NA_FLAG_ROUTER if router else 0)
    option = bytes((ND_OPT_TARGET_LLADDR, 1)) + src_mac
    message = _NS.pack(ND_NEIGHBOR_ADVERT, 0, 0, flags << 24, address) + option
    checksum = icmp6_checksum(address, ALL_NODES, message)
    message = message[:2] + checksum.to_bytes(2, "big") + message[4:]
    ip6 = _IP6.pack(6 << 28, len(message), IPPROTO_ICMPV6, 255, address, ALL_NODES)
    return _ETH.pack(ALL_NODES_MAC, src_mac, ETH_P_IPV6) + ip6 + message


def parse_neighbor_advert(frame: bytes) -> NeighborAdvert | None:
    """An Ethernet frame as a packet socket reads it; only neighbour advertisements that
    RFC 4861 section 7.1.2 lets a node accept (hop limit 255, code 0, no extension
    headers). The checksum is not verified: the Ethernet FCS already was."""
    start = _ETH.size + _IP6.size
    if len(frame) < start + _NS.size:
        return None
    eth_dst, eth_src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        return None
    first, length, next_header, hop_limit, source, destination = _IP6.unpack_from(frame, _ETH.size)
    if first >> 28 != 6 or next_header != IPPROTO_ICMPV6 or hop_limit != 255:
        return None
    end = min(len(frame), start + length)  # a short frame may carry Ethernet padding
    kind, code, _, flags, target = _NS.unpack_from(frame, start)
    if kind != ND_NEIGHBOR_ADVERT or code != 0:
        return None
    flags >>= 24
    target_mac = None
    offset = start + _NS.size
    while offset + 8 <= end:
        opt_type, opt_len = frame[offset], frame[offset + 1] * 8
        if opt_len == 0:
            return None  # RFC 4861 section 4.6: a zero-length option is invalid
        if opt_type == ND_OPT_TARGET_LLADDR and opt_len == 8:
            target_mac = frame[offset + 2 : offset + 8]
        offset += opt_len
    return NeighborAdvert(
        eth_dst,
        eth_src,
        source,
        destination,
        target,
        bool(flags & NA_FLAG_ROUTER),
        bool(flags & NA_FLAG_SOLICITED),
        bool(flags & NA_FLAG_OVERRIDE),
        target_mac,
    )
