"""The immutable snapshot the metrics read, and where it comes from.

The event loop owns the daemon's state. ``build`` runs *on the loop* and copies what the
collectors need into frozen values (tuples, read-only mappings, frozen dataclasses): the link
view, the managed interfaces, the service's counters and record, every failover group's
members, probes and counters. The scrape thread then works on that copy alone, so it never
takes a lock of the loop and never sees a half-updated structure.

``Publisher`` holds the one reference. A scrape asks for a snapshot no older than
``max_age`` (default 0: taken after the scrape asked); when the current one is older, it asks
the loop to build a new one (``call_soon_threadsafe``) and waits up to ``timeout`` for it;
concurrent scrapes share one request. A busy loop is never
interrupted: it builds the snapshot between two callbacks, and a scrape that cannot wait
serves the previous snapshot (``nodenetd_snapshot_timestamp_seconds`` shows its age). An idle
daemon that nobody scrapes builds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nodenetd.health.probes import ProbeCounters
from nodenetd.kernel.links import Link
from nodenetd.metrics.state import TuningRecord

__all__ = ["DaemonState", "GroupState", "MemberState", "ProbeState", "Publisher", "Snapshot",
           "build"]

log = logging.getLogger("nodenetd.metrics")

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Mapping[Any, Any]:
    return _EMPTY


@dataclass(frozen=True)
class DaemonState:
    mode: str = "enforce"
    paused: bool = False
    rtnl_events: Mapping[str, int] = field(default_factory=_empty)
    ethtool_events: Mapping[str, int] = field(default_factory=_empty)
    udev_events: Mapping[str, int] = field(default_factory=_empty)
    resyncs: int = 0
    overflows: int = 0
    reloads: int = 0
    reload_failures: int = 0
    hotplug_tuned: int = 0
    drift_detected: int = 0
    conflicts: int = 0
    backoffs: int = 0  # settings left alone right now (a conflict's window)
    journal_originals: Mapping[str, int] = field(default_factory=_empty)  # by setting kind
    journal_pending: bool = False


@dataclass(frozen=True)
class MemberState:
    name: str
    priority: int
    active: bool = False
    usable: bool = False
    healthy: bool = False
    present: bool = False
    penalty: float = 0.0
    suppressed: bool = False
    flaps: int = 0


@dataclass(frozen=True)
class ProbeState:
    member: str
    kind: str
    target: str
    up: bool = False  # the target's rise/fall verdict
    counters: ProbeCounters | None = None  # None: not probing (member absent, group waiting)


@dataclass(frozen=True)
class GroupState:
    name: str
    kind: str  # route | bond
    running: bool
    members: tuple[MemberState, ...]
    probes: tuple[ProbeState, ...]
    switches: Mapping[str, int] = field(default_factory=_empty)
    transitions: Mapping[str, int] = field(default_factory=_empty)
    switch_errors: int = 0
    last_switch_at: float | None = None
    detection_counts: tuple[int, ...] = ()
    detection_sum: float = 0.0
    override: str | None = None  # "hold" | "switch" while an operator's override is in force
    notify: Mapping[str, int] = field(default_factory=_empty)


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # wall clock
    taken_mono: float
    links: Mapping[int, Link] = field(default_factory=_empty)  # by ifindex
    managed: frozenset[int] = frozenset()  # ifindexes a profile tunes
    failover_interfaces: frozenset[str] = frozenset()  # members and bonds of failover groups
    daemon: DaemonState = field(default_factory=DaemonState)
    tuning: TuningRecord | None = None
    groups: tuple[GroupState, ...] = ()


# -- building, on the loop -------------------------------------------------------------------


def build(service: Any) -> Snapshot:
    """A snapshot of ``service`` (nodenetd.daemon.service.Service); call on its loop."""
    events = service.events
    counters = service.counters
    ethtool = getattr(service, "ethtool_monitor", None)
    udev_events = {key.removeprefix("udev-"): value for key, value in counters.events.items()
                   if key.startswith("udev-")}
    originals: dict[str, int] = {}
    for original in service.journal.originals.values():
        originals[original.kind] = originals.get(original.kind, 0) + 1
    daemon = DaemonState(
        mode=service.settings.mode,
        paused=service.paused,
        rtnl_events=MappingProxyType(dict(events.events)),
        ethtool_events=MappingProxyType(dict(ethtool.events) if ethtool else {}),
        udev_events=MappingProxyType(udev_events),
        resyncs=events.resyncs,
        overflows=events.overflows + (ethtool.overflows if ethtool else 0),
        reloads=counters.reloads,
        reload_failures=counters.reload_failures,
        hotplug_tuned=counters.hotplug_tuned,
        drift_detected=counters.drift_detected,
        conflicts=counters.conflicts,
        backoffs=len(service.backoff.until),
        journal_originals=MappingProxyType(originals),
        journal_pending=service.journal.pending is not None,
    )
    failover = service.failover
    groups = [_group(runtime) for runtime in failover.groups.values()]
    groups += [_waiting(config) for config, _ in failover.waiting.values()]
    interfaces = set()
    for group in failover.config.groups:
        interfaces.update(group.interfaces)
        if group.bond:
            interfaces.add(group.bond)
    return Snapshot(
        taken_at=time.time(),
        taken_mono=time.monotonic(),
        links=MappingProxyType(dict(events.view.by_index)),
        managed=frozenset(service.tuned),
        failover_interfaces=frozenset(interfaces),
        daemon=daemon,
        tuning=service.record.freeze(),
        groups=tuple(groups),
    )


def _group(runtime: Any) -> GroupState:
    status = runtime.status()
    counters = runtime.counters
    members, probes = [], []
    for member in status["members"]:
        name = member["name"]
        damping = member.get("damping") or {}
        link = member.get("link") or {}
        members.append(MemberState(
            name=name, priority=member["priority"], active=status["active"] == name,
            usable=bool(member["usable"]), healthy=bool(member["healthy"]),
            present=bool(link.get("present")), penalty=float(damping.get("penalty") or 0.0),
            suppressed=bool(damping.get("suppressed")), flaps=int(damping.get("flaps") or 0)))
        prober = runtime.probers.get(name)
        running = prober.counters() if prober is not None else {}
        states = {(p["kind"], p["target"]): p.get("state") for p in member["probes"]}
        for spec in runtime.config.member(name).probes:
            key = (str(spec.kind), spec.target)
            probes.append(ProbeState(name, key[0], key[1], up=states.get(key) == "up",
                                     counters=running.get((spec.kind, spec.target))))
    override = status.get("override")
    return GroupState(
        name=runtime.config.name,
        kind=runtime.actuator.kind,
        running=True,
        members=tuple(members),
        probes=tuple(probes),
        switches=MappingProxyType(dict(counters.switches)),
        transitions=MappingProxyType(dict(counters.transitions)),
        switch_errors=counters.switch_errors,
        last_switch_at=counters.last_switch_at,
        detection_counts=tuple(getattr(counters, "detection_counts", ())),
        detection_sum=float(getattr(counters, "detection_sum", 0.0)),
        override=None if not override else ("hold" if override.get("hold") else "switch"),
        notify=MappingProxyType(dict(status.get("notify") or {})),
    )


def _waiting(config: Any) -> GroupState:
    """A configured group that could not start yet: every member and probe, all zero."""
    return GroupState(
        name=config.name,
        kind=config.type,
        running=False,
        members=tuple(MemberState(m.interface, m.priority) for m in config.members),
        probes=tuple(ProbeState(m.interface, str(p.kind), p.target)
                     for m in config.members for p in m.probes),
    )


# -- publishing ------------------------------------------------------------------------------


class Publisher:
    """The one reference to the current snapshot; rebuilt by the loop on demand."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, build: Callable[[], Snapshot],
                 *, max_age: float = 0.0, timeout: float = 2.0) -> None:
        self._loop = loop
        self._build = build
        self.max_age = max_age
        self.timeout = timeout
        self.current: Snapshot | None = None
        self._lock = threading.Lock()  # the publisher's own; the loop's state has none
        self._waiting: threading.Event | None = None
        self.failures = 0  # builds that raised

    def publish(self) -> None:
        """Build and publish a snapshot; on the loop thread only."""
        try:
            snapshot = self._build()
        except Exception:
            self.failures += 1
            log.exception("metrics: building the snapshot failed")
            snapshot = None
        with self._lock:
            if snapshot is not None:
                self.current = snapshot  # the swap: one reference
            event, self._waiting = self._waiting, None
        if event is not None:
            event.set()

    def get(self) -> Snapshot | None:
        return self.fetch()[0]

    def fetch(self) -> tuple[Snapshot | None, bool]:
        """(snapshot, fresh): a snapshot at most ``max_age`` old, or taken after this call,
        when the loop makes one within ``timeout`` (fresh); else the newest there is (None
        before the first) and False."""
        current = self.current
        if current is not None and time.monotonic() - current.taken_mono <= self.max_age:
            return current, True
        loop = self._loop
        if loop is None or loop.is_closed():
            return current, False
        with self._lock:
            event = self._waiting
            if event is None:
                event = self._waiting = threading.Event()
                try:
                    loop.call_soon_threadsafe(self.publish)
                except RuntimeError:  # the loop is closing
                    self._waiting = None
                    return self.current, False
        answered = event.wait(self.timeout)
        return self.current, answered and self.current is not None

    def close(self) -> None:
        self._loop = None
