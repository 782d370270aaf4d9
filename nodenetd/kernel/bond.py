"""Kernel bonding over rtnetlink: the only place nodenetd creates, changes or reads a bond.

Failover in nodenetd is a policy layer on top of kernel bonding (as teamd's active-backup
runner is on top of team): the kernel keeps the fast path and its link monitor, and nodenetd
decides which member should be active, and how the bond detects failures and tells its peers.

The API (``BondAdapter``):

- ``create(name, options)``: a new bond with the given options, atomically (one RTM_NEWLINK);
- ``adopt(name)``: read an existing active-backup bond that nodenetd did not create;
- ``status(name)``: options, active member and every member's state, MII status, link failure
  count, permanent MAC and prio;
- ``set_options(name, options)``: live changes, only what differs, then read back;
- ``set_active(bond, member)``, ``set_member_prio(member, prio)``;
- ``enslave``, ``release``, ``set_up``, ``set_down``, ``delete``.

``BondOptions`` holds every option failover needs; each is Optional and only the given ones
are sent. Which options need what (bonding.rst, ``drivers/net/bonding/bond_options.c``):

============================  =================================================================
option                        needs
============================  =================================================================
mode                          the bond down **and** without members (the kernel's IFDOWN and
                              NOSLAVES flags). Refused up front; nodenetd never takes a bond
                              down or apart implicitly.
fail_over_mac                 a bond without members (NOSLAVES). Refused up front.
updelay, downdelay,           miimon > 0 and a multiple of miimon: the kernel stores them in
peer_notif_delay              miimon *ticks* (and rounds a remainder down with only a log
                              line). Refused up front otherwise. When miimon changes, set_options
                              re-sends them so they keep their milliseconds (the kernel alone
                              would rescale them: 200 ms at miimon 100 becomes 100 ms at 50);
                              when miimon goes to 0 they are zeroed first.
miimon / arp_interval         exclude each other: the kernel silently turns the other monitor
                              off. Both > 0 is refused; turn one off explicitly.
arp_validate                  refused together with miimon > 0 in one message by the kernel
                              ("ARP validating cannot be used with MII monitoring"): create()
                              checks it up front.
primary                       an enslaved member (sent as its ifindex; "" clears). Refused up
                              front otherwise: the kernel takes any interface and then reports
                              no primary at all.
active_slave                  a member with link, in active-backup (or tlb/alb) mode; sent last,
                              since setting primary or primary_reselect makes the kernel reselect
                              at once ("" clears it, and the kernel reselects).
everything else               nothing: live on a running bond with members.
============================  =================================================================

Peer notifications (num_peer_notif, peer_notif_delay): on the kernel lab's Debian 6.1 the MII
round that fails over counts one notification down without sending it, so with
peer_notif_delay below two miimon rounds a peer gets num_peer_notif - 1 gratuitous ARPs (none
lost at 2 rounds or more). tests/kernel/test_bond_options.py pins this down.

Why our own attribute tables rather than pyroute2's bond plugin: pyroute2 0.9.7 lacks
IFLA_BOND_PEER_NOTIF_DELAY (28), MISSED_MAX (30), NS_IP6_TARGET (31) and the slave PRIO, and
registers no ``bond_slave`` data map, so the gaps would mean patching its global plugin registry.
The shared raw netlink core (``nodenetd.kernel.netlink``, as used by links.py) already encodes
and decodes by explicit ``nla_map`` tables, so the bond's layout is written down once here
(numbers from ``include/uapi/linux/if_link.h``) and both directions follow it. It also keeps
pyroute2's import (~10 s under the kernel lab's emulation) out of the failover path.

A kernel that predates an attribute ignores it silently (rtnetlink parses IFLA_INFO_DATA
liberally), so every write is read back: an option the kernel does not report is
``Unsupported``, one it reports differently is ``Refused``. Errors come from the shared
``kernel_error`` with the bond as target and ``bond.<option>`` (``bond_slave.prio``) as setting;
EBUSY from a bond option means "the bond is up" and is a ``Refused`` here, not Unsupported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

from nodenetd.errors import Gone, KernelError, Refused, Unsupported
from nodenetd.kernel.netlink import (
    NLMSGHDR,
    NetlinkFailure,
    NetlinkSocket,
    decode_attrs,
    encode_attrs,
    iter_attrs,
    kernel_error,
    nla,
    socket_in_netns,
)

__all__ = [
    "ArpAllTargets",
    "ArpValidate",
    "BondAdapter",
    "BondMember",
    "BondMode",
    "BondOptions",
    "BondStatus",
    "FailOverMac",
    "MemberState",
    "MiiStatus",
    "PrimaryReselect",
    "decode_bond_link",
    "encode_bond_data",
    "encode_slave_data",
    "plan_options",
    "verify_options",
]

# --------------------------------------------------------------------------------------------
# Kernel enums (include/uapi/linux/if_bonding.h). The kernel speaks numbers; nodenetd speaks the
# names that ``ip -d link`` and /proc/net/bonding use, so logs and witnesses agree. Each enum's
# members are listed in the kernel's numeric order: the code is the position.


class BondMode(StrEnum):
    BALANCE_RR = "balance-rr"  # 0
    ACTIVE_BACKUP = "active-backup"  # 1
    BALANCE_XOR = "balance-xor"  # 2
    BROADCAST = "broadcast"  # 3
    IEEE8023AD = "802.3ad"  # 4
    BALANCE_TLB = "balance-tlb"  # 5
    BALANCE_ALB = "balance-alb"  # 6


class PrimaryReselect(StrEnum):
    """When the kernel moves back to the primary: whenever it is up, when it is better, or
    only when the active member fails (which leaves a userspace choice alone)."""

    ALWAYS = "always"  # 0
    BETTER = "better"  # 1
    FAILURE = "failure"  # 2


class FailOverMac(StrEnum):
    NONE = "none"  # 0: every member takes the bond's MAC
    ACTIVE = "active"  # 1: the bond takes the active member's MAC
    FOLLOW = "follow"  # 2: the active member takes the bond's MAC, the old one gets its own


class ArpValidate(StrEnum):
    NONE = "none"  # 0
    ACTIVE = "active"  # 1
    BACKUP = "backup"  # 2
    ALL = "all"  # 3
    FILTER = "filter"  # 4
    FILTER_ACTIVE = "filter_active"  # 5
    FILTER_BACKUP = "filter_backup"  # 6


class ArpAllTargets(StrEnum):
    ANY = "any"  # 0
    ALL = "all"  # 1


class MemberState(StrEnum):
    """IFLA_BOND_SLAVE_STATE: whether the bond transmits through this member."""

    ACTIVE = "active"  # BOND_STATE_ACTIVE = 0
    BACKUP = "backup"  # BOND_STATE_BACKUP = 1


class MiiStatus(StrEnum):
    """IFLA_BOND_SLAVE_MII_STATUS: the bond's own view of the member's link.

    ``fail`` and ``back`` are the transitional states while downdelay/updelay run: the
    carrier has changed but the bond has not acted on it yet.
    """

    UP = "up"  # BOND_LINK_UP = 0
    FAIL = "fail"  # BOND_LINK_FAIL = 1: carrier lost, downdelay running
    DOWN = "down"  # BOND_LINK_DOWN = 2
    BACK = "back"  # BOND_LINK_BACK = 3: carrier back, updelay running


def _code(value: StrEnum) -> int:
    return list(type(value)).index(value)


def _from_code(enum: type[StrEnum], code: int | None) -> Any:
    members = list(enum)
    return members[code] if code is not None and 0 <= code < len(members) else None


# --------------------------------------------------------------------------------------------
# Attribute tables (include/uapi/linux/if_link.h), in the netlink core's nla_map form


class _bond_data:
    """IFLA_INFO_DATA of kind "bond": the IFLA_BOND_* attributes nodenetd sets or reads.

    The two target lists are nests whose entries are numbered 0, 1, ... (the number is only an
    index); they travel as raw bytes and are walked with ``iter_attrs``.
    """

    nla_map = (
        (1, "IFLA_BOND_MODE", "uint8"),
        (2, "IFLA_BOND_ACTIVE_SLAVE", "uint32"),  # ifindex; 0 clears
        (3, "IFLA_BOND_MIIMON", "uint32"),
        (4, "IFLA_BOND_UPDELAY", "uint32"),
        (5, "IFLA_BOND_DOWNDELAY", "uint32"),
        (7, "IFLA_BOND_ARP_INTERVAL", "uint32"),
        (8, "IFLA_BOND_ARP_IP_TARGET", "cdata"),  # nest of be32 IPv4 addresses
        (9, "IFLA_BOND_ARP_VALIDATE", "uint32"),
        (10, "IFLA_BOND_ARP_ALL_TARGETS", "uint32"),
        (11, "IFLA_BOND_PRIMARY", "uint32"),  # ifindex; 0 clears
        (12, "IFLA_BOND_PRIMARY_RESELECT", "uint8"),
        (13, "IFLA_BOND_FAIL_OVER_MAC", "uint8"),
        (15, "IFLA_BOND_RESEND_IGMP", "uint32"),
        (16, "IFLA_BOND_NUM_PEER_NOTIF", "uint8"),  # num_grat_arp / num_unsol_na
        (28, "IFLA_BOND_PEER_NOTIF_DELAY", "uint32"),  # not in pyroute2
        (30, "IFLA_BOND_MISSED_MAX", "uint8"),  # arp_missed_max; not in pyroute2
        (31, "IFLA_BOND_NS_IP6_TARGET", "cdata"),  # nest of in6_addr; not in pyroute2
    )


class _bond_slave_data:
    """IFLA_INFO_SLAVE_DATA of slave kind "bond"."""

    nla_map = (
        (1, "IFLA_BOND_SLAVE_STATE", "uint8"),
        (2, "IFLA_BOND_SLAVE_MII_STATUS", "uint8"),
        (3, "IFLA_BOND_SLAVE_LINK_FAILURE_COUNT", "uint32"),
        (4, "IFLA_BOND_SLAVE_PERM_HWADDR", "l2addr"),
        (5, "IFLA_BOND_SLAVE_QUEUE_ID", "uint16"),
        (9, "IFLA_BOND_SLAVE_PRIO", "int32"),  # not in pyroute2
    )


class _ifla:
    """The IFLA_* attributes of a link message this adapter uses. IFLA_INFO_DATA and
    IFLA_INFO_SLAVE_DATA depend on the kind, so they stay bytes until the kind is known."""

    nla_map = (
        (3, "IFLA_IFNAME", "asciiz"),
        (10, "IFLA_MASTER", "uint32"),
        (18, "IFLA_LINKINFO", "linkinfo"),
        (29, "IFLA_EXT_MASK", "uint32"),
        (33, "IFLA_CARRIER", "uint8"),
    )

    class linkinfo:
        nla_map = (
            (1, "IFLA_INFO_KIND", "asciiz"),
            (2, "IFLA_INFO_DATA", "cdata"),
            (4, "IFLA_INFO_SLAVE_KIND", "asciiz"),
            (5, "IFLA_INFO_SLAVE_DATA", "cdata"),
        )


# linux/rtnetlink.h, linux/netlink.h, linux/if.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFF_UP = 0x1
RTEXT_FILTER_SKIP_STATS = 1 << 3
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_PAYLOAD = NLMSGHDR.size + _IFINFOMSG.size

_MAX_TARGETS = 16  # BOND_MAX_ARP_TARGETS, BOND_MAX_NS_TARGETS
_INT_MAX = 2**31 - 1

# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class _Spec:
    attr: str  # the IFLA_BOND_* name in _bond_data
    wire: str  # "u8", "u32", "enum8", "enum32", "ifindex", "ipv4", "ipv6"
    low: int = 0
    high: int = _INT_MAX
    enum: type[StrEnum] | None = None
    since: str | None = None  # the kernel that added the attribute, for Unsupported


# Every BondOptions field, in the order bond_changelink() applies attributes of one message.
_SPECS: dict[str, _Spec] = {
    "mode": _Spec("IFLA_BOND_MODE", "enum8", enum=BondMode),
    "active_slave": _Spec("IFLA_BOND_ACTIVE_SLAVE", "ifindex"),
    "miimon": _Spec("IFLA_BOND_MIIMON", "u32"),
    "updelay": _Spec("IFLA_BOND_UPDELAY", "u32"),
    "downdelay": _Spec("IFLA_BOND_DOWNDELAY", "u32"),
    "peer_notif_delay": _Spec("IFLA_BOND_PEER_NOTIF_DELAY", "u32", since="5.5"),
    "arp_interval": _Spec("IFLA_BOND_ARP_INTERVAL", "u32"),
    "arp_ip_target": _Spec("IFLA_BOND_ARP_IP_TARGET", "ipv4"),
    "ns_ip6_target": _Spec("IFLA_BOND_NS_IP6_TARGET", "ipv6", since="5.19"),
    "arp_validate": _Spec("IFLA_BOND_ARP_VALIDATE", "enum32", enum=ArpValidate),
    "arp_all_targets": _Spec("IFLA_BOND_ARP_ALL_TARGETS", "enum32", enum=ArpAllTargets),
    "primary": _Spec("IFLA_BOND_PRIMARY", "ifindex"),
    "primary_reselect": _Spec("IFLA_BOND_PRIMARY_RESELECT", "enum8", enum=PrimaryReselect),
    "fail_over_mac": _Spec("IFLA_BOND_FAIL_OVER_MAC", "enum8", enum=FailOverMac),
    "resend_igmp": _Spec("IFLA_BOND_RESEND_IGMP", "u32", high=255),
    "num_peer_notif": _Spec("IFLA_BOND_NUM_PEER_NOTIF", "u8", high=255),
    "arp_missed_max": _Spec("IFLA_BOND_MISSED_MAX", "u8", low=1, high=255, since="5.18"),
}
_DELAYS = ("updelay", "downdelay", "peer_notif_delay")
_SLAVE_PRIO_SINCE = "6.0"


@dataclass(frozen=True)
class BondOptions:
    """Bond options; every one is Optional and only the given ones are sent.

    Times are milliseconds. ``primary`` and ``active_slave`` name a member ("" clears them).
    The target lists replace the whole list (() clears it); addresses are normalised. Enum
    options take the enum or its name ("failure", "active-backup"). Read back (``status``),
    every option the kernel reports is filled in; None means the kernel does not report it
    (an older kernel), or for primary/active_slave that none is set.
    """

    mode: BondMode | None = None
    miimon: int | None = None
    updelay: int | None = None
    downdelay: int | None = None
    peer_notif_delay: int | None = None
    primary: str | None = None
    primary_reselect: PrimaryReselect | None = None
    active_slave: str | None = None
    fail_over_mac: FailOverMac | None = None
    num_peer_notif: int | None = None
    arp_interval: int | None = None
    arp_ip_target: tuple[str, ...] | None = None
    arp_validate: ArpValidate | None = None
    arp_all_targets: ArpAllTargets | None = None
    arp_missed_max: int | None = None
    ns_ip6_target: tuple[str, ...] | None = None
    resend_igmp: int | None = None

    def __post_init__(self) -> None:
        for name, spec in _SPECS.items():
            value = getattr(self, name)
            if value is None:
                continue
            object.__setattr__(self, name, _normalise(name, spec, value))

    def given(self) -> dict[str, Any]:
        """{option: value} of the options that are set, in the kernel's order."""
        return {name: getattr(self, name) for name in _SPECS if getattr(self, name) is not None}

    def merged(self, other: BondOptions) -> BondOptions:
        """These options with ``other``'s given ones on top."""
        return dataclasses.replace(self, **other.given())


