"""IPv4/IPv6 routes and policy-routing rules over raw rtnetlink: what the failover route group
installs, swaps and removes. Nothing here shells out to ``ip``.

The API (``Routing``, one NETLINK_ROUTE socket in one network namespace):

- ``routes(family=AF_UNSPEC, *, table=None, protocol=None) -> list[Route]``: a dump, filtered by
  the kernel (NETLINK_GET_STRICT_CHK) and again here; cloned/cache entries are skipped;
- ``lookup(address) -> Route | None``: the FIB entry the kernel would use now
  (RTM_F_FIB_MATCH, ``ip route get fibmatch``), None when nothing routes there;
- ``add(route)``: NLM_F_CREATE|NLM_F_EXCL; a route with the same key exists: ``Refused``;
- ``replace(route)``: NLM_F_CREATE|NLM_F_REPLACE, the make-before-break primitive: one atomic
  swap of the route with the same key, or an add when there is none;
- ``delete(route, *, missing_ok=False)``: no such route is ``Gone`` (ESRCH), or nothing with
  ``missing_ok``;
- ``apply(add_or_replace, delete=(), *, missing_ok=False) -> list[KernelError | None]``: the
  replaces, pipelined (``request_many``, one ack each), then the deletes; one result per
  route, replaces first, in input order. One failure does not stop the others;
- ``rules(family=AF_UNSPEC, *, protocol=None) -> list[Rule]``, ``add_rule(rule)``,
  ``delete_rule(rule, *, missing_ok=False)``.

``Route`` and ``Rule`` are frozen dataclasses (addresses and networks may be given as text);
``str()`` reads like iproute2: ``default via 192.0.2.1 dev eth0 table main metric 50 proto 177``.
``encode_route``/``decode_route`` and ``encode_rule``/``decode_rule`` are the wire codec (numbers
from include/uapi/linux/rtnetlink.h and fib_rules.h), usable without a kernel.

Ownership: every route and rule nodenetd writes carries ``rtm_protocol`` / ``FRA_PROTOCOL``
``RTPROT_NODENETD`` (177, unassigned in iproute2's rt_protos). The kernel stores it and never
interprets it, so it marks what nodenetd owns without any state of our own: after a crash the
daemon finds its routes with ``routes(protocol=177)`` and removes or adopts them, an operator
sees them with ``ip route show proto 177`` (``ip rule show proto 177``), and a delete carrying
the protocol only ever matches nodenetd's own entry, never an administrator's route with the
same destination. (iproute2 reads names for numbers from /etc/iproute2/rt_protos.d/.)

The key of a route is (family, dst, table, metric, tos): NLM_F_REPLACE swaps the route with that
key and NLM_F_EXCL refuses a second one, whatever its gateway or device. What the kernel does,
verified on Linux 6.18 by tests/integration/test_kernel_routes.py:

- IPv4 (``fib_table_insert``): replace swaps the first route with the same (dst, tos, priority,
  table) in place. The kernel announces one RTM_NEWROUTE with NLM_F_REPLACE and no
  RTM_DELROUTE, and lookups running during a stream of replaces never fail: there is no moment
  without a route.
- IPv6 (``fib6_add_rt2node``): a non-multipath route at the same metric is replaced in place
  the same way (one RTM_NEWROUTE, no delete, lookups never fail), also from a gateway route to
  a device-only route and back. Replace matches on the metric: at another metric it adds a
  second route, in both families. (Older kernels' IPv6 replace of ECMP-capable gateway routes
  is known to have differed; only this kernel's behaviour is tested.) IPv6 has no metric 0:
  the kernel stores 1024 (IP6_RT_PRIO_USER), so ``Route`` does the same and compares equal to
  its read-back; the kernel's own local routes do sit at 0 and read as 0.
- Add with NLM_F_EXCL: EEXIST when a route with the key exists, whatever its gateway, in both
  families. Delete of an absent route: ESRCH in both families. A delete matches on every
  attribute it carries, the protocol included (so nodenetd never deletes an administrator's
  route to the same destination), except that metric 0 in a delete matches any metric.
- Carrier loss: routes through a device without carrier stay, flagged RTNH_F_LINKDOWN
  (``linkdown``; the veth lab shows the flag ~10 ms after the peer goes down). With
  ``net.ipv4.conf.<dev>.ignore_routes_with_linkdown=1`` (and
  ``net.ipv6.conf.<dev>.ignore_routes_with_linkdown=1``) the FIB also flags them RTNH_F_DEAD and
  lookups skip them: a route through another uplink at a higher metric takes the traffic with
  no userspace action, and gives it back when the carrier returns. Without the sysctl the
  dead uplink keeps the traffic. This is the failover fast path; nodenetd's own moves are the
  slow path, for failures without carrier loss.
- ``lookup``: IPv4 answers "table main" unless asked for the table (RTM_F_LOOKUP_TABLE, which
  IPv6's strict check refuses, and IPv6 reports the route's own table anyway). Until a custom
  rule exists, IPv4's local table lives inside main's trie, so a lookup that finds a local
  route says main while a dump says local.

Errors: an unknown ifindex is ``Gone`` (ENODEV; for a gateway route IPv4 checks the gateway
first and says ENETUNREACH, which is reported as Gone too when the device does not exist); a
gateway that is not reachable is ``Refused`` with the kernel's extended-ack message (IPv4:
"Nexthop has invalid gateway", ENETUNREACH; IPv6 says EHOSTUNREACH without a message); an
existing route on add is ``Refused`` saying it exists; an absent route on delete is ``Gone``.
The target is the route's device (its name, or "ifindex N" when there is no such device), or
"table T" for a route without a device; the setting reads "route default via 192.0.2.1 metric
50"; the reason starts with the operation. Rules: EEXIST on add is ``Refused``, ENOENT on
delete is ``Gone``; the target is the rule's interface or table.

Rules cannot be replaced: the kernel ignores NLM_F_REPLACE on RTM_NEWRULE and adds a second
rule (and without NLM_F_EXCL it even adds an identical one again), so ``add_rule`` is
exclusive, and a rule is moved by adding the new one at another priority before deleting the
old one. A rule naming an interface that does not exist is accepted and stays ``detached``
until the interface appears.

The socket is the shared netlink core (``nodenetd.kernel.netlink``); pyroute2 is not imported
(its import takes seconds under the kernel lab's emulation).
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from nodenetd.errors import Gone, KernelError, Refused
from nodenetd.kernel.netlink import (
    NLMSGHDR,
    NetlinkFailure,
    decode_attrs,
    encode_attrs,
    errno_text,
    kernel_error,
    socket_in_netns,
)

__all__ = [
    "FR_ACT_BLACKHOLE",
    "FR_ACT_PROHIBIT",
    "FR_ACT_TO_TBL",
    "FR_ACT_UNREACHABLE",
    "RTN_BLACKHOLE",
    "RTN_LOCAL",
    "RTN_PROHIBIT",
    "RTN_UNICAST",
    "RTN_UNREACHABLE",
    "RTPROT_KERNEL",
    "RTPROT_NODENETD",
    "RTPROT_STATIC",
    "RT_SCOPE_HOST",
    "RT_SCOPE_LINK",
    "RT_SCOPE_UNIVERSE",
    "RT_TABLE_DEFAULT",
    "RT_TABLE_LOCAL",
    "RT_TABLE_MAIN",
    "Nexthop",
    "Route",
    "Routing",
    "Rule",
    "decode_route",
    "decode_rule",
    "encode_route",
    "encode_rule",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# --------------------------------------------------------------------------------------------
# Numbers (include/uapi/linux/rtnetlink.h, fib_rules.h, netlink.h)

RTPROT_NODENETD = 177  # ours: see the module docstring
RTPROT_UNSPEC = 0
RTPROT_REDIRECT = 1
RTPROT_KERNEL = 2  # connected routes the kernel adds with an address
RTPROT_BOOT = 3  # iproute2's default
RTPROT_STATIC = 4
RTPROT_RA = 9
RTPROT_DHCP = 16

RT_TABLE_UNSPEC = 0
RT_TABLE_DEFAULT = 253
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_SITE = 200
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255

RTN_UNICAST = 1
RTN_LOCAL = 2
RTN_BROADCAST = 3
RTN_ANYCAST = 4
RTN_MULTICAST = 5
RTN_BLACKHOLE = 6
RTN_UNREACHABLE = 7
RTN_PROHIBIT = 8
RTN_THROW = 9

# struct rtnexthop flags; in rtm_flags they describe a single-nexthop route
RTNH_F_DEAD = 1
RTNH_F_ONLINK = 4
RTNH_F_LINKDOWN = 16
# rtm_flags
RTM_F_CLONED = 0x200  # a route-cache/exception entry, not a FIB route
RTM_F_LOOKUP_TABLE = 0x1000  # RTM_GETROUTE: report the table the lookup found (else main)
RTM_F_FIB_MATCH = 0x2000  # RTM_GETROUTE: answer with the matching FIB entry

FR_ACT_TO_TBL = 1
FR_ACT_GOTO = 2
FR_ACT_NOP = 3
FR_ACT_BLACKHOLE = 6
FR_ACT_UNREACHABLE = 7
FR_ACT_PROHIBIT = 8
FIB_RULE_INVERT = 0x2
FIB_RULE_IIF_DETACHED = 0x8
FIB_RULE_OIF_DETACHED = 0x10

RTM_GETLINK = 18
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWRULE = 32
RTM_DELRULE = 33
RTM_GETRULE = 34
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTEXT_FILTER_SKIP_STATS = 1 << 3

IP6_RT_PRIO_USER = 1024  # what the kernel stores for an IPv6 route given metric 0
_U32 = 0xFFFFFFFF

_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
#                                       type, flags
_FRHDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action,
#                                       flags
_RTNH = struct.Struct("=HBBi")  # rtnexthop: len, flags, hops (weight - 1), ifindex
_IFINFOMSG = struct.Struct("=BxHiII")
_VIA_FAMILY = struct.Struct("=H")  # struct rtvia: rtvia_family, then the address


class _rta:
    """The RTA_* attributes a route message carries that nodenetd reads or writes."""

    nla_map = (
        (1, "RTA_DST", "cdata"),
        (3, "RTA_IIF", "uint32"),
        (4, "RTA_OIF", "uint32"),
        (5, "RTA_GATEWAY", "cdata"),
        (6, "RTA_PRIORITY", "uint32"),
        (7, "RTA_PREFSRC", "cdata"),
        (9, "RTA_MULTIPATH", "cdata"),  # rtnexthop structs, walked by hand
        (15, "RTA_TABLE", "uint32"),
        (18, "RTA_VIA", "cdata"),  # struct rtvia: an IPv4 route via an IPv6 gateway
    )


class _rtnh_attrs:
    """The attributes after one struct rtnexthop of RTA_MULTIPATH."""

    nla_map = (
        (5, "RTA_GATEWAY", "cdata"),
        (18, "RTA_VIA", "cdata"),
    )


class _fra:
    """The FRA_* attributes of a rule nodenetd reads or writes."""

    nla_map = (
        (1, "FRA_DST", "cdata"),
        (2, "FRA_SRC", "cdata"),
        (3, "FRA_IIFNAME", "asciiz"),
        (6, "FRA_PRIORITY", "uint32"),
        (10, "FRA_FWMARK", "uint32"),
        (15, "FRA_TABLE", "uint32"),
        (16, "FRA_FWMASK", "uint32"),
        (17, "FRA_OIFNAME", "asciiz"),
        (21, "FRA_PROTOCOL", "uint8"),  # Linux 4.17
    )


class _ifla:
    nla_map = (
        (3, "IFLA_IFNAME", "asciiz"),
        (29, "IFLA_EXT_MASK", "uint32"),
    )


# Names as iproute2 prints them (its rt_tables, rt_protos, rt_scopes); numbers otherwise.
_TABLE_NAMES = {RT_TABLE_DEFAULT: "default", RT_TABLE_MAIN: "main", RT_TABLE_LOCAL: "local"}
_PROTOCOL_NAMES = {
    RTPROT_REDIRECT: "redirect",
    RTPROT_KERNEL: "kernel",
    RTPROT_BOOT: "boot",
    RTPROT_STATIC: "static",
    RTPROT_RA: "ra",
    RTPROT_DHCP: "dhcp",
}
_SCOPE_NAMES = {RT_SCOPE_SITE: "site", RT_SCOPE_LINK: "link", RT_SCOPE_HOST: "host"}
_TYPE_NAMES = {
    RTN_LOCAL: "local",
    RTN_BROADCAST: "broadcast",
    RTN_ANYCAST: "anycast",
    RTN_MULTICAST: "multicast",
    RTN_BLACKHOLE: "blackhole",
    RTN_UNREACHABLE: "unreachable",
    RTN_PROHIBIT: "prohibit",
    RTN_THROW: "throw",
}
_ACTION_NAMES = {
    FR_ACT_GOTO: "goto",
    FR_ACT_NOP: "nop",
    FR_ACT_BLACKHOLE: "blackhole",
    FR_ACT_UNREACHABLE: "unreachable",
    FR_ACT_PROHIBIT: "prohibit",
}


def table_name(table: int) -> str:
    """main, local, default, or the number."""
    return _TABLE_NAMES.get(table, str(table))


def _protocol_name(protocol: int) -> str:
    return _PROTOCOL_NAMES.get(protocol, str(protocol))


# --------------------------------------------------------------------------------------------
# Values


def _network(value: Any, what: str) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value)  # strict: host bits set is a mistake
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
    raise ValueError(f"{what} must be an IP network, not {value!r}")


def _address(value: Any, what: str) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    if isinstance(value, str):
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an IP address") from None
    raise ValueError(f"{what} must be an IP address, not {value!r}")


def _check_int(value: Any, what: str, high: int, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be within {low}..{high}, got {value}")


@dataclass(frozen=True)
class Nexthop:
    """One path of a multipath route (RTA_MULTIPATH), as the kernel reports it. Read-only:
    nodenetd writes single-path routes."""

    gateway: IPAddress | None
    oif: int | None
    weight: int = 1
    onlink: bool = False
    linkdown: bool = field(default=False, compare=False)
    dead: bool = field(default=False, compare=False)
    dev: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        parts = ["nexthop"]
        if self.gateway is not None:
            parts += ["via", str(self.gateway)]
        parts += _dev_text(self.oif, self.dev)
        parts += ["weight", str(self.weight)]
        parts += _flag_text(self.onlink, self.dead, self.linkdown)
        return " ".join(parts)


@dataclass(frozen=True)
class Route:
    """One route: what nodenetd asks for, or what a dump reports.

    ``dst`` is a network (0.0.0.0/0 or ::/0 for the default route); it, ``gateway`` and
    ``prefsrc`` may be given as text. An IPv4 route may have an IPv6 gateway (RTA_VIA, RFC
    5549). ``oif`` is an ifindex. ``metric`` is RTA_PRIORITY; IPv6 metric 0 becomes 1024, as
    the kernel stores it. IPv6 routes have no scope and no tos.

    Observed state, not part of what a route is, so equality ignores it: ``linkdown`` (the
    device has no carrier: RTNH_F_LINKDOWN), ``dead`` (RTNH_F_DEAD: lookups skip the route,
    as with ignore_routes_with_linkdown) and ``dev`` (the device's name, filled in by
    ``Routing``'s readers; never sent). ``nexthops`` holds the paths of a multipath route,
    which ``Routing`` reads but does not write.
    """

    dst: IPNetwork
    gateway: IPAddress | None = None
    oif: int | None = None
    table: int = RT_TABLE_MAIN
    metric: int = 0
    protocol: int = RTPROT_NODENETD
    scope: int = RT_SCOPE_UNIVERSE
    onlink: bool = False
    type: int = RTN_UNICAST
    prefsrc: IPAddress | None = None
    tos: int = 0
    nexthops: tuple[Nexthop, ...] = ()
    linkdown: bool = field(default=False, compare=False)
    dead: bool = field(default=False, compare=False)
    dev: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        dst = _network(self.dst, "route dst")
        object.__setattr__(self, "dst", dst)
        if self.gateway is not None:
            gateway = _address(self.gateway, "route gateway")
            if dst.version == 6 and gateway.version == 4:
                raise ValueError(f"an IPv6 route cannot go via an IPv4 gateway ({gateway})")
            object.__setattr__(self, "gateway", gateway)
        if self.prefsrc is not None:
            prefsrc = _address(self.prefsrc, "route prefsrc")
            if prefsrc.version != dst.version:
                raise ValueError(f"prefsrc {prefsrc} is not of the family of {dst}")
            object.__setattr__(self, "prefsrc", prefsrc)
        if self.oif is not None:
            _check_int(self.oif, "route oif", 2**31 - 1, low=1)
        _check_int(self.table, "route table", _U32, low=1)
        _check_int(self.metric, "route metric", _U32)
        for name in ("protocol", "scope", "type", "tos"):
            _check_int(getattr(self, name), f"route {name}", 255)
        if dst.version == 6:
            if self.metric == 0:
                object.__setattr__(self, "metric", IP6_RT_PRIO_USER)
            if self.scope != RT_SCOPE_UNIVERSE:
                raise ValueError("IPv6 routes have no scope (the kernel reports universe)")
            if self.tos:
                raise ValueError("IPv6 routes have no tos")
        if self.nexthops:
            object.__setattr__(self, "nexthops", tuple(self.nexthops))
            if self.gateway is not None or self.oif is not None:
                raise ValueError("a multipath route has its gateways in nexthops")

    @property
    def family(self) -> int:
        return socket.AF_INET if self.dst.version == 4 else socket.AF_INET6

    @property
    def is_default(self) -> bool:
        return self.dst.prefixlen == 0

    @property
    def key(self) -> tuple[int, IPNetwork, int, int, int]:
        """What NLM_F_REPLACE swaps and NLM_F_EXCL refuses twice: (family, dst, table,
        metric, tos)."""
        return (self.family, self.dst, self.table, self.metric, self.tos)

    def _dst_text(self) -> str:
        dst = "default" if self.is_default else str(self.dst)
        kind = _TYPE_NAMES.get(self.type)
        return f"{kind} {dst}" if kind else dst

    def _via_text(self) -> list[str]:
        if self.gateway is None:
            return []
        if self.gateway.version != self.dst.version:  # RTA_VIA: iproute2 names the family
            return ["via", "inet6", str(self.gateway)]
        return ["via", str(self.gateway)]

    def __str__(self) -> str:
        parts = [self._dst_text()]
        if self.tos:
            parts += ["tos", f"0x{self.tos:02x}"]
        parts += self._via_text()
        parts += _dev_text(self.oif, self.dev)
        parts += ["table", table_name(self.table), "metric", str(self.metric)]
        parts += ["proto", _protocol_name(self.protocol)]
        if self.scope != RT_SCOPE_UNIVERSE:
            parts += ["scope", _SCOPE_NAMES.get(self.scope, str(self.scope))]
        if self.prefsrc is not None:
            parts += ["src", str(self.prefsrc)]
        parts += _flag_text(self.onlink, self.dead, self.linkdown)
        parts += [str(nexthop) for nexthop in self.nexthops]
        return " ".join(parts)

    def setting(self, *, with_table: bool = True) -> str:
        """The route as an error's setting names it: "route default via 192.0.2.1 metric 50"
        (the table when it is not main and ``with_table``)."""
        parts = ["route", self._dst_text(), *self._via_text()]
        if with_table and self.table != RT_TABLE_MAIN:
            parts += ["table", table_name(self.table)]
        parts += ["metric", str(self.metric)]
        return " ".join(parts)


def _dev_text(oif: int | None, dev: str | None) -> list[str]:
    if dev:
        return ["dev", dev]
    if oif is not None:
        return ["dev-index", str(oif)]
    return []


def _flag_text(onlink: bool, dead: bool, linkdown: bool) -> list[str]:
    return [name for name, on in (("onlink", onlink), ("dead", dead), ("linkdown", linkdown)) if on]


@dataclass(frozen=True)
class Rule:
    """One policy-routing rule: at ``priority``, packets matching every selector given look up
    ``table`` (action FR_ACT_TO_TBL), or meet another action (blackhole, unreachable...).

    Selectors: ``src``/``dst`` networks (text allowed), ``iif``/``oif`` interface names
    (FRA_IIFNAME/FRA_OIFNAME: names, so a rule may precede its interface), ``fwmark`` with
    ``fwmask`` (all 32 bits when the mask is not given, as the kernel stores it), and
    ``invert`` ("not": the rule applies to packets that do *not* match). ``detached`` is
    observed state (a named interface is absent) and does not count for equality.
    """

    family: int
    priority: int
    table: int
    oif: str | None = None
    iif: str | None = None
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    invert: bool = False
    action: int = FR_ACT_TO_TBL
    protocol: int = RTPROT_NODENETD
    detached: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"rule family must be AF_INET or AF_INET6, not {self.family!r}")
        version = 4 if self.family == socket.AF_INET else 6
        for name in ("src", "dst"):
            value = getattr(self, name)
            if value is None:
                continue
            network = _network(value, f"rule {name}")
            if network.version != version:
                raise ValueError(f"rule {name} {network} is not an IPv{version} network")
            object.__setattr__(self, name, network)
        for name in ("iif", "oif"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not 0 < len(value) < 16):
                raise ValueError(f"rule {name} must be an interface name, not {value!r}")
        _check_int(self.priority, "rule priority", _U32)
        _check_int(self.table, "rule table", _U32)
        _check_int(self.action, "rule action", 255)
        _check_int(self.protocol, "rule protocol", 255)
        if self.action == FR_ACT_TO_TBL and self.table == RT_TABLE_UNSPEC:
            raise ValueError("a rule that looks up a table needs a table")
        if self.fwmask is not None and self.fwmark is None:
            object.__setattr__(self, "fwmark", 0)
        if self.fwmark is not None:
            _check_int(self.fwmark, "rule fwmark", _U32)
            if self.fwmask is None:
                object.__setattr__(self, "fwmask", _U32)
            _check_int(self.fwmask, "rule fwmask", _U32)

    def __str__(self) -> str:
        parts = [f"{self.priority}:"]
        if self.invert:
            parts.append("not")
        parts += ["from", str(self.src) if self.src is not None else "all"]
        if self.dst is not None:
            parts += ["to", str(self.dst)]
        if self.fwmark is not None:
            mark = f"0x{self.fwmark:x}"
            parts += ["fwmark", mark if self.fwmask == _U32 else f"{mark}/0x{self.fwmask:x}"]
        if self.iif is not None:
            parts += ["iif", self.iif]
        if self.oif is not None:
            parts += ["oif", self.oif]
        if self.action == FR_ACT_TO_TBL:
            parts += ["lookup", table_name(self.table)]
        else:
            parts.append(_ACTION_NAMES.get(self.action, f"action {self.action}"))
        parts += ["proto", _protocol_name(self.protocol)]
        if self.detached:
            parts.append("[detached]")
        return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Wire codec


def _trusted(cls: type, **values: Any) -> Any:
    """An instance of a frozen dataclass built from kernel values as they are: without the
    normalisation and checks of ``__post_init__``, which are for what callers ask. (The kernel
    has IPv6 routes of its own at metric 0, such as local and anycast routes.)"""
    obj = object.__new__(cls)
    for spec in dataclasses.fields(cls):
        object.__setattr__(obj, spec.name, values.get(spec.name, spec.default))
    return obj


def _family_of(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _gateway_attr(route_version: int, gateway: IPAddress) -> tuple[str, bytes]:
    if gateway.version == route_version:
        return "RTA_GATEWAY", gateway.packed
    return "RTA_VIA", _VIA_FAMILY.pack(_family_of(gateway.version)) + gateway.packed


def encode_route(route: Route) -> bytes:
    """rtmsg and attributes of an RTM_NEWROUTE or RTM_DELROUTE for ``route``.

    The table goes both in the header (when it fits in 8 bits) and in RTA_TABLE; the
    destination only when it is not the default route (as iproute2 sends it); the metric
    always. Only ``onlink`` of the flags is sent: LINKDOWN and DEAD are the kernel's to set.
    """
    if route.nexthops:
        raise ValueError(f"writing multipath routes is not supported: {route}")
    header = _RTMSG.pack(
        route.family,
        route.dst.prefixlen,
        0,
        route.tos,
        route.table if route.table < 256 else RT_TABLE_UNSPEC,
        route.protocol,
        route.scope,
        route.type,
        RTNH_F_ONLINK if route.onlink else 0,
    )
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", route.table)]
    if route.dst.prefixlen:
        attrs.append(("RTA_DST", route.dst.network_address.packed))
    if route.gateway is not None:
        attrs.append(_gateway_attr(route.dst.version, route.gateway))
    if route.oif is not None:
        attrs.append(("RTA_OIF", route.oif))
    attrs.append(("RTA_PRIORITY", route.metric))
    if route.prefsrc is not None:
        attrs.append(("RTA_PREFSRC", route.prefsrc.packed))
    return header + encode_attrs(_rta, attrs)


def _decode_gateway(attrs: dict) -> IPAddress | None:
    if "RTA_GATEWAY" in attrs:
        return ipaddress.ip_address(attrs["RTA_GATEWAY"])
    via = attrs.get("RTA_VIA")
    if via is not None and len(via) in (2 + 4, 2 + 16):
        return ipaddress.ip_address(via[2:])
    return None


def _decode_nexthops(raw: bytes) -> tuple[Nexthop, ...]:
    nexthops = []
    offset = 0
    while offset + _RTNH.size <= len(raw):
        length, flags, hops, ifindex = _RTNH.unpack_from(raw, offset)
        if length < _RTNH.size or offset + length > len(raw):
            raise ValueError(f"malformed rtnexthop at offset {offset}")
        attrs = decode_attrs(_rtnh_attrs, raw, offset + _RTNH.size, offset + length)
        nexthops.append(
            _trusted(
                Nexthop,
                gateway=_decode_gateway(attrs),
                oif=ifindex or None,
                weight=hops + 1,
                onlink=bool(flags & RTNH_F_ONLINK),
                linkdown=bool(flags & RTNH_F_LINKDOWN),
                dead=bool(flags & RTNH_F_DEAD),
            )
        )
        offset += (length + 3) & ~3
    return tuple(nexthops)


def decode_route(data: bytes, offset: int, length: int) -> Route | None:
    """One RTM_NEWROUTE message (header at ``offset``) as a Route; None for what is not an
    IPv4/IPv6 FIB route (a cloned/cache entry, a multicast-routing family)."""
    start = offset + NLMSGHDR.size
    family, dst_len, _src_len, tos, table, protocol, scope, rtype, flags = _RTMSG.unpack_from(
        data, start
    )
    if family not in (socket.AF_INET, socket.AF_INET6) or flags & RTM_F_CLONED:
        return None
    attrs = decode_attrs(_rta, data, start + _RTMSG.size, offset + length)
    any_address = "0.0.0.0" if family == socket.AF_INET else "::"
    raw_dst = attrs.get("RTA_DST")
    dst = ipaddress.ip_network((raw_dst if raw_dst else any_address, dst_len), strict=False)
    prefsrc = attrs.get("RTA_PREFSRC")
    return _trusted(
        Route,
        dst=dst,
        gateway=_decode_gateway(attrs),
        oif=attrs.get("RTA_OIF") or None,
        table=attrs.get("RTA_TABLE", table),
        metric=attrs.get("RTA_PRIORITY", 0),
        protocol=protocol,
        scope=scope,
        onlink=bool(flags & RTNH_F_ONLINK),
        type=rtype,
        prefsrc=ipaddress.ip_address(prefsrc) if prefsrc else None,
        tos=tos,
        nexthops=_decode_nexthops(attrs["RTA_MULTIPATH"]) if "RTA_MULTIPATH" in attrs else (),
        linkdown=bool(flags & RTNH_F_LINKDOWN),
        dead=bool(flags & RTNH_F_DEAD),
    )


def encode_rule(rule: Rule) -> bytes:
    """fib_rule_hdr and attributes of an RTM_NEWRULE or RTM_DELRULE for ``rule``. The
    priority is always sent (without it the kernel picks one on add, and a delete would
    match any)."""
    header = _FRHDR.pack(
        rule.family,
        rule.dst.prefixlen if rule.dst is not None else 0,
        rule.src.prefixlen if rule.src is not None else 0,
        0,
        rule.table if rule.table < 256 else RT_TABLE_UNSPEC,
        0,
        0,
        rule.action,
        FIB_RULE_INVERT if rule.invert else 0,
    )
    attrs: list[tuple[str, Any]] = [("FRA_PRIORITY", rule.priority)]
    if rule.table:
        attrs.append(("FRA_TABLE", rule.table))
    if rule.src is not None:
        attrs.append(("FRA_SRC", rule.src.network_address.packed))
    if rule.dst is not None:
        attrs.append(("FRA_DST", rule.dst.network_address.packed))
    if rule.iif is not None:
        attrs.append(("FRA_IIFNAME", rule.iif))
    if rule.oif is not None:
        attrs.append(("FRA_OIFNAME", rule.oif))
    if rule.fwmark is not None:
        attrs += [("FRA_FWMARK", rule.fwmark), ("FRA_FWMASK", rule.fwmask)]
    attrs.append(("FRA_PROTOCOL", rule.protocol))
    return header + encode_attrs(_fra, attrs)


def decode_rule(data: bytes, offset: int, length: int) -> Rule | None:
    """One RTM_NEWRULE message as a Rule; None for a family other than IPv4/IPv6 (the
    multicast-routing rules an AF_UNSPEC dump includes)."""
    start = offset + NLMSGHDR.size
    family, dst_len, src_len, _tos, table, _r1, _r2, action, flags = _FRHDR.unpack_from(data, start)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = decode_attrs(_fra, data, start + _FRHDR.size, offset + length)

    def network(name: str, prefixlen: int) -> IPNetwork | None:
        raw = attrs.get(name)
        return ipaddress.ip_network((raw, prefixlen), strict=False) if raw else None

    mark, mask = attrs.get("FRA_FWMARK"), attrs.get("FRA_FWMASK")
    if mark is not None or mask is not None:
        mark, mask = mark or 0, _U32 if mask is None else mask
    return _trusted(
        Rule,
        family=family,
        priority=attrs.get("FRA_PRIORITY", 0),
        table=attrs.get("FRA_TABLE", table),
        oif=attrs.get("FRA_OIFNAME") or None,
        iif=attrs.get("FRA_IIFNAME") or None,
        src=network("FRA_SRC", src_len),
        dst=network("FRA_DST", dst_len),
        fwmark=mark,
        fwmask=mask,
        invert=bool(flags & FIB_RULE_INVERT),
        action=action,
        protocol=attrs.get("FRA_PROTOCOL", RTPROT_UNSPEC),
        detached=bool(flags & (FIB_RULE_IIF_DETACHED | FIB_RULE_OIF_DETACHED)),
    )


def _decode_name(data: bytes, offset: int, length: int) -> str:
    start = offset + NLMSGHDR.size + _IFINFOMSG.size
    return decode_attrs(_ifla, data, start, offset + length).get("IFLA_IFNAME", "")


# --------------------------------------------------------------------------------------------
# The adapter

_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_OPERATIONS = {"add": NLM_F_CREATE | NLM_F_EXCL, "replace": NLM_F_CREATE | NLM_F_REPLACE}
_GET_LINK_ATTRS = encode_attrs(_ifla, [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])


class Routing:
    """Routes and rules over one NETLINK_ROUTE socket.

    The socket lives in the network namespace named ``netns`` (under /run/netns), or by
    default in the calling thread's. Use it as a context manager, or call ``close``. Calls
    block (run them in a worker thread from the event loop); the socket serialises them, so
    one instance may be shared between threads.
    """

    def __init__(self, *, netns: str | None = None, timeout: float = 5.0) -> None:
        self._nl = socket_in_netns(netns, socket.NETLINK_ROUTE, timeout=timeout, strict=True)

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> Routing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- routes ---------------------------------------------------------------------------

    def routes(
        self,
        family: int = socket.AF_UNSPEC,
        *,
        table: int | None = None,
        protocol: int | None = None,
    ) -> list[Route]:
        """The routes of one family (AF_UNSPEC: IPv4 then IPv6), of every table or of
        ``table``, of every protocol or of ``protocol``, with device names. The kernel filters
        (strict dump requests); a table that does not exist yet is empty."""
        families = _FAMILIES if family == socket.AF_UNSPEC else (family,)
        if any(f not in _FAMILIES for f in families):
            raise ValueError(f"family must be AF_INET, AF_INET6 or AF_UNSPEC, not {family!r}")
        found: list[Route] = []
        for each in families:
            header = _RTMSG.pack(
                each,
                0,
                0,
                0,
                table if table is not None and table < 256 else RT_TABLE_UNSPEC,
                protocol or 0,
                0,
                0,
                0,
            )
            attrs = encode_attrs(_rta, [("RTA_TABLE", table)]) if table is not None else b""
            try:
                replies = self._nl.dump(RTM_GETROUTE, header + attrs, decode=decode_route)
            except NetlinkFailure as failure:
                if failure.code == errno.ENOENT and table is not None:
                    continue  # "FIB table does not exist": nothing was ever added to it
                raise kernel_error(failure, "kernel", "routes") from None
            found += [
                route
                for route in replies
                if route is not None
                and route.family == each
                and (table is None or route.table == table)
                and (protocol is None or route.protocol == protocol)
            ]
        return self._named(found)

    def lookup(self, address: IPAddress | str) -> Route | None:
        """The route the kernel uses for ``address`` now (its FIB entry, as ``ip route get
        fibmatch`` shows it), through the rules and every table; None when no route matches
        (ENETUNREACH). Its ``table`` is the table the lookup searched: until a custom rule
        exists, IPv4's local table lives inside main's trie, so a local route found by a
        lookup says main while a dump says local."""
        target = _address(address, "lookup")
        header = _RTMSG.pack(
            _family_of(target.version),
            target.max_prefixlen,
            0,
            0,
            0,
            0,
            0,
            0,
            # IPv4 reports main unless asked for the table; IPv6 always reports the route's
            # own, and its strict check refuses the flag
            RTM_F_FIB_MATCH | (RTM_F_LOOKUP_TABLE if target.version == 4 else 0),
        )
        payload = header + encode_attrs(_rta, [("RTA_DST", target.packed)])
        try:
            replies = self._nl.request(RTM_GETROUTE, payload, decode=decode_route)
        except NetlinkFailure as failure:
            if failure.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise kernel_error(failure, str(target), "route lookup") from None
        found = [route for route in replies if route is not None]
        return self._named(found)[0] if found else None

    def add(self, route: Route) -> None:
        """Add ``route``; a route with its key (dst, table, metric, tos) already there is
        ``Refused``, whatever its gateway."""
        self._one("add", route)

    def replace(self, route: Route) -> None:
        """Install ``route`` in place of the route with its key, in one step (the kernel swaps
        the FIB entry: no moment without a route), or add it when there is none."""
        self._one("replace", route)

    def delete(self, route: Route, *, missing_ok: bool = False) -> None:
        """Delete the route that matches ``route`` in every attribute given (gateway, device,
        protocol, scope, type; an IPv4 metric 0 matches any metric). No such route is
        ``Gone``, or nothing with ``missing_ok``."""
        (error,) = self.apply((), (route,), missing_ok=missing_ok)
        if error is not None:
            raise error

    def apply(
        self,
        add_or_replace: Sequence[Route],
        delete: Sequence[Route] = (),
        *,
        missing_ok: bool = False,
    ) -> list[KernelError | None]:
        """Replace (or add) every route of ``add_or_replace``, then delete those of ``delete``:
        make before break. Each group is one pipelined batch with one ack per route. The
        result holds one entry per route, replaces first, in input order: None (done) or the
        typed error of that route; one failure does not stop the others. ``missing_ok``: a
        route to delete that is not there is done. A route that cannot be encoded raises
        ValueError before anything is sent."""
        replaces = [(RTM_NEWROUTE, encode_route(route)) for route in add_or_replace]
        deletes = [(RTM_DELROUTE, encode_route(route)) for route in delete]
        outcomes: list[list | NetlinkFailure] = []
        if replaces:
            outcomes += self._nl.request_many(replaces, flags=_OPERATIONS["replace"])
        if deletes:
            outcomes += self._nl.request_many(deletes)
        routes = [*add_or_replace, *delete]
        operations = ["replace"] * len(replaces) + ["delete"] * len(deletes)
        failed = [
            i
            for i, outcome in enumerate(outcomes)
            if isinstance(outcome, NetlinkFailure)
            and not (missing_ok and operations[i] == "delete" and outcome.code == errno.ESRCH)
        ]
        names = self._names({routes[i].oif for i in failed if routes[i].oif is not None})
        results: list[KernelError | None] = [None] * len(routes)
        for i in failed:
            failure = outcomes[i]
            assert isinstance(failure, NetlinkFailure)
            results[i] = _route_error(failure, operations[i], routes[i], names)
        return results

    # -- rules ----------------------------------------------------------------------------

    def rules(self, family: int = socket.AF_UNSPEC, *, protocol: int | None = None) -> list[Rule]:
        """The rules of one family or both (IPv4 first), in the kernel's order (by
        priority); only those of ``protocol`` when given (filtered here: the kernel takes no
        filter in a rule dump)."""
        if family not in (socket.AF_UNSPEC, *_FAMILIES):
            raise ValueError(f"family must be AF_INET, AF_INET6 or AF_UNSPEC, not {family!r}")
        payload = _FRHDR.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        try:
            replies = self._nl.dump(RTM_GETRULE, payload, decode=decode_rule)
        except NetlinkFailure as failure:
            raise kernel_error(failure, "kernel", "rules") from None
        rules = [
            rule
            for rule in replies
            if rule is not None
            and (family == socket.AF_UNSPEC or rule.family == family)
            and (protocol is None or rule.protocol == protocol)
        ]
        return sorted(rules, key=lambda rule: _FAMILIES.index(rule.family))  # stable

    def add_rule(self, rule: Rule) -> None:
        """Add ``rule``; the same rule already there (same priority and selectors) is
        ``Refused``. Rules cannot be replaced: add the new one before deleting the old."""
        try:
            self._nl.request(RTM_NEWRULE, encode_rule(rule), flags=NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkFailure as failure:
            raise _rule_error(failure, "add", rule) from None

    def delete_rule(self, rule: Rule, *, missing_ok: bool = False) -> None:
        """Delete the rule matching ``rule`` (priority, selectors, table, protocol). No such
        rule is ``Gone``, or nothing with ``missing_ok``."""
        try:
            self._nl.request(RTM_DELRULE, encode_rule(rule))
        except NetlinkFailure as failure:
            if missing_ok and failure.code == errno.ENOENT:
                return
            raise _rule_error(failure, "delete", rule) from None

    # -- helpers --------------------------------------------------------------------------

    def _one(self, operation: str, route: Route) -> None:
        try:
            self._nl.request(RTM_NEWROUTE, encode_route(route), flags=_OPERATIONS[operation])
        except NetlinkFailure as failure:
            names = self._names({route.oif} if route.oif is not None else set())
            raise _route_error(failure, operation, route, names) from None

    def _names(self, indexes: Iterable[int]) -> dict[int, str]:
        """{ifindex: name} of these interfaces, one pipelined RTM_GETLINK each; an index that
        is gone is left out."""
        wanted = sorted(set(indexes))
        requests = [
            (RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _GET_LINK_ATTRS)
            for index in wanted
        ]
        outcomes = self._nl.request_many(requests, decode=_decode_name) if requests else []
        return {
            index: outcome[0]
            for index, outcome in zip(wanted, outcomes, strict=True)
            if not isinstance(outcome, NetlinkFailure) and outcome
        }

    def _named(self, routes: list[Route]) -> list[Route]:
        """The routes with their devices' names filled in."""
        indexes = {route.oif for route in routes if route.oif is not None}
        indexes |= {hop.oif for route in routes for hop in route.nexthops if hop.oif is not None}
        if not indexes:
            return routes
        names = self._names(indexes)

        def named(value: Any) -> Any:
            name = names.get(value.oif) if value.oif is not None else None
            return _replace_dev(value, name) if name else value

        return [
            _replace_nexthops(named(route), tuple(named(hop) for hop in route.nexthops))
            if route.nexthops
            else named(route)
            for route in routes
        ]


