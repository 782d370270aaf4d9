"""Per-interface series: link state from the snapshot, counters from the kernel at scrape time.

Which interfaces: those a profile tunes, members and bonds of failover groups, and physical
NICs (a bus parent, such as PCI), plus ``metrics.interfaces.include`` globs, minus
``exclude`` globs (exclude wins). A Kubernetes node's veths, bridges and tunnels are left out
unless asked for: node_exporter's users fight exactly that cardinality. The series of an
interface that disappears are gone at the next scrape: every scrape is built from the current
links, nothing is kept per interface but the driver name and speed caches, which are pruned.

Two collectors, so each can fail alone:

- ``interfaces`` (the link view the loop keeps from rtnetlink events, so no kernel read):
  info, admin state, carrier, operstate, carrier change counts, MTU; speed from one
  ethtool-netlink ``LINKMODES`` dump, cached until the link's carrier changes (at most
  ``SPEED_TTL``); the driver from ``ETHTOOL_GDRVINFO``, once per interface.
- ``interface_stats``: bytes, packets, errors, drops and missed from one ``RTM_GETSTATS`` dump
  of the 64-bit counters, on this collector's own socket, read fresh at every scrape.

Names follow node_exporter's (``device`` label, base units, ``_total``) under ``nodenetd_``,
so ``on(instance, device)`` joins the two; nodenetd reports the raw kernel counters
(``rx_dropped`` and ``rx_missed_errors`` apart, where node_exporter adds them up).
"""

from __future__ import annotations

import fnmatch
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from nodenetd.config.metrics import MetricsSettings
from nodenetd.errors import Unsupported
from nodenetd.kernel.links import Link
from nodenetd.kernel.stats import DriverNames, LinkStatsReader, SpeedReader
from nodenetd.metrics.exposition import Family, escape
from nodenetd.metrics.snapshot import Snapshot

__all__ = ["OPERSTATES", "InterfaceSelection", "InterfaceStatsCollector", "InterfacesCollector"]

# RFC 2863 operational states as the kernel reports them (IF_OPER_*), lower case
OPERSTATES = ("up", "down", "lowerlayerdown", "dormant", "notpresent", "testing", "unknown")
SPEED_TTL = 60.0  # seconds a cached link speed is trusted while the carrier does not change
_MBIT = 125_000  # bytes per second in one Mb/s


