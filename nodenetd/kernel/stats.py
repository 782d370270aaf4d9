"""Interface counters and link facts for the metrics: 64-bit statistics, link speed and
driver, each read with one request for every interface.

``LinkStatsReader`` dumps ``RTM_GETSTATS`` with only ``IFLA_STATS_LINK_64`` asked for: one
small message per interface (the counters and nothing else), where an ``RTM_GETLINK`` dump
with statistics carries ~50 attributes per link. ``speeds`` dumps ethtool-netlink
``LINKMODES_GET`` (compact bitsets); ``DriverNames`` asks ``ETHTOOL_GDRVINFO`` per interface
over one socket. These are for a metrics thread: each reader owns its sockets, in the network
namespace of the thread that opens it, and never touches the event loop's.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import threading
from dataclasses import dataclass

from nodenetd.kernel.netlink import (
    NLA_F_NESTED,
    NLMSGHDR,
    NetlinkFailure,
    NetlinkSocket,
    genl_family,
    iter_attrs,
    kernel_error,
    nla,
)

__all__ = ["STATS_FIELDS", "DriverNames", "LinkStats", "LinkStatsReader", "SpeedReader"]

RTM_GETSTATS = 94  # linux/rtnetlink.h
IFLA_STATS_LINK_64 = 1  # enum IFLA_STATS_*, the filter bit is 1 << (n - 1)
_IF_STATS_MSG = struct.Struct("=BBHII")  # family, pad1, pad2, ifindex, filter_mask
_PAYLOAD = NLMSGHDR.size + _IF_STATS_MSG.size
_NLA_HDR = struct.Struct("=HH")

# struct rtnl_link_stats64, the leading fields in kernel order (all kernels have these 16)
STATS_FIELDS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "multicast", "collisions", "rx_length_errors",
    "rx_over_errors", "rx_crc_errors", "rx_frame_errors", "rx_fifo_errors", "rx_missed_errors",
)
_STATS64 = struct.Struct(f"={len(STATS_FIELDS)}Q")
NETLINK_GENERIC = 16  # linux/netlink.h


@dataclass(frozen=True, slots=True)
class LinkStats:
    """The 64-bit counters of one interface (``struct rtnl_link_stats64``), by ifindex."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    multicast: int
    collisions: int
    rx_length_errors: int
    rx_over_errors: int
    rx_crc_errors: int
    rx_frame_errors: int
    rx_fifo_errors: int
    rx_missed_errors: int


_IFINDEX_AT = NLMSGHDR.size + 4  # if_stats_msg.ifindex
_unpack_u32 = struct.Struct("=I").unpack_from
_unpack_nla = _NLA_HDR.unpack_from
_unpack_stats = _STATS64.unpack_from


def _decode_stats(data: bytes, offset: int, length: int) -> tuple[int, tuple[int, ...] | None]:
    """(ifindex, the counters as a tuple in STATS_FIELDS order) of one RTM_NEWSTATS."""
    (ifindex,) = _unpack_u32(data, offset + _IFINDEX_AT)
    start = offset + _PAYLOAD
    if start + 4 <= offset + length:  # the fast path: the only attribute asked for is first
        alen, atype = _unpack_nla(data, start)
        if atype & 0x3FFF == IFLA_STATS_LINK_64 and alen - 4 >= _STATS64.size \
                and start + alen <= offset + length:
            return ifindex, _unpack_stats(data, start + 4)
    for atype, start, stop in iter_attrs(data, offset + _PAYLOAD, offset + length):
        if atype == IFLA_STATS_LINK_64 and stop - start >= _STATS64.size:
            return ifindex, _STATS64.unpack_from(data, start)
    return ifindex, None