def _normalise(name: str, spec: _Spec, value: Any) -> Any:
    """The canonical form of one option value; ValueError names what is wrong."""
    if spec.enum is not None:
        try:
            return spec.enum(value)
        except ValueError:
            allowed = ", ".join(member.value for member in spec.enum)
            raise ValueError(f"{name} must be one of {allowed}, not {value!r}") from None
    if spec.wire == "ifindex":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be an interface name (or '' to clear), not {value!r}")
        return value
    if spec.wire in ("ipv4", "ipv6"):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ValueError(f"{name} must be a sequence of addresses, not {value!r}")
        version = 4 if spec.wire == "ipv4" else 6
        addresses = []
        for item in value:
            try:
                address = ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{name}: {item!r} is not an IP address") from None
            if address.version != version:
                raise ValueError(f"{name}: {item} is not an IPv{version} address")
            addresses.append(address.compressed)
        if len(addresses) > _MAX_TARGETS:
            raise ValueError(f"{name}: at most {_MAX_TARGETS} targets, got {len(addresses)}")
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"{name}: duplicate target in {addresses}")
        return tuple(addresses)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, not {value!r}")
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{name} must be within {spec.low}..{spec.high}, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True)
class BondMember:
    """One enslaved interface as the bond sees it."""

    name: str
    index: int
    state: MemberState | None
    mii_status: MiiStatus | None
    link_failure_count: int
    perm_hwaddr: str | None
    prio: int | None  # IFLA_BOND_SLAVE_PRIO; None on kernels without it (< 6.0)
    admin_up: bool = True
    carrier: bool = True


