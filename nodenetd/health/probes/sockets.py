"""The probe sockets of one member, and what the prober needs to know about the member.

ICMP and ICMPv6 go through raw sockets (``SOCK_RAW``, ``IPPROTO_ICMP``/``IPPROTO_ICMPV6``)
bound to the member with ``SO_BINDTODEVICE``: the route lookup for each probe is confined to
that device (an ``ip rule oif MEMBER`` picks the member's table), and only packets that
arrived on the member reach the socket. Raw sockets need CAP_NET_RAW, which nodenetd has
anyway (it runs as root). Unprivileged ping sockets (``SOCK_DGRAM``, ``IPPROTO_ICMP``) would
need the process's group inside ``net.ipv4.ping_group_range``, which is "1 0" (nobody, not even
root) by default on Debian and in every new network namespace, so they fail with EACCES there;
and they buy nothing here: the kernel overwrites the identifier with the socket's "port", and
a raw socket with a kernel filter gets the same demultiplexing.

A raw socket sees every ICMP message that arrives on its device, so each one gets two kernel
filters: ``ICMP_FILTER``/``ICMP6_FILTER`` let only echo replies through, and a classic BPF
program keeps only those carrying this prober's identifier. Other pings, other daemons and
error messages never wake the event loop.

ARP and neighbour solicitations go through ``AF_PACKET`` sockets bound to the member, as
teamd's ``arp_ping``/``nsna_ping`` and the bonding driver's ARP monitor do: whole Ethernet
frames, with the source address the prober chooses. This works on a bond's backup members,
which have no addresses of their own and whose received frames the bond only hands to
sockets bound to exactly that member (``RX_HANDLER_EXACT``). A packet socket bound to one
ethertype sees received frames only (never our own transmissions), and a BPF program keeps
only ARP replies or neighbour advertisements. The socket is created with protocol 0 (deaf),
gets its filter, and only then is bound, so no unfiltered frame is ever queued.

Every socket asks for kernel receive timestamps (``SO_TIMESTAMPNS``), so the prober can read
replies whenever it wakes and still know when each one arrived.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from nodenetd.errors import Gone, KernelError, Refused, Unsupported
from nodenetd.health.probes import packets
from nodenetd.kernel.netlink import (
    NLMSGHDR,
    NetlinkFailure,
    NetlinkSocket,
    decode_attrs,
    encode_attrs,
    kernel_error,
)

__all__ = [
    "MemberFacts",
    "arp_reply_program",
    "bpf_program",
    "echo6_reply_program",
    "echo_reply_program",
    "member_facts",
    "neighbor_advert_program",
    "open_icmp",
    "open_packet",
]

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35  # SO_TIMESTAMPNS_OLD: a 64-bit struct timespec on 64-bit hosts
SOL_RAW = 255
ICMP_FILTER = 1  # linux/icmp.h, level SOL_RAW
ICMP6_FILTER = 1  # linux/icmpv6.h, level IPPROTO_ICMPV6
ARPHRD_ETHER = 1
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_MULTICAST = 0
PACKET_MR_UNICAST = 3

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
_LD_H_ABS = 0x28
_LD_B_ABS = 0x30
_LD_H_IND = 0x48
_LD_B_IND = 0x50
_LDX_B_MSH = 0xB1  # X = 4 * (packet[k] & 0xf): the IPv4 header length
_JEQ_K = 0x15
_RET_K = 0x06
_ACCEPT = 0x40000  # bytes to keep: all of it
_INSN = struct.Struct("=HBBI")  # struct sock_filter


def bpf_program(*instructions: tuple[int, int, int, int]) -> bytes:
    """Classic BPF instructions (code, jt, jf, k) as the kernel's ``struct sock_filter[]``."""
    return b"".join(_INSN.pack(*insn) for insn in instructions)


