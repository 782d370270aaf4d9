"""Links over rtnetlink: one dump describes every interface; writes change mtu, txqueuelen
and admin state, pipelined over many links. Nothing here shells out to ``ip``.

The socket is the shared netlink core (``nodenetd.kernel.netlink``). A dump without statistics
(``RTEXT_FILTER_SKIP_STATS``) is decoded by the core's attribute walker with a table of only
the attributes ``Link`` needs; the other ~50 attributes of each link are skipped unread
(pyroute2's ``IPRoute.get_links`` builds an object per attribute: ~0.5 s for 1000 veths).
``set_many`` sends one RTM_NEWLINK per link back to back and then reads every ack.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from pyroute2.netlink import nla

from nodenetd.errors import KernelError, Refused
from nodenetd.kernel.netlink import (
    NLMSGHDR,
    NetlinkFailure,
    NetlinkSocket,
    decode_attrs,
    encode_attrs,
    kernel_error,
)

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the dump is several times smaller without per-link stats

# linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_GETLINK = 18

_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_PAYLOAD = NLMSGHDR.size + _IFINFOMSG.size  # where a link message's attributes start

# IF_OPER_* (linux/if.h, RFC 2863), by value
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")


class ifla(nla):
    """The IFLA_* attributes nodenetd reads or writes (numbers from linux/if_link.h)."""

    nla_map = (
        (1, "IFLA_ADDRESS", "l2addr"),
        (3, "IFLA_IFNAME", "asciiz"),
        (4, "IFLA_MTU", "uint32"),
        (10, "IFLA_MASTER", "uint32"),
        (13, "IFLA_TXQLEN", "uint32"),
        (16, "IFLA_OPERSTATE", "uint8"),
        (18, "IFLA_LINKINFO", "linkinfo"),
        (29, "IFLA_EXT_MASK", "uint32"),
        (33, "IFLA_CARRIER", "uint8"),
        (47, "IFLA_CARRIER_UP_COUNT", "uint32"),
        (48, "IFLA_CARRIER_DOWN_COUNT", "uint32"),
        (50, "IFLA_MIN_MTU", "uint32"),
        (51, "IFLA_MAX_MTU", "uint32"),
        (54, "IFLA_PERM_ADDRESS", "l2addr"),
        (57, "IFLA_PARENT_DEV_BUS_NAME", "asciiz"),
    )

    class linkinfo(nla):
        nla_map = (
            (1, "IFLA_INFO_KIND", "asciiz"),
            (4, "IFLA_INFO_SLAVE_KIND", "asciiz"),
            (5, "IFLA_INFO_SLAVE_DATA", "cdata"),  # its layout depends on the slave kind
        )


class _bond_slave(nla):
    """IFLA_INFO_SLAVE_DATA of a bond's member (linux/if_link.h IFLA_BOND_SLAVE_*)."""

    nla_map = (
        (1, "IFLA_BOND_SLAVE_STATE", "uint8"),
        (2, "IFLA_BOND_SLAVE_MII_STATUS", "uint8"),
    )


@dataclass(frozen=True)
class Link:
    """What nodenetd needs to know about one interface, from one RTM_NEWLINK."""

    index: int
    name: str
    kind: str | None  # rtnetlink IFLA_INFO_KIND ("veth", "bond", ...); None for a NIC
    slave_kind: str | None  # IFLA_INFO_SLAVE_KIND ("bond", "bridge") when enslaved
    master: int | None
    mtu: int
    min_mtu: int | None
    max_mtu: int | None
    txqueuelen: int
    admin_up: bool
    operstate: str
    carrier: bool
    mac: str | None
    perm_mac: str | None
    parent_bus: str | None  # "pci", "usb"... for devices with a bus parent
    loopback: bool = False
    # How often the carrier went up/down since the device was created (kernel 4.16+). They
    # count every change, also those the kernel's link-watch coalesced out of notifications.
    carrier_up_count: int | None = None
    carrier_down_count: int | None = None
    # A bond member's (IFLA_BOND_SLAVE_STATE, IFLA_BOND_SLAVE_MII_STATUS): the bond's own view
    # of it. The bond announces a change of either with RTM_NEWLINK about the member
    # (NETDEV_CHANGELOWERSTATE) some miimon rounds after the carrier event, so it is part of
    # what changed about the link.
    bond_member: tuple[int, int] | None = None

    @property
    def kinds(self) -> frozenset[str]:
        """Selector kinds: the rtnetlink kind or physical/loopback, plus membership."""
        kinds: set[str] = set()
        if self.loopback:
            kinds.add("loopback")
        elif self.kind:
            kinds.add(self.kind)
        elif self.parent_bus:
            kinds.add("physical")
        else:
            kinds.add("other")
        if self.slave_kind in ("bond", "bridge", "team"):
            kinds.add(f"{self.slave_kind}-member")
        return frozenset(kinds)


