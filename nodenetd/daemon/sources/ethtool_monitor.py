"""ethtool netlink notifications: which device's features, channels, rings or coalescing
changed, as the kernel announces it to the ethtool family's "monitor" multicast group.

The kernel sends a notification for every change made through ethtool, by netlink or by the
legacy ioctl interface (an old ethtool binary), and for every feature change whatever its
origin (``netdev_features_change``: a driver, a bond or bridge propagating features). A
request that changes nothing sends none (``ethtool -K dev gro on`` twice gives one). Seen on
6.18 for features and channels over both interfaces. Rings, channels or coalescing a driver
changes on its own (outside ethtool) are not guaranteed to be announced: the daemon's slow
safety-net re-read covers those.

``EthtoolMonitor`` resolves the family and its group from the generic netlink controller
(CTRL_CMD_GETFAMILY: the group id is assigned at boot), subscribes a non-blocking socket, and
reports ``(kind, ifindex)`` to a callback from the event loop. Message numbers are those of
``include/uapi/linux/ethtool_netlink_generated.h`` (enum ``ETHTOOL_MSG_*`` kernel side); the
header is decoded with the layouts of ``nodenetd.kernel.ethtool``. When the socket overflows
(ENOBUFS) notifications were lost: the queue is read empty and ``on_overflow`` is called, so
the daemon re-reads the ethtool state of every device it manages.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Literal

from nodenetd.errors import Unsupported
from nodenetd.kernel.ethtool import (
    ETHTOOL_GENL_NAME,
    decode_reply,
    ethtool_channels_msg,
    ethtool_coalesce_msg,
    ethtool_features_msg,
    ethtool_rings_msg,
)
from nodenetd.kernel.netlink import (
    EVENT_RCVBUF,
    NLMSGHDR,
    MulticastSocket,
    NetlinkFailure,
    NetlinkSocket,
    genl_family,
    split_messages,
)

__all__ = ["MONITOR_GROUP", "NOTIFICATIONS", "EthtoolMonitor", "NotificationKind"]

log = logging.getLogger(__name__)

NETLINK_GENERIC = 16
MONITOR_GROUP = "monitor"  # ETHTOOL_MCGRP_MONITOR_NAME

NotificationKind = Literal["features", "channels", "rings", "coalesce"]

# enum ethtool_msg_kernel (ethtool_netlink_generated.h): the genetlink command of the message
ETHTOOL_MSG_FEATURES_NTF = 13
ETHTOOL_MSG_RINGS_NTF = 17
ETHTOOL_MSG_CHANNELS_NTF = 19
ETHTOOL_MSG_COALESCE_NTF = 21
NOTIFICATIONS: Mapping[int, tuple[NotificationKind, type]] = MappingProxyType(
    {
        ETHTOOL_MSG_FEATURES_NTF: ("features", ethtool_features_msg),
        ETHTOOL_MSG_RINGS_NTF: ("rings", ethtool_rings_msg),
        ETHTOOL_MSG_CHANNELS_NTF: ("channels", ethtool_channels_msg),
        ETHTOOL_MSG_COALESCE_NTF: ("coalesce", ethtool_coalesce_msg),
    }
)

DRAIN_BUDGET = 1000


class EthtoolMonitor:
    """ethtool notifications for the event loop.

    ``on_notify(kind, ifindex)`` is called once per notification; ``on_overflow()`` after
    notifications were lost. ``events`` counts notifications by kind (others as "cmd-N"),
    ``overflows`` the ENOBUFS reports. Exceptions raised by the callbacks are logged.
    """

    def __init__(
        self,
        on_notify: Callable[[NotificationKind, int], None],
        on_overflow: Callable[[], None] | None = None,
        *,
        rcvbuf: int = EVENT_RCVBUF,
        budget: int = DRAIN_BUDGET,
    ) -> None:
        self._on_notify = on_notify
        self._on_overflow = on_overflow
        self._rcvbuf = rcvbuf
        self._budget = max(1, budget)
        self._sock: MulticastSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.family_id: int | None = None
        self.group_id: int | None = None
        self.events: Counter[str] = Counter()
        self.overflows = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Resolve the family and group, subscribe, watch the socket.

        Raises Unsupported when the kernel has no ethtool netlink family or no monitor group
        (kernels before 5.6, or built without CONFIG_ETHTOOL_NETLINK); the daemon then relies
        on its timer re-reads.
        """
        if self._sock is not None:
            raise RuntimeError("EthtoolMonitor already started")
        with NetlinkSocket(NETLINK_GENERIC) as nl:
            try:
                family_id, groups = genl_family(nl, ETHTOOL_GENL_NAME)
            except NetlinkFailure as failure:
                raise Unsupported(
                    "kernel", "ethtool", f"no ethtool netlink family: {failure.describe()}"
                ) from None
        group_id = groups.get(MONITOR_GROUP)
        if group_id is None:
            raise Unsupported("kernel", "ethtool", "the ethtool family has no monitor group")
        self._sock = MulticastSocket(NETLINK_GENERIC, [group_id], rcvbuf=self._rcvbuf)
        try:
            loop.add_reader(self._sock.fileno(), self._on_readable)
        except BaseException:
            self.close()
            raise
        self.family_id, self.group_id, self._loop = family_id, group_id, loop

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._loop = None

    def _on_readable(self) -> None:
        if self._sock is not None:
            discarded = self._sock.pump(self.handle, self._budget)
            if discarded is not None:
                self._overflowed()

    def handle(self, data: bytes) -> None:
        """Dispatch the notifications in one datagram (public for recorded messages)."""
        for offset, length, mtype, _flags, _seq in split_messages(data):
            if mtype != self.family_id or length < NLMSGHDR.size + 4:
                continue
            cmd = data[offset + NLMSGHDR.size]
            entry = NOTIFICATIONS.get(cmd)
            if entry is None:
                self.events[f"cmd-{cmd}"] += 1
                continue
            kind, msg_class = entry
            self.events[kind] += 1
            try:
                ifindex = decode_reply(msg_class, data, offset, length).ifindex
            except (ValueError, IndexError) as exc:
                log.warning("ethtool: skipping a malformed %s notification: %s", kind, exc)
                continue
            if ifindex is None:
                continue
            try:
                self._on_notify(kind, ifindex)
            except Exception:
                log.exception("ethtool: the handler failed on %s of ifindex %d", kind, ifindex)

    def _overflowed(self) -> None:
        self.overflows += 1
        log.warning("ethtool: receive buffer overflow, notifications lost")
        if self._on_overflow is not None:
            try:
                self._on_overflow()
            except Exception:
                log.exception("ethtool: the overflow handler failed")
