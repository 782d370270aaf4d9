"""rtnetlink events: the daemon's view of the links, kept current by notifications.

``LinkEvents`` owns one non-blocking NETLINK_ROUTE socket subscribed to the link, address and
route groups, registered with the event loop (``loop.add_reader``). Each readable callback
drains the queue (up to a budget, so a storm costs few wakeups and cannot starve the loop),
decodes RTM_NEWLINK/RTM_DELLINK with the decoder ``Links.dump`` uses (``decode_link``), and
folds them into a ``LinkView``. What changed for the daemon arrives as ``LinkChange`` values:
new, changed (any field of ``Link``: mtu, state, carrier, master...), renamed, deleted.
Address and route notifications are only counted and passed on by name.

Ordering. ``start`` subscribes before it dumps, so nothing that happens in between is lost: a
notification queued before the dump is applied after it. Such a replay is stale for a moment
(the view may briefly show an older state of a link, and report it as a change), but the
notifications after the subscription are complete and in order, so the view converges on the
kernel's state once the queue is read; for each link the last notification is its state.

Overflow. When the receive buffer overflows the kernel drops the notification, reports
ENOBUFS once, and then drops *every* further notification for this socket until its queue has
been read empty (netlink's NETLINK_S_CONGESTED state). So on ENOBUFS the queue is first read
empty and discarded, and only then is a full dump taken and diffed into the view (``resync``):
everything dropped in between is covered by the dump, and everything after it is queued
again. Discarding matters: the queue predates the loss, and replayed after the dump it would
put links back into older states whose later notifications were dropped (the storm test
catches exactly that). The resulting changes go to ``on_change`` like any others.

Only AF_UNSPEC link messages describe devices. The bridge also sends RTM_NEWLINK and
RTM_DELLINK with family AF_BRIDGE on the same group, about bridge *ports*: an RTM_DELLINK of
that family means "left the bridge", not "deleted". They are counted and otherwise ignored.

The dumps (start, resync) block for a few milliseconds per thousand links and run on the loop
thread on purpose: the view must not move while a dump is merged into it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from nodenetd.errors import KernelError
from nodenetd.kernel.links import RTM_NEWLINK, Link, Links, decode_link
from nodenetd.kernel.netlink import (
    EVENT_RCVBUF,
    NLMSGHDR,
    MulticastSocket,
    split_messages,
)

__all__ = [
    "LINK_GROUPS",
    "MESSAGE_NAMES",
    "LinkChange",
    "LinkEvents",
    "LinkView",
]

log = logging.getLogger(__name__)

# linux/rtnetlink.h: message types
RTM_DELLINK = 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
MESSAGE_NAMES: Mapping[int, str] = MappingProxyType(
    {
        RTM_NEWLINK: "newlink",
        RTM_DELLINK: "dellink",
        RTM_NEWADDR: "newaddr",
        RTM_DELADDR: "deladdr",
        RTM_NEWROUTE: "newroute",
        RTM_DELROUTE: "delroute",
    }
)

# enum rtnetlink_groups
RTNLGRP_LINK = 1
RTNLGRP_IPV4_IFADDR = 5
RTNLGRP_IPV4_ROUTE = 7
RTNLGRP_IPV6_IFADDR = 9
RTNLGRP_IPV6_ROUTE = 11
LINK_GROUPS = (
    RTNLGRP_LINK,
    RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR,
    RTNLGRP_IPV4_ROUTE,
    RTNLGRP_IPV6_ROUTE,
)

# Messages read per readable callback before yielding to the loop's other callbacks; the fd
# stays readable, so the loop calls back at once. ~20 ms of decoding at most.
DRAIN_BUDGET = 1000
_RETRY_SECONDS = 1.0  # after a failed resync


Action = Literal["new", "changed", "renamed", "deleted"]


@dataclass(frozen=True)
class LinkChange:
    """One change of the link view, what the daemon reacts to.

    ``link`` is the link as it is now; for ``deleted``, as it was last seen. ``old_name`` is
    set for ``renamed`` (a rename that also changed other fields is reported as renamed).
    """

    action: Action
    link: Link
    old_name: str | None = None


_ORDER = {"deleted": 0, "renamed": 1, "changed": 2, "new": 3}


class LinkView:
    """The links of the namespace by name and by ifindex, as notifications describe them.

    ``links`` and ``by_index`` are read-only live views; copy them (``dict(view.links)``) for
    a snapshot. Both maps are updated together, keyed by ifindex: a rename keeps the ifindex.
    """

    def __init__(self, links: Iterable[Link] = ()) -> None:
        self._by_name: dict[str, Link] = {}
        self._by_index: dict[int, Link] = {}
        self.links: Mapping[str, Link] = MappingProxyType(self._by_name)
        self.by_index: Mapping[int, Link] = MappingProxyType(self._by_index)
        for link in links:
            self._by_name[link.name] = link
            self._by_index[link.index] = link

    def apply(self, msg_type: int, link: Link) -> LinkChange | None:
        """Fold one RTM_NEWLINK or RTM_DELLINK (of a device, family AF_UNSPEC) into the view.

        None when nothing about the link changed (the kernel re-announces links for things
        ``Link`` does not carry, such as feature changes) or when an unknown link is deleted.
        """
        if msg_type == RTM_NEWLINK:
            return self._upsert(link)
        if msg_type == RTM_DELLINK:
            return self._remove(link.index)
        raise ValueError(f"not a link message type: {msg_type}")

    def replace(self, dump: Mapping[str, Link]) -> list[LinkChange]:
        """Make the view equal to a fresh dump; the differences as changes, deletions first
        (they free names), then renames, changes and new links, each by ifindex."""
        fresh = {link.index: link for link in dump.values()}
        changes: list[LinkChange] = []
        for index, old in self._by_index.items():
            link = fresh.get(index)
            if link is None:
                changes.append(LinkChange("deleted", old))
            elif link.name != old.name:
                changes.append(LinkChange("renamed", link, old.name))
            elif link != old:
                changes.append(LinkChange("changed", link))
        known = self._by_index
        changes.extend(LinkChange("new", link) for i, link in fresh.items() if i not in known)
        changes.sort(key=lambda change: (_ORDER[change.action], change.link.index))
        self._by_name.clear()
        self._by_name.update((link.name, link) for link in fresh.values())
        self._by_index.clear()
        self._by_index.update(fresh)
        return changes

    def _upsert(self, link: Link) -> LinkChange | None:
        old = self._by_index.get(link.index)
        self._by_index[link.index] = link
        if old is not None and old.name != link.name:
            holder = self._by_name.get(old.name)
            if holder is not None and holder.index == link.index:
                del self._by_name[old.name]
        # Always (re)claim the name: after a stale replay another ifindex may hold it here
        # for a moment; the notification that gave it its current owner comes later.
        self._by_name[link.name] = link
        if old is None:
            return LinkChange("new", link)
        if old.name != link.name:
            return LinkChange("renamed", link, old.name)
        if old != link:
            return LinkChange("changed", link)
        return None

    def _remove(self, index: int) -> LinkChange | None:
        old = self._by_index.pop(index, None)
        if old is None:
            return None
        holder = self._by_name.get(old.name)
        if holder is not None and holder.index == index:
            del self._by_name[old.name]
        return LinkChange("deleted", old)


class LinkEvents:
    """rtnetlink notifications for the event loop: links into ``view`` and ``on_change``,
    addresses and routes to ``on_other`` ("newaddr", "deladdr", "newroute", "delroute").

    ``events`` counts notifications by type ("newlink", "dellink", ...), ``resyncs`` the full
    dumps merged after start (overflows and explicit ``resync`` calls), ``overflows`` the
    ENOBUFS reports, ``wakeups`` the readable callbacks. Exceptions raised by the callbacks are
    logged and do not stop the source.
    """

    def __init__(
        self,
        on_change: Callable[[LinkChange], None],
        on_other: Callable[[str], None] | None = None,
        *,
        rcvbuf: int = EVENT_RCVBUF,
        budget: int = DRAIN_BUDGET,
    ) -> None:
        self._on_change = on_change
        self._on_other = on_other
        self._rcvbuf = rcvbuf
        self._budget = max(1, budget)
        self._sock: MulticastSocket | None = None
        self._links: Links | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry: asyncio.TimerHandle | None = None
        self.view = LinkView()
        self.events: Counter[str] = Counter()
        self.resyncs = 0
        self.overflows = 0
        self.wakeups = 0

    @property
    def rcvbuf(self) -> int:
        """The receive buffer the kernel granted the event socket (0 before ``start``)."""
        return self._sock.rcvbuf if self._sock is not None else 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Subscribe, then fill the view from a dump, then watch the socket.

        The initial links are not passed to ``on_change``: the daemon reconciles the whole
        view after start. Raises OSError or KernelError when the kernel refuses.
        """
        if self._sock is not None:
            raise RuntimeError("LinkEvents already started")
        self._sock = MulticastSocket(socket.NETLINK_ROUTE, LINK_GROUPS, rcvbuf=self._rcvbuf)
        try:
            self._links = Links()
            self.view.replace(self._links.dump())
            loop.add_reader(self._sock.fileno(), self._on_readable)
        except BaseException:
            self.close()
            raise
        self._loop = loop

    def resync(self) -> list[LinkChange]:
        """Diff a full dump into the view. The changes are passed to ``on_change`` and also
        returned (for logging). For the overflow path and a slow safety-net timer."""
        if self._links is None:
            raise RuntimeError("LinkEvents not started")
        dump = self._links.dump()
        self.resyncs += 1
        changes = self.view.replace(dump)
        if changes:
            log.info("link resync: %d change(s) the notifications had not shown", len(changes))
        for change in changes:
            self._deliver(change)
        return changes

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._links is not None:
            self._links.close()
            self._links = None
        self._loop = None

    # -- the readable callback

    def _on_readable(self) -> None:
        if self._sock is None:
            return
        self.wakeups += 1
        discarded = self._sock.pump(self._handle, self._budget)
        if discarded is not None:
            self._overflowed(discarded)

    def _handle(self, data: bytes) -> None:
        try:
            messages = list(split_messages(data))
        except ValueError as exc:
            log.warning("rtnetlink: skipping a malformed datagram: %s", exc)
            return
        for offset, length, mtype, _flags, _seq in messages:
            name = MESSAGE_NAMES.get(mtype)
            if name is None:
                continue  # NLMSG_NOOP, NLMSG_ERROR...: nothing we asked for
            self.events[name] += 1
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                if data[offset + NLMSGHDR.size] != socket.AF_UNSPEC:
                    continue  # AF_BRIDGE port messages, see the module docstring
                try:
                    link = decode_link(data, offset, length)
                except (ValueError, IndexError) as exc:
                    log.warning("rtnetlink: skipping a malformed %s: %s", name, exc)
                    continue
                change = self.view.apply(mtype, link)
                if change is not None:
                    self._deliver(change)
            elif self._on_other is not None:
                try:
                    self._on_other(name)
                except Exception:
                    log.exception("rtnetlink: the %s handler failed", name)

    def _deliver(self, change: LinkChange) -> None:
        try:
            self._on_change(change)
        except Exception:
            log.exception("rtnetlink: the handler failed on %s %s", change.action, change.link.name)

    def _overflowed(self, discarded: int) -> None:
        """Notifications were lost (the queue, all older than the loss, is already
        discarded): resynchronise from a dump."""
        self.overflows += 1
        log.warning(
            "rtnetlink: receive buffer overflow (%d bytes), notifications lost; "
            "discarded %d queued, resynchronising from a dump",
            self.rcvbuf,
            discarded,
        )
        self._resync_or_retry()

    def _resync_or_retry(self) -> None:
        self._retry = None
        try:
            self.resync()
        except (KernelError, OSError) as exc:
            log.error("rtnetlink: resync failed (%s); retrying in %.0f s", exc, _RETRY_SECONDS)
            if self._loop is not None:
                self._retry = self._loop.call_later(_RETRY_SECONDS, self._resync_or_retry)