def decode_link(data: bytes, offset: int, length: int) -> Link:
    """One RTM_NEWLINK message (header at ``offset``) as a Link."""
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, offset + NLMSGHDR.size)
    attrs = decode_attrs(ifla, data, offset + _PAYLOAD, offset + length)
    linkinfo = attrs.get("IFLA_LINKINFO") or {}
    operstate = attrs.get("IFLA_OPERSTATE")
    bond_member = None
    if linkinfo.get("IFLA_INFO_SLAVE_KIND") == "bond" and "IFLA_INFO_SLAVE_DATA" in linkinfo:
        data = linkinfo["IFLA_INFO_SLAVE_DATA"]
        slave = decode_attrs(_bond_slave, data, 0, len(data))
        bond_member = (slave.get("IFLA_BOND_SLAVE_STATE", -1),
                       slave.get("IFLA_BOND_SLAVE_MII_STATUS", -1))
    return Link(
        index=index,
        name=attrs.get("IFLA_IFNAME", ""),
        kind=linkinfo.get("IFLA_INFO_KIND"),
        slave_kind=linkinfo.get("IFLA_INFO_SLAVE_KIND"),
        master=attrs.get("IFLA_MASTER"),
        mtu=attrs.get("IFLA_MTU", 0),
        min_mtu=attrs.get("IFLA_MIN_MTU"),
        max_mtu=attrs.get("IFLA_MAX_MTU"),
        txqueuelen=attrs.get("IFLA_TXQLEN", 0),
        admin_up=bool(flags & IFF_UP),
        operstate=OPERSTATES[operstate] if operstate is not None and operstate < 7 else "UNKNOWN",
        carrier=bool(attrs.get("IFLA_CARRIER")),
        mac=attrs.get("IFLA_ADDRESS"),
        perm_mac=attrs.get("IFLA_PERM_ADDRESS"),
        parent_bus=attrs.get("IFLA_PARENT_DEV_BUS_NAME"),
        loopback=bool(flags & IFF_LOOPBACK),
        carrier_up_count=attrs.get("IFLA_CARRIER_UP_COUNT"),
        carrier_down_count=attrs.get("IFLA_CARRIER_DOWN_COUNT"),
        bond_member=bond_member,
    )


_GET_ATTRS = encode_attrs(ifla, [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)])
_SETTING = {"mtu": "link.mtu", "txqlen": "link.txqueuelen", "state": "link.state"}
_STATES = {"up": IFF_UP, "down": 0}