def _globs(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def link_kind(link: Link) -> str:
    if link.loopback:
        return "loopback"
    if link.kind:
        return link.kind
    return "physical" if link.parent_bus else "other"


_LINK_FAMILIES = (
    ("nodenetd_interface_info", "gauge",
     "Interfaces nodenetd reports on: kind (physical, veth, bond, vlan...), driver, master "
     "(the bond or bridge it is enslaved to) and the profiles tuning it (comma-separated). "
     "Always 1."),
    ("nodenetd_interface_admin_up", "gauge",
     "1 when the interface is administratively up (IFF_UP)."),
    ("nodenetd_interface_carrier", "gauge", "1 when the interface has carrier (IFLA_CARRIER)."),
    ("nodenetd_interface_operstate", "gauge",
     "The RFC 2863 operational state (IFLA_OPERSTATE): 1 for the current state, 0 for the "
     "others."),
    ("nodenetd_interface_carrier_up_changes_total", "counter",
     "Times the carrier came up since the device was created (IFLA_CARRIER_UP_COUNT), also "
     "those link-watch never notified."),
    ("nodenetd_interface_carrier_down_changes_total", "counter",
     "Times the carrier went down since the device was created (IFLA_CARRIER_DOWN_COUNT), "
     "also those link-watch never notified."),
    ("nodenetd_interface_mtu_bytes", "gauge", "The MTU (IFLA_MTU)."),
    ("nodenetd_interface_speed_bytes", "gauge",
     "The link speed in bytes per second (ethtool link modes; absent when the driver does not "
     "know it). Cached until the carrier changes, at most 60 s."),
)
_OPER_TAILS = tuple((state.upper(), f',operstate="{state}"}} ') for state in OPERSTATES)


def _render_link(link: Link, driver: str | None, master: str, profiles: tuple[str, ...],
                 mbits: int | None) -> tuple[str, ...]:
    """One interface's lines, one string per _LINK_FAMILIES entry ("" for none)."""
    dev = '{device="' + escape(link.name) + '"'
    closed = dev + "} "
    current = link.operstate
    return (
        f'nodenetd_interface_info{dev},kind="{escape(link_kind(link))}",'
        f'driver="{escape(driver or "")}",master="{escape(master)}",'
        f'profile="{escape(",".join(profiles))}"}} 1\n',
        f"nodenetd_interface_admin_up{closed}{int(link.admin_up)}\n",
        f"nodenetd_interface_carrier{closed}{int(link.carrier)}\n",
        "".join(f"nodenetd_interface_operstate{dev}{tail}{int(state == current)}\n"
                for state, tail in _OPER_TAILS),
        "" if link.carrier_up_count is None else
        f"nodenetd_interface_carrier_up_changes_total{closed}{link.carrier_up_count}\n",
        "" if link.carrier_down_count is None else
        f"nodenetd_interface_carrier_down_changes_total{closed}{link.carrier_down_count}\n",
        f"nodenetd_interface_mtu_bytes{closed}{link.mtu}\n",
        f"nodenetd_interface_speed_bytes{closed}{mbits * _MBIT}\n" if mbits else "",
    )


class InterfaceSelection:
    """Which links get per-interface series (see the module docstring)."""

    def __init__(self, settings: MetricsSettings) -> None:
        self._include = _globs(settings.include)
        self._exclude = _globs(settings.exclude)
        self._last: tuple[Snapshot, list[Link]] | None = None  # both collectors ask

    def select(self, snapshot: Snapshot) -> list[Link]:
        last = self._last
        if last is not None and last[0] is snapshot:
            return last[1]
        chosen = self._select(snapshot)
        self._last = (snapshot, chosen)
        return chosen

    def _select(self, snapshot: Snapshot) -> list[Link]:
        include, exclude = self._include, self._exclude
        managed, failover = snapshot.managed, snapshot.failover_interfaces
        chosen = []
        for link in snapshot.links.values():
            name = link.name
            if exclude is not None and exclude.match(name):
                continue
            if (link.index in managed or name in failover
                    or (link.parent_bus and not link.kind and not link.loopback)
                    or (include is not None and include.match(name))):
                chosen.append(link)
        chosen.sort(key=lambda link: link.name)
        return chosen


class InterfacesCollector:
    name = "interfaces"

    def __init__(self, selection: InterfaceSelection, *,
                 speeds: Callable[[], Any] = SpeedReader,
                 drivers: Callable[[], Any] = DriverNames) -> None:
        self.selection = selection
        self._speed_factory = speeds
        self._driver_factory = drivers
        self._speed_reader: Any = None
        self._speeds_unsupported = False
        self._drivers: Any = None
        self._lock = threading.Lock()  # this collector's caches and sockets, not the loop's
        # ifindex -> (carrier key, read at, Mb/s or None)
        self._speed: dict[int, tuple[tuple, float, int | None]] = {}
        self._driver: dict[int, tuple[str, str | None]] = {}  # ifindex -> (name, driver)
        # ifindex -> (link, driver, master, profiles, speed, rendered lines)
        self._rendered: dict[int, tuple] = {}

    def close(self) -> None:
        with self._lock:
            for reader in (self._speed_reader, self._drivers):
                if reader is not None:
                    reader.close()
            self._speed_reader = self._drivers = None

    def collect(self, snapshot: Snapshot) -> list[Family]:
        links = self.selection.select(snapshot)
        profiles_of = snapshot.tuning.profiles_of if snapshot.tuning is not None else {}
        by_index = snapshot.links
        families = [Family(name, type_, help_) for name, type_, help_ in _LINK_FAMILIES]
        rendered = []
        with self._lock:
            speeds = self._speeds_of(links, snapshot)
            drivers = self._drivers_of(links, snapshot)
            cache, fresh = self._rendered, {}
            for link in links:
                index = link.index
                master = by_index.get(link.master) if link.master else None
                facts = (link, drivers.get(index), master.name if master else "",
                         profiles_of.get(index, ()), speeds.get(index))
                entry = cache.get(index)
                # Links are immutable and the view replaces a link's object when it changes:
                # an unchanged interface's series are rendered once, then reused.
                if entry is None or entry[0] is not link or entry[1:5] != facts[1:]:
                    entry = (*facts, _render_link(*facts))
                fresh[index] = entry
                rendered.append(entry[5])
            self._rendered = fresh  # interfaces that went away leave the cache here
        for column, family in enumerate(families):
            family.lines = [texts[column] for texts in rendered if texts[column]]
        return families

    # -- caches (under self._lock)

    def _speeds_of(self, links: list[Link], snapshot: Snapshot) -> dict[int, int | None]:
        if self._speeds_unsupported:
            return {}
        now = time.monotonic()
        cache = self._speed
        stale = False
        for link in links:
            entry = cache.get(link.index)
            key = (link.carrier, link.operstate, link.carrier_up_count, link.carrier_down_count)
            if entry is None or entry[0] != key or now - entry[1] > SPEED_TTL:
                stale = True
                break
        if stale:
            if self._speed_reader is None:
                try:
                    self._speed_reader = self._speed_factory()
                except Unsupported:  # no ethtool netlink: no speeds, and no failure
                    self._speeds_unsupported = True
                    return {}
            dumped = self._speed_reader.dump()
            fresh = {}
            for link in links:
                key = (link.carrier, link.operstate, link.carrier_up_count,
                       link.carrier_down_count)
                fresh[link.index] = (key, now, dumped.get(link.index))
            self._speed = cache = fresh
        return {index: entry[2] for index, entry in cache.items()}

    def _drivers_of(self, links: list[Link], snapshot: Snapshot) -> dict[int, str | None]:
        cache = self._driver
        for link in links:
            entry = cache.get(link.index)
            if entry is None or entry[0] != link.name:
                if self._drivers is None:
                    self._drivers = self._driver_factory()
                cache[link.index] = (link.name, self._drivers.get(link.name))
        if len(cache) > 2 * len(links) + 64:  # interfaces that went away
            alive = snapshot.links
            for index in [i for i in cache if i not in alive]:
                del cache[index]
        return {index: driver for index, (_, driver) in cache.items()}


_STATS = (
    # (metric, index in STATS_FIELDS, help)
    ("nodenetd_interface_receive_bytes_total", 2, "Bytes received (rx_bytes)."),
    ("nodenetd_interface_transmit_bytes_total", 3, "Bytes sent (tx_bytes)."),
    ("nodenetd_interface_receive_packets_total", 0, "Packets received (rx_packets)."),
    ("nodenetd_interface_transmit_packets_total", 1, "Packets sent (tx_packets)."),
    ("nodenetd_interface_receive_errors_total", 4, "Receive errors (rx_errors)."),
    ("nodenetd_interface_transmit_errors_total", 5, "Transmit errors (tx_errors)."),
    ("nodenetd_interface_receive_drops_total", 6,
     "Received packets dropped by the kernel (rx_dropped; ring overflows are "
     "nodenetd_interface_receive_missed_total)."),
    ("nodenetd_interface_transmit_drops_total", 7, "Packets dropped on transmit (tx_dropped)."),
    ("nodenetd_interface_receive_missed_total", 15,
     "Packets the NIC dropped for lack of receive buffers (rx_missed_errors): the ring-size "
     "signal."),
)


class InterfaceStatsCollector:
    """The 64-bit counters of the selected interfaces, from one RTM_GETSTATS dump per
    scrape (IFLA_STATS_LINK_64), on this collector's own netlink socket."""

    name = "interface_stats"

    def __init__(self, selection: InterfaceSelection, *,
                 reader: Callable[[], Any] = LinkStatsReader) -> None:
        self.selection = selection
        self._reader_factory = reader
        self._reader: Any = None
        self._lock = threading.Lock()  # one dump at a time on the socket (serialised reads)
        self._prefixes: dict[str, str] = {}  # device -> its label text

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def collect(self, snapshot: Snapshot) -> list[Family]:
        links = self.selection.select(snapshot)
        with self._lock:
            if self._reader is None:
                self._reader = self._reader_factory()
            try:
                stats = self._reader.dump()
            except Exception:
                self._reader.close()  # a fresh socket next time
                self._reader = None
                raise
        families = [Family(name, "counter", help_) for name, _, help_ in _STATS]
        rows = []
        prefixes = self._prefixes
        for link in links:
            values = stats.get(link.index)
            if values is None:  # appeared after the snapshot, or gone since
                continue
            prefix = prefixes.get(link.name)
            if prefix is None:
                prefix = prefixes[link.name] = '{device="' + escape(link.name) + '"} '
            rows.append((prefix, values))
        if len(prefixes) > 2 * len(links) + 64:  # names that went away
            self._prefixes = {link.name: prefixes[link.name] for link in links
                              if link.name in prefixes}
        for family, (name, field, _) in zip(families, _STATS, strict=True):
            family.lines = [f"{name}{prefix}{values[field]}\n" for prefix, values in rows]
        return families