@dataclass(frozen=True)
class BondStatus:
    """A bond read back from the kernel: its options, active member and members."""

    name: str
    index: int
    admin_up: bool
    carrier: bool
    options: BondOptions
    members: tuple[BondMember, ...]

    @property
    def mode(self) -> BondMode | None:
        return self.options.mode

    @property
    def active_member(self) -> str | None:
        return self.options.active_slave

    def member(self, name: str) -> BondMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"{name} is not a member of {self.name}")


# --------------------------------------------------------------------------------------------
# Wire codec


@dataclass(frozen=True)
class _LinkMsg:
    """One RTM_NEWLINK reply, with the kind-specific data still raw."""

    index: int
    name: str
    admin_up: bool
    carrier: bool
    master: int | None
    kind: str | None
    slave_kind: str | None
    data: bytes | None
    slave_data: bytes | None


def _decode_link(data: bytes, offset: int, length: int) -> _LinkMsg:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset + NLMSGHDR.size)
    attrs = decode_attrs(_ifla, data, offset + _PAYLOAD, offset + length)
    info = attrs.get("IFLA_LINKINFO") or {}
    return _LinkMsg(
        index=index,
        name=attrs.get("IFLA_IFNAME", ""),
        admin_up=bool(flags & IFF_UP),
        carrier=bool(attrs.get("IFLA_CARRIER")),
        master=attrs.get("IFLA_MASTER") or None,
        kind=info.get("IFLA_INFO_KIND"),
        slave_kind=info.get("IFLA_INFO_SLAVE_KIND"),
        data=info.get("IFLA_INFO_DATA"),
        slave_data=info.get("IFLA_INFO_SLAVE_DATA"),
    )