class Links:
    """The rtnetlink side of the kernel adapter: one socket in the network namespace of the
    thread that opens it. Use as a context manager, or call ``close()``."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._nl = NetlinkSocket(socket.NETLINK_ROUTE, timeout=timeout)

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> Links:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def dump(self) -> dict[str, Link]:
        """Every link in this namespace, by name, from a single dump without statistics."""
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _GET_ATTRS
        try:
            links = self._nl.dump(RTM_GETLINK, payload, decode=decode_link)
        except NetlinkFailure as failure:
            raise kernel_error(failure, "kernel", "links") from None
        return {link.name: link for link in links}

    def get(self, index: int) -> Link | None:
        """One link by ifindex (the hotplug path), or None when there is no such link."""
        payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0) + _GET_ATTRS
        try:
            replies = self._nl.request(RTM_GETLINK, payload, decode=decode_link)
        except NetlinkFailure as failure:
            if failure.code == errno.ENODEV:
                return None
            raise kernel_error(failure, f"ifindex {index}", "link") from None
        return replies[0] if replies else None

    def set(self, link: Link, setting: str, **attrs: object) -> None:
        """Change link attributes (mtu, txqlen, state='up'|'down') in one RTM_NEWLINK; a
        refusal raises the typed error, named ``setting``."""
        (error,) = self.set_many([(link, attrs)])
        if error is not None:
            raise type(error)(error.target, setting, error.reason, error.errno)

    def set_many(
        self, items: Sequence[tuple[Link, Mapping[str, object]]]
    ) -> list[KernelError | None]:
        """Change many links, pipelined: one RTM_NEWLINK per (link, attrs) item, one result
        per item in order (None: done; Refused, Gone...: that item failed, the others are
        unaffected). Attributes are mtu, txqlen (ints) and state ('up' or 'down').

        Within one link the kernel sets mtu, then admin state, then txqlen, and stops at the
        first refusal. An unknown attribute or a value of the wrong type raises before
        anything is sent.
        """
        results: list[KernelError | None] = [None] * len(items)
        positions: list[int] = []
        requests: list[tuple[int, bytes]] = []
        for position, (link, attrs) in enumerate(items):
            if not attrs:
                continue
            try:
                payload = _setlink_payload(link, attrs)
            except KernelError as exc:
                results[position] = exc
                continue
            positions.append(position)
            requests.append((RTM_NEWLINK, payload))
        outcomes = self._nl.request_many(requests)
        for position, outcome in zip(positions, outcomes, strict=True):
            if isinstance(outcome, NetlinkFailure):
                link, attrs = items[position]
                results[position] = kernel_error(outcome, link.name, _setting_of(attrs))
        return results


def _setting_of(attrs: Mapping[str, object]) -> str:
    return _SETTING.get(next(iter(attrs)), "link") if len(attrs) == 1 else "link"


def _setlink_payload(link: Link, attrs: Mapping[str, object]) -> bytes:
    """ifinfomsg + attributes of an RTM_NEWLINK that changes an existing link."""
    flags = change = 0
    encoded: list[tuple[str, int]] = []
    for key, value in attrs.items():
        if key == "state":
            if value not in _STATES:
                raise ValueError(f"link state must be 'up' or 'down', not {value!r}")
            flags |= _STATES[value]
            change |= IFF_UP
            continue
        if key not in ("mtu", "txqlen"):
            raise TypeError(f"unknown link attribute {key!r}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"link {key} must be an int, not {value!r}")
        if not 0 <= value <= 0xFFFFFFFF:
            raise Refused(link.name, _SETTING[key], f"{value} is out of range")
        encoded.append(("IFLA_MTU" if key == "mtu" else "IFLA_TXQLEN", value))
    header = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, link.index, flags, change)
    return header + encode_attrs(ifla, encoded)


# --- facts that cost more than a dump: looked up only when a selector asks -----------------

SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 0x3
_DRVINFO_SIZE = 196  # struct ethtool_drvinfo


def driver_name(ifname: str) -> str | None:
    """The driver bound to an interface (ETHTOOL_GDRVINFO), as ``ethtool -i`` prints it."""
    buf = array.array("B", struct.pack("I", ETHTOOL_GDRVINFO) + b"\0" * (_DRVINFO_SIZE - 4))
    addr, _ = buf.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode()[:15], addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError:
            return None
    driver = bytes(buf[4:36]).split(b"\0", 1)[0].decode(errors="replace")
    return driver or None


def in_initial_netns() -> bool:
    """Whether this process runs in the initial network namespace (PID 1's): where udevd and
    its rules (and systemd-sysctl's hotplug re-applies) see the interfaces."""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def udev_properties(ifname: str) -> Mapping[str, str]:
    """udev's properties for a network interface (ID_PATH, ID_NET_DRIVER...), or {}.

    Only in udevd's own network namespace (PID 1's): elsewhere udev never handled the
    device, and its database, keyed by ifindex, would describe a host interface instead."""
    import pyudev

    if not in_initial_netns():
        return {}
    try:
        device = pyudev.Devices.from_name(pyudev.Context(), "net", ifname)
    except (pyudev.DeviceNotFoundError, OSError):
        return {}
    return dict(device.properties)


class LinkFacts:
    """A link as selectors see it; driver and udev data are fetched lazily, once."""

    def __init__(self, link: Link):
        self.link = link

    @property
    def name(self) -> str:
        return self.link.name

    @property
    def kinds(self) -> frozenset[str]:
        return self.link.kinds

    @property
    def mac(self) -> str | None:
        return self.link.perm_mac or self.link.mac

    def driver(self) -> str | None:
        return self._driver

    @cached_property
    def _driver(self) -> str | None:
        return driver_name(self.link.name)

    def udev_properties(self) -> Mapping[str, str]:
        return self._udev

    @cached_property
    def _udev(self) -> Mapping[str, str]:
        return udev_properties(self.link.name)
