"""Links over rtnetlink: one dump describes every interface; writes change mtu, txqueuelen
and admin state. Nothing here shells out to ``ip``."""

from __future__ import annotations

import array
import fcntl
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nodenetd.kernel.netlink_errors import kernel_error

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
RTEXT_FILTER_SKIP_STATS = 1 << 3  # the dump is several times smaller without per-link stats


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


def _link_from_msg(msg) -> Link:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = slave_kind = None
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND")
        slave_kind = linkinfo.get_attr("IFLA_INFO_SLAVE_KIND")
    flags = msg["flags"]
    address = msg.get_attr("IFLA_ADDRESS")
    perm = msg.get_attr("IFLA_PERM_ADDRESS")
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        slave_kind=slave_kind,
        master=msg.get_attr("IFLA_MASTER"),
        mtu=msg.get_attr("IFLA_MTU"),
        min_mtu=msg.get_attr("IFLA_MIN_MTU"),
        max_mtu=msg.get_attr("IFLA_MAX_MTU"),
        txqueuelen=msg.get_attr("IFLA_TXQLEN"),
        admin_up=bool(flags & IFF_UP),
        operstate=msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN",
        carrier=bool(msg.get_attr("IFLA_CARRIER")),
        mac=address,
        perm_mac=perm if isinstance(perm, str) else None,
        parent_bus=msg.get_attr("IFLA_PARENT_DEV_BUS_NAME"),
        loopback=bool(flags & IFF_LOOPBACK),
    )


class Links:
    """The rtnetlink side of the kernel adapter, on one socket per run."""

    def __init__(self, ipr: IPRoute | None = None):
        self._ipr = ipr or IPRoute()
        self._owned = ipr is None

    def close(self) -> None:
        if self._owned:
            self._ipr.close()

    def dump(self) -> dict[str, Link]:
        """Every link in this namespace, by name, from a single dump without statistics."""
        msgs = self._ipr.get_links(ext_mask=RTEXT_FILTER_SKIP_STATS)
        links = (_link_from_msg(msg) for msg in msgs)
        return {link.name: link for link in links}

    def set(self, link: Link, setting: str, **attrs: object) -> None:
        """Change link attributes (mtu, txqlen, state) in one RTM_NEWLINK."""
        try:
            self._ipr.link("set", index=link.index, **attrs)
        except NetlinkError as exc:
            raise kernel_error(link.name, setting, exc.code, _extack(exc)) from exc


def _extack(exc: NetlinkError) -> str:
    text = str(exc.args[1]) if len(exc.args) > 1 else ""
    return "" if text.startswith("(") else text


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


def udev_properties(ifname: str) -> Mapping[str, str]:
    """udev's properties for a network interface (ID_PATH, ID_NET_DRIVER...), or {}."""
    import pyudev

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