def _replace_dev(value: Any, name: str) -> Any:
    return _trusted(type(value), **{**vars(value), "dev": name})


def _replace_nexthops(route: Route, nexthops: tuple[Nexthop, ...]) -> Route:
    return _trusted(Route, **{**vars(route), "nexthops": nexthops})


def _route_target(route: Route, names: dict[int, str]) -> str:
    if route.oif is None:
        return f"table {table_name(route.table)}"
    return route.dev or names.get(route.oif) or f"ifindex {route.oif}"


def _route_error(
    failure: NetlinkFailure, operation: str, route: Route, names: dict[int, str]
) -> KernelError:
    """The typed error of one route operation the kernel refused."""
    target = _route_target(route, names)
    setting = route.setting(with_table=route.oif is not None)
    if failure.code == errno.ESRCH and operation == "delete":
        return Gone(
            target, setting, f"delete: no such route: {errno_text(failure.code)}", failure.code
        )
    if failure.code == errno.EEXIST and operation == "add":
        detail = (
            "add: a route with this destination, table and metric exists already (replace swaps it)"
        )
        return Refused(target, setting, f"{detail}: {errno_text(failure.code)}", failure.code)
    absent = route.oif is not None and route.oif not in names
    if absent and failure.code in (errno.ENODEV, errno.ENETUNREACH):
        # IPv4 checks a gateway before the device, so an absent device reads ENETUNREACH
        reason = f"{operation}: no interface with ifindex {route.oif}: {failure.describe()}"
        return Gone(target, setting, reason, errno.ENODEV)
    unreachable = failure.code in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    if unreachable and route.gateway is not None and operation != "delete":
        through = f" through {target}" if route.oif is not None else ""
        detail = (
            f"{operation}: gateway {route.gateway} is not reachable{through} "
            "(no route to it; onlink skips the check)"
        )
        return kernel_error(failure, target, setting, detail)
    return kernel_error(failure, target, setting, operation)


def _rule_error(failure: NetlinkFailure, operation: str, rule: Rule) -> KernelError:
    target = rule.oif or rule.iif or f"table {table_name(rule.table)}"
    setting = f"rule {rule}"
    if failure.code == errno.ENOENT and operation == "delete":
        return Gone(
            target, setting, f"delete: no such rule: {errno_text(failure.code)}", failure.code
        )
    if failure.code == errno.EEXIST and operation == "add":
        return Refused(
            target,
            setting,
            f"add: this rule exists already: {errno_text(failure.code)}",
            failure.code,
        )
    return kernel_error(failure, target, setting, operation)