def _encode_targets(addresses: Sequence[str]) -> bytes:
    """A target nest's payload: entries numbered from 0, each a packed address (network order),
    as iproute2 builds it."""
    return b"".join(
        nla(i, ipaddress.ip_address(address).packed) for i, address in enumerate(addresses)
    )


def _decode_targets(raw: bytes | None, version: int) -> tuple[str, ...]:
    if not raw:
        return ()
    size = 4 if version == 4 else 16
    return tuple(
        ipaddress.ip_address(bytes(raw[start:end])).compressed
        for _, start, end in iter_attrs(raw, 0, len(raw))
        if end - start == size
    )


def _wire_value(name: str, value: Any, ifindex: Mapping[str, int]) -> Any:
    spec = _SPECS[name]
    if spec.wire in ("enum8", "enum32"):
        return _code(value)
    if spec.wire == "ifindex":
        return ifindex[value] if value else 0
    if spec.wire in ("ipv4", "ipv6"):
        return _encode_targets(value)
    return value


def encode_bond_data(
    options: BondOptions | Sequence[tuple[str, Any]], ifindex: Mapping[str, int] | None = None
) -> bytes:
    """The IFLA_INFO_DATA payload for ``options`` (a BondOptions: its given options; or
    ``[(option, value), ...]``). ``ifindex`` resolves primary/active_slave names."""
    items = options.given().items() if isinstance(options, BondOptions) else options
    names = ifindex or {}
    return encode_attrs(
        _bond_data,
        [(_SPECS[name].attr, _wire_value(name, value, names)) for name, value in items],
    )


def encode_slave_data(prio: int) -> bytes:
    """The IFLA_INFO_SLAVE_DATA payload that sets a member's prio."""
    return encode_attrs(_bond_slave_data, [("IFLA_BOND_SLAVE_PRIO", prio)])