def echo_reply_program(ident: int) -> bytes:
    """For a raw IPv4 ICMP socket (which sees the IP header): echo replies with ``ident``."""
    return bpf_program(
        (_LDX_B_MSH, 0, 0, 0),
        (_LD_B_IND, 0, 0, 0),  # ICMP type
        (_JEQ_K, 0, 3, packets.ICMP_ECHO_REPLY),
        (_LD_H_IND, 0, 0, 4),  # identifier
        (_JEQ_K, 0, 1, ident),
        (_RET_K, 0, 0, _ACCEPT),
        (_RET_K, 0, 0, 0),
    )


def echo6_reply_program(ident: int) -> bytes:
    """For a raw ICMPv6 socket (which sees the ICMPv6 message only): echo replies with
    ``ident``."""
    return bpf_program(
        (_LD_B_ABS, 0, 0, 0),
        (_JEQ_K, 0, 3, packets.ICMP6_ECHO_REPLY),
        (_LD_H_ABS, 0, 0, 4),
        (_JEQ_K, 0, 1, ident),
        (_RET_K, 0, 0, _ACCEPT),
        (_RET_K, 0, 0, 0),
    )


def arp_reply_program() -> bytes:
    """For a packet socket (which sees the Ethernet header): ARP replies."""
    return bpf_program(
        (_LD_H_ABS, 0, 0, 12),
        (_JEQ_K, 0, 3, packets.ETH_P_ARP),
        (_LD_H_ABS, 0, 0, 20),  # ARP opcode
        (_JEQ_K, 0, 1, packets.ARPOP_REPLY),
        (_RET_K, 0, 0, _ACCEPT),
        (_RET_K, 0, 0, 0),
    )


def neighbor_advert_program() -> bytes:
    """For a packet socket: IPv6 frames whose next header is ICMPv6 and whose ICMPv6 type is
    neighbour advertisement (a frame with extension headers is not one a node may accept)."""
    return bpf_program(
        (_LD_H_ABS, 0, 0, 12),
        (_JEQ_K, 0, 5, packets.ETH_P_IPV6),
        (_LD_B_ABS, 0, 0, 14 + 6),  # next header
        (_JEQ_K, 0, 3, packets.IPPROTO_ICMPV6),
        (_LD_B_ABS, 0, 0, 14 + 40),  # ICMPv6 type
        (_JEQ_K, 0, 1, packets.ND_NEIGHBOR_ADVERT),
        (_RET_K, 0, 0, _ACCEPT),
        (_RET_K, 0, 0, 0),
    )


def attach_filter(sock: socket.socket, program: bytes) -> None:
    """``SO_ATTACH_FILTER``: the kernel copies the program, so the buffer may go after."""
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // _INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _kernel_error(member: str, setting: str, err: OSError) -> KernelError:
    name = errno.errorcode.get(err.errno or 0, str(err.errno))
    if err.errno in (errno.ENODEV, errno.ENXIO):
        return Gone(member, setting, f"{name}: no such interface", err.errno)
    if err.errno in (errno.EPERM, errno.EACCES):
        return Refused(
            member, setting, f"{name}: probe sockets need CAP_NET_RAW (run as root)", err.errno
        )
    if err.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT):
        return Unsupported(member, setting, f"{name}: this kernel lacks it", err.errno)
    return Refused(member, setting, f"{name}: {err.strerror}", err.errno)


def open_icmp(
    member: str,
    family: socket.AddressFamily,
    ident: int,
    source: tuple | None = None,
) -> socket.socket:
    """A non-blocking raw ICMP (AF_INET) or ICMPv6 (AF_INET6) socket bound to ``member``,
    passing only echo replies with ``ident``, each with its kernel receive time
    (``SO_TIMESTAMPNS``); bound to ``source`` (a sockaddr) if given.

    Echo probes belong on interfaces with addresses of their own (route-group uplinks, or the
    bond itself). On one without, the kernel still sends, from another interface's address,
    and the reply may come back elsewhere; and a bond member hands what it receives to the
    bond, so a socket bound to the member never sees it."""
    six = family == socket.AF_INET6
    setting = "icmp6 probe socket" if six else "icmp probe socket"
    proto = socket.IPPROTO_ICMPV6 if six else socket.IPPROTO_ICMP
    try:
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
    except OSError as err:
        raise _kernel_error(member, setting, err) from err
    try:
        if six:
            blocked = [0xFFFFFFFF] * 8
            blocked[packets.ICMP6_ECHO_REPLY >> 5] &= ~(1 << (packets.ICMP6_ECHO_REPLY & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
            attach_filter(sock, echo6_reply_program(ident))
        else:
            sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~1 & 0xFFFFFFFF))
            attach_filter(sock, echo_reply_program(ident))
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, member.encode())
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if source is not None:
            sock.bind(source)
    except OSError as err:
        sock.close()
        raise _kernel_error(member, setting, err) from err
    return sock