class LinkStatsReader:
    """Every interface's 64-bit counters with one ``RTM_GETSTATS`` dump (Linux 4.7+)."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._nl = NetlinkSocket(socket.NETLINK_ROUTE, timeout=timeout)
        self._request = _IF_STATS_MSG.pack(socket.AF_UNSPEC, 0, 0, 0,
                                           1 << (IFLA_STATS_LINK_64 - 1))

    def close(self) -> None:
        self._nl.close()

    def dump(self) -> dict[int, tuple[int, ...]]:
        """{ifindex: counters in STATS_FIELDS order}; raw tuples, the fast path."""
        try:
            replies = self._nl.dump(RTM_GETSTATS, self._request, decode=_decode_stats)
        except NetlinkFailure as failure:
            raise kernel_error(failure, "kernel", "link statistics") from None
        return {index: values for index, values in replies if values is not None}

    def stats(self) -> dict[int, LinkStats]:
        return {index: LinkStats(*values) for index, values in self.dump().items()}


# -- link speed (ethtool netlink) ----------------------------------------------------------

ETHTOOL_MSG_LINKMODES_GET = 4
_ETHTOOL_A_LINKMODES_HEADER = 1
_ETHTOOL_A_LINKMODES_SPEED = 5
_ETHTOOL_A_HEADER_DEV_INDEX = 1
_ETHTOOL_A_HEADER_FLAGS = 3
_ETHTOOL_FLAG_COMPACT_BITSETS = 1
_GENL = struct.Struct("=BBH")
SPEED_UNKNOWN = 0xFFFFFFFF


def _decode_speed(data: bytes, offset: int, length: int) -> tuple[int, int | None]:
    """(ifindex, speed in Mb/s or None when unknown) of one LINKMODES_GET reply."""
    ifindex, speed = 0, None
    start = offset + NLMSGHDR.size + _GENL.size
    for atype, begin, stop in iter_attrs(data, start, offset + length):
        if atype == _ETHTOOL_A_LINKMODES_HEADER:
            for htype, hbegin, _ in iter_attrs(data, begin, stop):
                if htype == _ETHTOOL_A_HEADER_DEV_INDEX:
                    (ifindex,) = struct.unpack_from("=I", data, hbegin)
        elif atype == _ETHTOOL_A_LINKMODES_SPEED:
            (value,) = struct.unpack_from("=I", data, begin)
            speed = None if value in (0, SPEED_UNKNOWN) else value
    return ifindex, speed


class SpeedReader:
    """Link speeds of every interface whose driver reports link modes, with one dump."""

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._nl = NetlinkSocket(NETLINK_GENERIC, timeout=timeout)
        try:
            self._family, _ = genl_family(self._nl, "ethtool")
        except NetlinkFailure as failure:
            self._nl.close()
            raise kernel_error(failure, "kernel", "ethtool netlink") from None
        header = nla(_ETHTOOL_A_HEADER_FLAGS, struct.pack("=I", _ETHTOOL_FLAG_COMPACT_BITSETS))
        self._request = (_GENL.pack(ETHTOOL_MSG_LINKMODES_GET, 1, 0)
                         + nla(_ETHTOOL_A_LINKMODES_HEADER | NLA_F_NESTED, header))

    def close(self) -> None:
        self._nl.close()

    def dump(self) -> dict[int, int | None]:
        """{ifindex: Mb/s or None (no link, or the driver does not know)}. Interfaces whose
        driver has no link modes (the kernel skips them) are absent."""
        try:
            replies = self._nl.dump(self._family, self._request, decode=_decode_speed)
        except NetlinkFailure as failure:
            # One device failing ends the dump: keep what came before it.
            replies = [r for r in failure.partial if r[0]]
        return dict(replies)


# -- driver names (ETHTOOL_GDRVINFO) ----------------------------------------------------------

_SIOCETHTOOL = 0x8946
_ETHTOOL_GDRVINFO = 0x3
_DRVINFO_SIZE = 196  # struct ethtool_drvinfo


class DriverNames:
    """The driver bound to each interface, as ``ethtool -i`` prints it, over one socket."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def get(self, ifname: str) -> str | None:
        buf = array.array("B", struct.pack("I", _ETHTOOL_GDRVINFO) + b"\0" * (_DRVINFO_SIZE - 4))
        addr, _ = buf.buffer_info()
        ifreq = struct.pack("16sP", ifname.encode()[:15], addr)
        with self._lock:
            try:
                fcntl.ioctl(self._sock.fileno(), _SIOCETHTOOL, ifreq)
            except OSError:
                return None
        driver = bytes(buf[4:36]).split(b"\0", 1)[0].decode(errors="replace")
        return driver or None
