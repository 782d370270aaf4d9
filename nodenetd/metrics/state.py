"""What the service records for the metrics beyond its ``Counters``, kept on the event loop.

``ServiceRecord`` is the service's notebook: the last plan's verdict per managed setting (for
``nodenetd_setting_in_sync``), applies and failures per profile, drift corrections per kind,
what restore did, reloads and config revisions. The service calls it at the points where those
things happen (one line each); ``freeze`` copies it into the immutable snapshot the scrape
thread reads. Nothing here is read from another thread.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["ServiceRecord", "SettingStates", "TuningRecord"]

# (kind, setting key, in sync?) of one setting of one device; in sync None: skipped (the
# kernel or driver cannot take it)
SettingState = tuple[str, str, bool | None]


class SettingStates:
    """The last plan's verdict for every managed setting, by device (None: the node).

    A reconcile of some devices or kinds replaces exactly that part: the hotplug path costs
    one device's settings, not the table."""

    def __init__(self) -> None:
        self._by_device: dict[str | None, dict[str, SettingState]] = {}
        self._frozen: tuple | None = None  # freeze()'s result until the next change

    def record(self, plan: Any, devices: Iterable[str] | None,
               kinds: Iterable[str] | None) -> None:
        """Fold a plan (``nodenetd.tuning.plan.Plan``) made for ``devices`` (None: every
        device and the node) and ``kinds`` (None: all)."""
        self._frozen = None
        kinds = None if kinds is None else set(kinds)
        scope = list(self._by_device) if devices is None else list(devices)
        for device in scope:
            if devices is not None and device is None:
                continue
            table = self._by_device.get(device)
            if table is None:
                continue
            if kinds is None:
                del self._by_device[device]
            else:
                for sid in [s for s, (kind, _, _) in table.items() if kind in kinds]:
                    del table[sid]
        # observed: settings in observe-only mode that differ; owned (left to kube-proxy
        # and the like) are not nodenetd's to report
        for items, state in ((plan.in_sync, True), (plan.changes, False),
                             (getattr(plan, "observed", ()), False), (plan.skipped, None)):
            for item in items:
                self._by_device.setdefault(item.target.device, {})[item.id] = (
                    item.kind, item.key, state)

    def mark_in_sync(self, changes: Iterable[Any]) -> None:
        """Changes a transaction applied (and verified)."""
        self._frozen = None
        for change in changes:
            table = self._by_device.get(change.target.device)
            if table is not None and change.id in table:
                table[change.id] = (change.kind, change.key, True)

    def forget(self, device: str) -> None:
        if self._by_device.pop(device, None) is not None:
            self._frozen = None

    def freeze(self) -> tuple[tuple[str | None, str, str, bool | None], ...]:
        """(device, kind, key, in sync) of every setting; the same tuple until a change."""
        if self._frozen is None:
            self._frozen = tuple((device, kind, key, state)
                                 for device, table in self._by_device.items()
                                 for kind, key, state in table.values())
        return self._frozen


@dataclass(frozen=True)
class TuningRecord:
    """An immutable copy of a ServiceRecord, for one snapshot."""

    settings: tuple[tuple[str | None, str, str, bool | None], ...]
    profiles: tuple[str, ...]
    revisions: Mapping[str, str]
    profiles_of: Mapping[int, tuple[str, ...]]
    applies: Mapping[str, int]
    apply_failures: Mapping[str, int]
    last_apply: Mapping[str, tuple[float, bool]]
    corrections: Mapping[str, int]
    restored: int
    restore_failed: int
    restore_gone: int
    last_restore_at: float | None
    last_drift_check_at: float | None
    reload_ok: bool
    last_reload_success_at: float | None


def _revision(path: str | Path | None) -> str:
    """The first 12 hex digits of a file's SHA-256 (``sha256sum FILE | cut -c1-12``)."""
    if path is None:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return ""