def open_packet(
    member: str,
    ethertype: int,
    program: bytes,
    setting: str,
    *,
    unicast: bytes | None = None,
    multicast: tuple[bytes, ...] = (),
) -> tuple[socket.socket, bytes]:
    """A non-blocking packet socket on ``member`` for one ethertype, filtered by
    ``program``; returns it with the member's MAC address. Ethernet members only.

    ``unicast`` (a MAC other than the member's) and ``multicast`` (group MACs) are added to
    the member's receive filter for as long as the socket lives (``PACKET_ADD_MEMBERSHIP``),
    so replies to them get through a NIC that filters, such as a bond's backup member, whose
    multicast list the bond does not maintain."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
    except OSError as err:
        raise _kernel_error(member, setting, err) from err
    try:
        attach_filter(sock, program)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((member, ethertype))
        _, _, _, hatype, mac = sock.getsockname()
        index = socket.if_nametoindex(member)
        memberships = [(PACKET_MR_MULTICAST, group) for group in multicast]
        if unicast is not None and unicast != mac:
            memberships.append((PACKET_MR_UNICAST, unicast))
        for kind, address in memberships:
            mreq = struct.pack("=iHH8s", index, kind, len(address), address)
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    except OSError as err:
        sock.close()
        raise _kernel_error(member, setting, err) from err
    if hatype != ARPHRD_ETHER or len(mac) != 6:
        sock.close()
        raise Unsupported(
            member, setting, f"link type {hatype} is not Ethernet; use ICMP probes on it"
        )
    return sock, mac


Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class MemberFacts:
    """What a probe needs to know about its member: index, MAC, usable addresses; whether it
    is enslaved (and to what), its permanent MAC, and its master's addresses."""

    name: str
    index: int
    mac: str | None
    addresses: tuple[Address, ...] = ()
    perm_mac: str | None = None  # a bond member's own MAC (the bond's slave data), else the NIC's
    slave_kind: str | None = None  # "bond", "bridge"... when enslaved
    master: str | None = None
    master_addresses: tuple[Address, ...] = field(default=())

    def source_for(self, target: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Address | None:
        """The address to speak from to ``target``: the member's own before its master's;
        within each, one whose prefix holds the target, then (IPv6) a link-local one, then any
        of the family."""
        for candidates in (self.addresses, self.master_addresses):
            same = [a for a in candidates if a.version == target.version]
            for rule in (
                lambda a: target in a.network,
                lambda a: a.version == 6 and a.ip.is_link_local,
                lambda a: True,
            ):
                chosen = _first(same, rule)
                if chosen is not None:
                    return chosen
        return None


def _first(items: list[Address], rule: Callable[[Address], bool]) -> Address | None:
    return next((item for item in items if rule(item)), None)


RTM_GETLINK = 18
RTM_GETADDR = 22
RTEXT_FILTER_SKIP_STATS = 1 << 3
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_FAMILIES = (socket.AF_INET, socket.AF_INET6)


# Attribute tables for nodenetd's netlink codec (plain classes: importing pyroute2 would
# double the prober's start-up time, which matters under emulation).


class ifla:
    """The IFLA_* attributes a probe needs (linux/if_link.h); the slave data is a bond's."""

    nla_map = (
        (1, "IFLA_ADDRESS", "l2addr"),
        (3, "IFLA_IFNAME", "asciiz"),
        (10, "IFLA_MASTER", "uint32"),
        (18, "IFLA_LINKINFO", "linkinfo"),
        (29, "IFLA_EXT_MASK", "uint32"),
        (54, "IFLA_PERM_ADDRESS", "l2addr"),
    )

    class linkinfo:
        nla_map = (
            (4, "IFLA_INFO_SLAVE_KIND", "asciiz"),
            (5, "IFLA_INFO_SLAVE_DATA", "slave_data"),
        )

        class slave_data:
            nla_map = ((4, "IFLA_BOND_SLAVE_PERM_HWADDR", "l2addr"),)


class ifa:
    """The IFA_* attributes an address needs here (linux/if_addr.h)."""

    nla_map = (
        (1, "IFA_ADDRESS", "cdata"),
        (2, "IFA_LOCAL", "cdata"),
        (8, "IFA_FLAGS", "uint32"),
    )


_GET_LINK_ATTRS = encode_attrs(ifla, [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])


def _decode_link(data: bytes, offset: int, length: int) -> dict:
    start = offset + NLMSGHDR.size + _IFINFOMSG.size
    return decode_attrs(ifla, data, start, offset + length)


def _decode_address(data: bytes, offset: int, length: int) -> tuple[int, Address | None]:
    """(ifindex, address) of one RTM_NEWADDR; None for one not usable as a source."""
    family, prefixlen, flags, _scope, index = _IFADDRMSG.unpack_from(data, offset + NLMSGHDR.size)
    attrs = decode_attrs(ifa, data, offset + NLMSGHDR.size + _IFADDRMSG.size, offset + length)
    flags = attrs.get("IFA_FLAGS", flags)
    packed = attrs.get("IFA_LOCAL") or attrs.get("IFA_ADDRESS")
    if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) or family not in _FAMILIES or not packed:
        return index, None  # RFC 4862: a tentative address is no source until DAD is done
    text = socket.inet_ntop(family, packed)
    return index, ipaddress.ip_interface(f"{text}/{prefixlen}")


