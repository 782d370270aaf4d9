"""udev events for network interfaces: an optional source of device properties.

rtnetlink is the daemon's hotplug trigger; udev only adds facts rtnetlink lacks (ID_PATH,
ID_NET_DRIVER, ID_NET_NAME_*...) once it has processed a device, so that a profile can follow
a NIC across renames. ``UdevEvents`` wraps a pyudev monitor (netlink, subsystem "net") the way
the other sources are wrapped: its fd is registered with ``loop.add_reader`` and every queued
event is passed to ``on_event(action, ifname, ifindex, properties)``.

When udev cannot serve, the source stays closed and says why (``reason``), and nothing else
breaks. That is the case

- without udevd (containers, minimal systems: no ``/run/udev/control``);
- in a network namespace other than udevd's (``ip netns exec``, a pod): udevd runs in the
  initial namespace and only ever handles that namespace's devices, so no udev event about
  this namespace's devices is ever sent. Worse, its database is keyed by ifindex
  (``/run/udev/data/n<ifindex>``) and ifindexes are per namespace: the file for ifindex 5
  there describes the *host's* ifindex 5. So ``initialized`` answers False whenever the
  source is unavailable; a caller must not defer on it then, and must not trust udev
  properties looked up by ifindex either;
- without libudev (pyudev cannot load it).

``udev_initialized(ifindex)`` tells whether udev has processed a device (its database file
exists), so the daemon can defer selectors that need udev properties until then; the
``add``/``move`` event that follows is the moment to evaluate them.

``source="kernel"`` listens to the kernel's own uevents instead (before udev, without udev's
properties; they are delivered inside any network namespace). The daemon does not need them;
they serve tests of this wrapper where no udevd runs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "UDEV_CONTROL",
    "UDEV_DB",
    "UdevEvents",
    "udev_initialized",
    "udev_unavailable_reason",
]

log = logging.getLogger(__name__)

UDEV_DB = Path("/run/udev/data")
UDEV_CONTROL = Path("/run/udev/control")  # udevd's control socket: present while it runs
_NETNS_SELF = Path("/proc/self/ns/net")
_NETNS_INIT = Path("/proc/1/ns/net")  # udevd's namespace is PID 1's (systemd starts it)
DRAIN_BUDGET = 256

OnEvent = Callable[[str, str, int, Mapping[str, str]], None]


def udev_initialized(ifindex: int, *, db_dir: Path = UDEV_DB) -> bool:
    """True when udev has processed the network interface with this ifindex: its database
    entry ``n<ifindex>`` exists. Only meaningful in udevd's network namespace."""
    return (db_dir / f"n{ifindex}").exists()


def udev_unavailable_reason(
    *, control: Path = UDEV_CONTROL, netns_self: Path = _NETNS_SELF, netns_init: Path = _NETNS_INIT
) -> str | None:
    """Why udev cannot tell us about this namespace's interfaces, or None when it can."""
    if not control.exists():
        return f"udevd is not running (no {control})"
    try:
        here, init = os.stat(netns_self), os.stat(netns_init)
    except OSError as exc:
        return f"cannot compare network namespaces with udevd's: {exc}"
    if (here.st_dev, here.st_ino) != (init.st_dev, init.st_ino):
        return "this is not udevd's network namespace (udevd serves the initial one)"
    return None


class UdevEvents:
    """udev "net" events for the event loop; optional (see the module docstring).

    ``start`` returns False, and leaves ``reason`` saying why, when udev cannot serve this
    namespace. ``events`` counts the events by action. Exceptions raised by the callback are
    logged and do not stop the source.
    """

    def __init__(
        self,
        on_event: OnEvent,
        *,
        source: Literal["udev", "kernel"] = "udev",
        db_dir: Path = UDEV_DB,
        control: Path = UDEV_CONTROL,
    ) -> None:
        self._on_event = on_event
        self._source = source
        self._db_dir = db_dir
        self._control = control
        self._monitor: Any = None  # pyudev.Monitor; pyudev is imported only when used
        self._loop: asyncio.AbstractEventLoop | None = None
        self.available = False
        self.reason: str | None = "not started"
        self.events: Counter[str] = Counter()

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Open the monitor and watch it; False (logged once, reason in ``reason``) when udev
        cannot serve this namespace. Never raises for an absent or unusable udev."""
        if self._monitor is not None:
            return True
        if self._source == "udev":
            reason = udev_unavailable_reason(control=self._control)
            if reason is not None:
                return self._unavailable(reason)
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context, source=self._source)
            monitor.filter_by(subsystem="net")
            monitor.start()  # non-blocking from here on
        except (ImportError, OSError) as exc:
            return self._unavailable(f"cannot open a udev monitor: {exc}")
        loop.add_reader(monitor.fileno(), self._on_readable)
        self._monitor, self._loop = monitor, loop
        self.available, self.reason = True, None
        return True

    def initialized(self, ifindex: int) -> bool:
        """Whether udev has this interface; always False while the source is unavailable
        (the database would describe another namespace's interface, or none)."""
        return self.available and udev_initialized(ifindex, db_dir=self._db_dir)

    def close(self) -> None:
        if self._monitor is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._monitor.fileno())
            self._monitor = None  # pyudev closes the socket when the monitor is collected
        self._loop = None
        self.available = False

    def _unavailable(self, reason: str) -> bool:
        self.available, self.reason = False, reason
        log.info("udev source off: %s; interfaces are matched without udev properties", reason)
        return False

    def _on_readable(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        for _ in range(DRAIN_BUDGET):
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:
                log.warning("udev: receive error: %s", exc)
                if exc.errno == errno.ENOBUFS:
                    continue  # events were lost; rtnetlink still has every link
                return
            if device is None:
                return
            self._dispatch(device)

    def _dispatch(self, device: Any) -> None:
        action = device.action or "change"
        properties = dict(device.properties)
        try:
            ifindex = int(properties.get("IFINDEX", ""))
        except ValueError:
            log.debug("udev: %s event without IFINDEX for %s", action, device.sys_name)
            return
        ifname = properties.get("INTERFACE") or device.sys_name
        self.events[action] += 1
        try:
            self._on_event(action, ifname, ifindex, properties)
        except Exception:
            log.exception("udev: the handler failed on %s %s", action, ifname)