def _options_from(raw: bytes | None, name_of: Callable[[int], str | None]) -> BondOptions:
    attrs = decode_attrs(_bond_data, raw, 0, len(raw)) if raw else {}
    values: dict[str, Any] = {}
    for name, spec in _SPECS.items():
        value = attrs.get(spec.attr)
        if spec.wire == "ipv4":
            values[name] = _decode_targets(value, 4)
        elif spec.wire == "ipv6":
            # Absent both when empty and when the kernel predates it: reads as empty.
            values[name] = _decode_targets(value, 6)
        elif value is None:
            continue
        elif spec.enum is not None:
            values[name] = _from_code(spec.enum, value)
        elif spec.wire == "ifindex":
            values[name] = name_of(value) if value else None
        else:
            values[name] = value
    return BondOptions(**values)


def _member_from(link: _LinkMsg) -> BondMember:
    raw = link.slave_data
    attrs = decode_attrs(_bond_slave_data, raw, 0, len(raw)) if raw else {}
    return BondMember(
        name=link.name,
        index=link.index,
        state=_from_code(MemberState, attrs.get("IFLA_BOND_SLAVE_STATE")),
        mii_status=_from_code(MiiStatus, attrs.get("IFLA_BOND_SLAVE_MII_STATUS")),
        link_failure_count=attrs.get("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT", 0),
        perm_hwaddr=attrs.get("IFLA_BOND_SLAVE_PERM_HWADDR"),
        prio=attrs.get("IFLA_BOND_SLAVE_PRIO"),
        admin_up=link.admin_up,
        carrier=link.carrier,
    )


def decode_bond_link(
    data: bytes, offset: int = 0, length: int | None = None, names: Mapping[int, str] | None = None
) -> BondOptions | BondMember:
    """One RTM_NEWLINK message: a bond's options, or a bond member's view. ``names`` maps the
    ifindexes of primary and active_slave to names (a member dump does that in ``status``)."""
    link = _decode_link(data, offset, len(data) - offset if length is None else length)
    if link.kind == "bond":
        known = names or {}
        return _options_from(link.data, lambda index: known.get(index, f"ifindex {index}"))
    if link.slave_kind == "bond":
        return _member_from(link)
    raise ValueError(f"{link.name} is neither a bond nor a bond member")


# --------------------------------------------------------------------------------------------
# Planning and verification (pure: unit-tested without a kernel)


def plan_options(current: BondStatus, options: BondOptions) -> list[tuple[str, Any]]:
    """The ``(option, value)`` writes that take ``current`` to ``options``, one message each,
    in a safe order; only what differs. Raises Refused for what the bond cannot take as it is.

    Order: mode; a monitor being turned off (arp_interval=0, or delays zeroed then miimon=0);
    miimon with all three delays after it (they keep their milliseconds); arp_interval; the
    rest in the kernel's order; active_slave last (primary/primary_reselect make the kernel
    reselect at once, which would undo an earlier active_slave).
    """
    name = current.name
    have = current.options
    want = options.given()
    eff = have.merged(options)
    members = {member.name for member in current.members}

    def refuse(option: str, reason: str) -> Refused:
        return Refused(name, f"bond.{option}", reason, errno.EINVAL)

    def differs(option: str) -> bool:
        value = want.get(option)
        if value is None:
            return False
        if _SPECS[option].wire == "ifindex":
            return (value or None) != getattr(have, option)
        return value != getattr(have, option)

    if differs("mode"):
        if current.members:
            listed = ", ".join(sorted(members))
            raise refuse(
                "mode",
                f"changing the mode from {have.mode} to {want['mode']} needs a bond without "
                f"members (it has {listed}): release them first",
            )
        if current.admin_up:
            raise refuse(
                "mode",
                f"changing the mode from {have.mode} to {want['mode']} needs the bond down: "
                "set it down first",
            )
    if differs("fail_over_mac") and current.members:
        raise refuse(
            "fail_over_mac",
            "fail_over_mac can only change on a bond without members: release them first",
        )
    miimon, arp_interval = eff.miimon or 0, eff.arp_interval or 0
    if miimon and arp_interval:
        option = "arp_interval" if "arp_interval" in want else "miimon"
        raise refuse(
            option,
            f"the MII monitor (miimon {miimon} ms) and the ARP monitor (arp_interval "
            f"{arp_interval} ms) exclude each other and the kernel would silently turn one "
            "off: set the other to 0 in the same call",
        )
    for option in ("primary", "active_slave"):
        target = want.get(option)
        if target and target not in members:
            listed = ", ".join(sorted(members)) or "none"
            raise refuse(option, f"{target} is not a member of {name} (members: {listed})")

    miimon_changes = differs("miimon")
    delays: dict[str, int] = {}
    for option in _DELAYS:
        if option in want:
            delays[option] = want[option]
        elif not miimon_changes:
            delays[option] = getattr(have, option) or 0
        elif miimon and have.miimon:
            delays[option] = getattr(have, option) or 0  # keeps its milliseconds
        else:
            delays[option] = 0  # the monitor goes off, or comes on with no known delays
    for option, value in delays.items():
        if value and not miimon:
            raise refuse(
                option,
                f"{option} {value} ms needs the MII monitor, but miimon is 0 "
                "(the kernel counts delays in miimon ticks)",
            )
        if miimon and value % miimon:
            kept = "" if option in want else " (kept from before the miimon change)"
            raise refuse(
                option,
                f"{option} {value} ms{kept} is not a multiple of miimon {miimon} ms; the kernel "
                f"would round it down to {value // miimon * miimon} ms",
            )

    steps: list[tuple[str, Any]] = []
    if differs("mode"):
        steps.append(("mode", want["mode"]))
    if differs("arp_interval") and want["arp_interval"] == 0:
        steps.append(("arp_interval", 0))
    if miimon_changes and want["miimon"] == 0:
        steps += [(option, 0) for option in _DELAYS if getattr(have, option)]
        steps.append(("miimon", 0))
    elif miimon_changes:
        steps.append(("miimon", want["miimon"]))
        steps += list(delays.items())
    else:
        steps += [(option, delays[option]) for option in _DELAYS if differs(option)]
    if differs("arp_interval") and want["arp_interval"] != 0:
        steps.append(("arp_interval", want["arp_interval"]))
    handled = {"mode", "miimon", "arp_interval", "active_slave", *_DELAYS}
    steps += [
        (option, want[option]) for option in _SPECS if option not in handled and differs(option)
    ]
    if differs("active_slave"):
        steps.append(("active_slave", want["active_slave"]))
    return steps