def member_facts(member: str) -> MemberFacts:
    """Read the member (and its master) over rtnetlink: one link request each and one address
    dump, a millisecond or so. It blocks; the prober does it once, at start."""
    setting = "probe member"
    try:
        index = socket.if_nametoindex(member)
    except OSError:
        raise Gone(member, setting, "no such interface", errno.ENODEV) from None

    def get_link(nl: NetlinkSocket, index: int, name: str) -> dict:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _GET_LINK_ATTRS
        try:
            return nl.request(RTM_GETLINK, payload, decode=_decode_link)[0]
        except NetlinkFailure as failure:
            raise kernel_error(failure, name, setting) from None

    with NetlinkSocket(socket.NETLINK_ROUTE) as nl:
        link = get_link(nl, index, member)
        master_index = link.get("IFLA_MASTER")
        master = get_link(nl, master_index, f"{member}'s master") if master_index else None
        try:
            dumped = nl.dump(
                RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0), decode=_decode_address
            )
        except NetlinkFailure as failure:
            raise kernel_error(failure, member, "addresses") from None
    by_index: dict[int, list[Address]] = {}
    for owner, address in dumped:
        if address is not None:
            by_index.setdefault(owner, []).append(address)
    info = link.get("IFLA_LINKINFO") or {}
    slave_kind = info.get("IFLA_INFO_SLAVE_KIND")
    perm_mac = link.get("IFLA_PERM_ADDRESS")
    if slave_kind == "bond":
        perm_mac = (info.get("IFLA_INFO_SLAVE_DATA") or {}).get("IFLA_BOND_SLAVE_PERM_HWADDR")
    return MemberFacts(
        name=member,
        index=index,
        mac=link.get("IFLA_ADDRESS"),
        addresses=tuple(by_index.get(index, ())),
        perm_mac=perm_mac,
        slave_kind=slave_kind,
        master=master.get("IFLA_IFNAME") if master else None,
        master_addresses=tuple(by_index.get(master_index, ())) if master_index else (),
    )