class ServiceRecord:
    """The service's notebook for the metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.settings = SettingStates()
        self.profiles: tuple[str, ...] = ()
        self.revisions: dict[str, str] = {}
        self.profiles_of: dict[int, tuple[str, ...]] = {}  # ifindex -> profiles tuning it
        self.applies: collections.Counter[str] = collections.Counter()
        self.apply_failures: collections.Counter[str] = collections.Counter()
        self.last_apply: dict[str, tuple[float, bool]] = {}
        self.corrections: collections.Counter[str] = collections.Counter()
        self.restored = self.restore_failed = self.restore_gone = 0
        self.last_restore_at: float | None = None
        self.last_drift_check_at: float | None = None
        self.reload_ok = True
        self.last_reload_success_at: float | None = None

    # -- configuration

    def config_loaded(self, loaded: Any) -> None:
        """A config was loaded (start) or reloaded: profiles in force and their revisions."""
        from nodenetd.config.failover import FAILOVER_PROFILE
        from nodenetd.config.loader import OVERRIDES_PROFILE, ProfileLibrary

        node = loaded.node
        library = ProfileLibrary.for_node(node)
        revisions = {name: _revision(library.find(name)) for name in loaded.resolved.names}
        # The settings failover groups need and the node's overrides come from the node
        # config itself: its revision is theirs.
        if node.failover is not None and node.failover.groups:
            revisions[FAILOVER_PROFILE] = _revision(node.path)
        if node.overrides is not None:
            revisions[OVERRIDES_PROFILE] = _revision(node.path)
        names = tuple(revisions)
        self.profiles, self.revisions = names, revisions
        self.reload_ok = True
        self.last_reload_success_at = time.time()

    def reload_failed(self) -> None:
        self.reload_ok = False

    # -- tuning

    def planned(self, desired: Any, plan: Any, devices: Iterable[str] | None,
                kinds: Iterable[str] | None, *, drift_check: bool) -> None:
        """A reconcile planned ``desired`` (already narrowed to devices and kinds)."""
        self.settings.record(plan, devices, kinds)
        if kinds is None:
            for bound in desired.interfaces.values():
                self.profiles_of[bound.link.index] = tuple(sorted({
                    wanted.origin.profile for keys in bound.settings.values()
                    for wanted in keys.values()}))
        if drift_check:
            self.last_drift_check_at = time.time()

    def transaction(self, decided: Iterable[tuple[Any, str]], applied: Iterable[Any] | None
                    ) -> None:
        """A transaction of ``decided`` (change, why) pairs committed ``applied`` changes,
        or failed and rolled back (``applied`` None)."""
        decided = list(decided)
        profiles = {change.why.profile for change, _ in decided} or set(self.profiles)
        now = time.time()
        for profile in profiles:
            if applied is None:
                self.apply_failures[profile] += 1
            else:
                self.applies[profile] += 1
            self.last_apply[profile] = (now, applied is not None)
        if applied is None:
            return
        applied = list(applied)
        self.settings.mark_in_sync(applied)
        why = {change.id: reason for change, reason in decided}
        for change in applied:
            if why.get(change.id) == "drift":
                self.corrections[change.kind] += 1

    def control_apply(self, ok: bool) -> None:
        """``nodenetctl apply`` through the daemon: its own transaction over every profile."""
        now = time.time()
        for profile in self.profiles:
            (self.applies if ok else self.apply_failures)[profile] += 1
            self.last_apply[profile] = (now, ok)

    def restore_done(self, restored: int, failed: int, gone: int = 0) -> None:
        self.restored += restored
        self.restore_failed += failed
        self.restore_gone += gone
        self.last_restore_at = time.time()

    def restore_reply(self, data: Mapping[str, Any] | None) -> None:
        """A restore through the control socket (``render.restore_json``'s reply data)."""
        data = data or {}
        self.restore_done(len(data.get("restored") or ()), len(data.get("failed") or ()),
                          len(data.get("gone") or ()))

    def forget(self, ifindex: int, name: str) -> None:
        """An interface disappeared (or was renamed away)."""
        self.settings.forget(name)
        self.profiles_of.pop(ifindex, None)

    # -- the snapshot

    def freeze(self) -> TuningRecord:
        return TuningRecord(
            settings=self.settings.freeze(),
            profiles=self.profiles,
            revisions=MappingProxyType(dict(self.revisions)),
            profiles_of=MappingProxyType(dict(self.profiles_of)),
            applies=MappingProxyType(dict(self.applies)),
            apply_failures=MappingProxyType(dict(self.apply_failures)),
            last_apply=MappingProxyType(dict(self.last_apply)),
            corrections=MappingProxyType(dict(self.corrections)),
            restored=self.restored,
            restore_failed=self.restore_failed,
            restore_gone=self.restore_gone,
            last_restore_at=self.last_restore_at,
            last_drift_check_at=self.last_drift_check_at,
            reload_ok=self.reload_ok,
            last_reload_success_at=self.last_reload_success_at,
        )