def verify_options(
    target: str, sent: Sequence[tuple[str, Any]], after: BondOptions
) -> KernelError | None:
    """The error for the first written option the kernel does not report back as written:
    Unsupported when it reports nothing (an older kernel ignores attributes it does not
    know), Refused when it reports another value. Clearing active_slave is not checked: the
    kernel reselects at once."""
    for option, value in sent:
        spec = _SPECS[option]
        got = getattr(after, option)
        if spec.wire == "ifindex":
            if not value:
                if option == "active_slave" or got is None:
                    continue
            elif got == value:
                continue
        elif got == value:
            continue
        setting = f"bond.{option}"
        if got is None or (spec.wire == "ipv6" and value and not got):
            since = f" (added in Linux {spec.since})" if spec.since else ""
            return Unsupported(
                target,
                setting,
                f"this kernel ignored {spec.attr}{since}: it needs a newer kernel",
                errno.EOPNOTSUPP,
            )
        return Refused(target, setting, f"asked for {value!r}, the kernel reports {got!r}")
    return None


# --------------------------------------------------------------------------------------------
# Network namespaces


def _socket_in(netns: str | None, timeout: float) -> NetlinkSocket:
    """An rtnetlink socket in the named namespace (/run/netns/NAME), or in this thread's
    (the shared core's ``socket_in_netns``)."""
    return socket_in_netns(netns, socket.NETLINK_ROUTE, timeout=timeout)


# --------------------------------------------------------------------------------------------
# The adapter


def _bond_error(
    failure: NetlinkFailure,
    target: str,
    setting: str,
    detail: str | None = None,
    busy: str = "set the bond down first",
) -> KernelError:
    """kernel_error, except that EBUSY is a Refused here: from a bond option it means "the
    bond is up" (BOND_OPTFLAG_IFDOWN), from an enslave that the member is busy."""
    error = kernel_error(failure, target, setting, detail)
    if failure.code == errno.EBUSY:
        return Refused(target, setting, f"{error.reason}; {busy}", failure.code)
    return error


def _with_reason(error: KernelError, suffix: str) -> KernelError:
    return type(error)(error.target, error.setting, f"{error.reason}{suffix}", error.errno)


_NO_BONDING_HINT = "this kernel has no bonding support: load the 'bonding' module"
_GET_ATTRS = encode_attrs(_ifla, [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])


class BondAdapter:
    """Bond operations over one rtnetlink socket (the shared netlink core).

    ``netns`` names a namespace under /run/netns to work in; the daemon uses the namespace it
    runs in (None), tests point it at a lab namespace. Use it as a context manager, or call
    ``close``. Calls block (run them in a worker thread from the event loop).
    """

    def __init__(self, netns: str | None = None, *, timeout: float = 5.0) -> None:
        self._nl = _socket_in(netns, timeout)

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> BondAdapter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------

    def status(self, name: str) -> BondStatus:
        """The bond's options, active member and members, as the kernel reports them."""
        bond = self._bond(name, "read bond")
        members = self._members(bond)
        return self._status(bond, members)

    def adopt(self, name: str) -> BondStatus:
        """Take over an existing bond that nodenetd did not create: its status, after checking
        that it is an active-backup bond (the only mode a failover bond group drives)."""
        status = self.status(name)
        if status.mode is not BondMode.ACTIVE_BACKUP:
            raise Refused(
                name,
                "adopt bond",
                f"the bond is in mode {status.mode}; a failover group needs active-backup "
                "(changing the mode needs the bond down and without members)",
                errno.EINVAL,
            )
        return status

    # -- writes ---------------------------------------------------------------------------

    def create(self, name: str, options: BondOptions | None = None) -> BondStatus:
        """Create a bond, left down (enslave, then ``set_up``); its status read back.

        Defaults for what ``options`` leaves out: mode active-backup, and miimon 100 ms unless
        the ARP monitor is asked for (the kernel's own default is miimon 0: no link monitor, so
        a dead member is never noticed). Everything is sent in one message, so the bond exists
        with all its options or not at all; an option the kernel ignores (an older kernel)
        deletes the bond again and raises Unsupported.
        """
        given = options or BondOptions()
        defaults = BondOptions(mode=BondMode.ACTIVE_BACKUP, miimon=0 if given.arp_interval else 100)
        wanted = defaults.merged(given)
        setting = f"create bond (mode {wanted.mode})"
        for option in ("primary", "active_slave"):
            if getattr(wanted, option):
                raise Refused(
                    name, f"bond.{option}", "a new bond has no members: set it after enslaving"
                )
        empty = BondStatus(name, 0, False, False, BondOptions(), ())
        steps = plan_options(empty, wanted)  # the same checks as set_options
        if wanted.arp_validate not in (None, ArpValidate.NONE) and wanted.miimon:
            raise Refused(
                name, "bond.arp_validate", "ARP validation needs the ARP monitor, not miimon"
            )
        steps = [(option, value) for option, value in steps if option in wanted.given()]
        linkinfo = [("IFLA_INFO_KIND", "bond"), ("IFLA_INFO_DATA", encode_bond_data(steps))]
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + encode_attrs(
            _ifla, [("IFLA_IFNAME", name), ("IFLA_LINKINFO", linkinfo)]
        )
        try:
            self._nl.request(RTM_NEWLINK, payload, flags=NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkFailure as failure:
            error = _bond_error(failure, name, setting)
            if isinstance(error, Unsupported):
                error = _with_reason(error, f"; {_NO_BONDING_HINT}")
            raise error from None
        status = self.status(name)
        problem = verify_options(name, steps, status.options)
        if problem is not None:
            self.delete(name)
            raise problem
        return status

    def create_active_backup(self, name: str, options: BondOptions | None = None) -> BondStatus:
        """``create`` with mode active-backup whatever ``options`` say."""
        given = options or BondOptions()
        return self.create(name, dataclasses.replace(given, mode=BondMode.ACTIVE_BACKUP))

    def set_options(self, name: str, options: BondOptions) -> tuple[str, ...]:
        """Change the bond's options live; the options written, in order (() when nothing
        differed: nothing is sent, so a no-op flaps nothing).

        Each option goes in its own message so a refusal names it; the ones before it stay
        applied and the error lists them. After the writes the bond is read back and checked
        (``verify_options``). See the module docstring for what needs what.
        """
        current = self.status(name)
        steps = plan_options(current, options)
        ifindex = {member.name: member.index for member in current.members}
        done: list[str] = []
        for option, value in steps:
            setting = f"bond.{option}"
            try:
                data = encode_bond_data([(option, value)], ifindex)
                self._setlink(current.index, [("IFLA_INFO_KIND", "bond"), ("IFLA_INFO_DATA", data)])
            except NetlinkFailure as failure:
                error = _bond_error(failure, name, setting, f"set {option} to {value!r}")
                applied = f"; already applied: {', '.join(done)}" if done else ""
                raise _with_reason(error, applied) from None
            done.append(option)
        if steps:
            problem = verify_options(name, steps, self.status(name).options)
            if problem is not None:
                raise problem
        return tuple(done)

    def set_active(self, bond: str, member: str | None) -> None:
        """Make ``member`` the active member (IFLA_BOND_ACTIVE_SLAVE), in one message. None
        clears it and the kernel reselects by its own policy at once.

        The kernel refuses (EINVAL) a member that is not enslaved to this bond or whose link is
        down, and a bond whose mode has no active member; that arrives as Refused.
        """
        setting = "bond.active_slave"
        bond_link = self._bond(bond, setting)
        index = self._link(member, setting).index if member else 0
        detail = f"make {member} active" if member else "clear the active member"
        data = encode_attrs(_bond_data, [("IFLA_BOND_ACTIVE_SLAVE", index)])
        try:
            self._setlink(bond_link.index, [("IFLA_INFO_KIND", "bond"), ("IFLA_INFO_DATA", data)])
        except NetlinkFailure as failure:
            raise _bond_error(failure, bond, setting, detail) from None

    def set_member_prio(self, member: str, prio: int) -> None:
        """Set a member's failover priority (IFLA_BOND_SLAVE_PRIO, s32; higher wins when the
        kernel reselects, e.g. after primary_reselect or a failure). Read back: a kernel that
        ignores the attribute (< 6.0) gives Unsupported."""
        setting = "bond_slave.prio"
        if isinstance(prio, bool) or not isinstance(prio, int) or not -(2**31) <= prio < 2**31:
            raise ValueError(f"prio must be a 32-bit signed int, not {prio!r}")
        link = self._link(member, setting)
        if link.slave_kind != "bond":
            raise Refused(member, setting, "not a member of a bond: enslave it first", errno.EINVAL)
        info = [("IFLA_INFO_SLAVE_KIND", "bond"), ("IFLA_INFO_SLAVE_DATA", encode_slave_data(prio))]
        try:
            self._setlink(link.index, info)
        except NetlinkFailure as failure:
            raise _bond_error(failure, member, setting, f"set prio to {prio}") from None
        got = _member_from(self._link(member, setting)).prio
        if got is None:
            raise Unsupported(
                member,
                setting,
                f"this kernel ignored IFLA_BOND_SLAVE_PRIO (added in Linux {_SLAVE_PRIO_SINCE})",
                errno.EOPNOTSUPP,
            )
        if got != prio:
            raise Refused(member, setting, f"asked for {prio}, the kernel reports {got}")

    def enslave(self, bond: str, member: str) -> None:
        """Attach ``member`` to ``bond`` (nothing is sent if it already is).

        The member is set down in the same message: the kernel refuses to enslave an interface
        that is up (EPERM, "Device can not be enslaved while up"), and the bond opens it again
        itself. If the kernel refuses, a member that was up is set up again.
        """
        setting = f"enslave to {bond}"
        bond_link = self._bond(bond, f"enslave {member}")
        link = self._link(member, setting)
        if link.master == bond_link.index:
            return
        if link.master:
            raise Refused(
                member, setting, f"already enslaved (master ifindex {link.master}): release it"
            )
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, link.index, 0, IFF_UP) + encode_attrs(
            _ifla, [("IFLA_MASTER", bond_link.index)]
        )
        try:
            self._nl.request(RTM_NEWLINK, payload)
        except NetlinkFailure as failure:
            if link.admin_up:  # best effort: the refusal is what the caller must see
                with contextlib.suppress(KernelError):
                    self._set_flags(link.index, IFF_UP, member, "restore state up")
            busy = "it is held by another upper device"
            raise _bond_error(failure, member, setting, busy=busy) from None

    def release(self, member: str) -> None:
        """Detach ``member`` from the bond that holds it (nothing is sent if none does)."""
        setting = "release from bond"
        link = self._link(member, setting)
        if not link.master:
            return
        if link.slave_kind != "bond":
            kind = link.slave_kind or "an upper device"
            raise Refused(member, setting, f"its master is not a bond but {kind}", errno.EINVAL)
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, link.index, 0, 0) + encode_attrs(
            _ifla, [("IFLA_MASTER", 0)]
        )
        try:
            self._nl.request(RTM_NEWLINK, payload)
        except NetlinkFailure as failure:
            raise kernel_error(failure, member, setting) from None

    def set_up(self, name: str) -> None:
        """Bring the bond up administratively."""
        self._set_flags(self._bond(name, "set state up").index, IFF_UP, name, "set state up")

    def set_down(self, name: str) -> None:
        """Take the bond down administratively (a mode change needs it)."""
        self._set_flags(self._bond(name, "set state down").index, 0, name, "set state down")

    def delete(self, name: str) -> None:
        """Delete the bond (only a bond); its members are released by the kernel."""
        index = self._bond(name, "delete bond").index
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
        try:
            self._nl.request(RTM_DELLINK, payload)
        except NetlinkFailure as failure:
            raise kernel_error(failure, name, "delete bond") from None

    # -- helpers --------------------------------------------------------------------------

    def _link(self, name: str, setting: str) -> _LinkMsg:
        payload = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + encode_attrs(_ifla, [("IFLA_IFNAME", name)])
            + _GET_ATTRS
        )
        try:
            replies = self._nl.request(RTM_GETLINK, payload, decode=_decode_link)
        except NetlinkFailure as failure:
            if failure.code == errno.ENODEV:
                raise Gone(name, setting, "no such interface", errno.ENODEV) from None
            raise kernel_error(failure, name, setting) from None
        if not replies:
            raise Gone(name, setting, "no such interface", errno.ENODEV)
        return replies[0]

    def _bond(self, name: str, setting: str) -> _LinkMsg:
        link = self._link(name, setting)
        if link.kind != "bond":
            kind = f"kind {link.kind}" if link.kind else "a device without a kind"
            raise Refused(name, setting, f"not a bond interface ({kind})", errno.EINVAL)
        return link

    def _members(self, bond: _LinkMsg) -> list[_LinkMsg]:
        """The bond's members, from one dump the kernel filters by master."""
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + encode_attrs(
            _ifla, [("IFLA_MASTER", bond.index), ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        )
        try:
            links = self._nl.dump(RTM_GETLINK, payload, decode=_decode_link)
        except NetlinkFailure as failure:
            raise kernel_error(failure, bond.name, "read bond members") from None
        return [link for link in links if link.master == bond.index and link.slave_kind == "bond"]

    def _status(self, bond: _LinkMsg, members: list[_LinkMsg]) -> BondStatus:
        names = {link.index: link.name for link in members}

        def name_of(index: int) -> str | None:
            if index in names:
                return names[index]
            try:  # not a member (a race with a release): look it up
                return self._nl.request(
                    RTM_GETLINK,
                    _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _GET_ATTRS,
                    decode=_decode_link,
                )[0].name
            except (NetlinkFailure, IndexError):
                return None

        return BondStatus(
            name=bond.name,
            index=bond.index,
            admin_up=bond.admin_up,
            carrier=bond.carrier,
            options=_options_from(bond.data, name_of),
            members=tuple(sorted((_member_from(link) for link in members), key=lambda m: m.name)),
        )

    def _setlink(self, index: int, linkinfo: list[tuple[str, Any]]) -> None:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + encode_attrs(
            _ifla, [("IFLA_LINKINFO", linkinfo)]
        )
        self._nl.request(RTM_NEWLINK, payload)

    def _set_flags(self, index: int, flags: int, target: str, setting: str) -> None:
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP)
        try:
            self._nl.request(RTM_NEWLINK, payload)
        except NetlinkFailure as failure:
            raise kernel_error(failure, target, setting) from None
