"""nodenetd's service: one asyncio loop owns the node.

Events (rtnetlink, ethtool notifications, udev), timers (sysctls, which have no events, and
a slow safety-net resync), signals and control requests all end in the same place: mark
interfaces dirty, then reconcile only those, through the same planner and transaction as
nodenetctl. A new interface is tuned at once; a managed setting someone changed behind our
back is corrected (``enforce``) or only reported (``observe``), and a setting someone keeps
rewriting is left alone after ``backoff_corrections`` corrections in ``backoff_window``
seconds, reported as a conflict.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodenetd.cli import commands
from nodenetd.cli.render import show_setting
from nodenetd.daemon import control
from nodenetd.daemon.api import EXIT_USAGE, Reply
from nodenetd.daemon.logs import log_change
from nodenetd.daemon.sources.ethtool_monitor import EthtoolMonitor
from nodenetd.daemon.sources.rtnl import LinkChange, LinkEvents
from nodenetd.daemon.sources.udev import UdevEvents
from nodenetd.daemon.systemd import Notifier, watchdog_interval, watchdog_loop
from nodenetd.errors import ApplyFailed, ConfigError, LockBusy, NodenetdError
from nodenetd.failover.manager import Failover
from nodenetd.metrics import snapshot as metrics_snapshot
from nodenetd.metrics.exporter import MetricsExporter
from nodenetd.metrics.state import ServiceRecord
from nodenetd.tuning import engine
from nodenetd.tuning.desired import Desired, bind
from nodenetd.tuning.journal import Journal
from nodenetd.tuning.lock import MutationLock
from nodenetd.tuning.plan import Change, Plan
from nodenetd.tuning.planner import plan
from nodenetd.tuning.restore import restore
from nodenetd.tuning.session import KernelSession
from nodenetd.tuning.transaction import Transaction, recover

log = logging.getLogger("nodenetd")

EXIT_FAILED = 1
EXIT_CONFIG = 3
EXIT_LOCKED = 4
UDEV_WAIT = 5.0  # seconds a new NIC waits for udev when a selector needs udev properties


@dataclass
class Counters:
    """What the service did since it started; shown by status, exported by metrics."""

    hotplug_tuned: int = 0
    drift_detected: int = 0
    drift_corrected: int = 0
    conflicts: int = 0
    apply_failures: int = 0
    reloads: int = 0
    reload_failures: int = 0
    events: collections.Counter[str] = field(default_factory=collections.Counter)


class Backoff:
    """Per setting: corrections in the last window; past the limit, stop fighting."""

    def __init__(self, limit: int, window: float):
        self.limit = limit
        self.window = window
        self._corrections: dict[str, collections.deque[float]] = {}
        self.until: dict[str, float] = {}  # setting id -> monotonic time the back-off ends

    def blocked(self, setting: str, now: float) -> bool:
        end = self.until.get(setting)
        if end is not None and now >= end:
            del self.until[setting]
            self._corrections.pop(setting, None)
            return False
        return end is not None

    def record(self, setting: str, now: float) -> bool:
        """Count a correction; True when this one crossed the limit (start backing off)."""
        times = self._corrections.setdefault(setting, collections.deque())
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) >= self.limit:
            self.until[setting] = now + self.window
            return True
        return False


class Service:
    def __init__(self, config_path: str | None, notifier: Notifier | None = None, *,
                 log_level: str | None = None):
        self.config_path = config_path
        self.log_level = log_level  # from the command line; else the config's
        self.notifier = notifier or Notifier()
        self.counters = Counters()
        self.record = ServiceRecord()  # what the metrics need beyond the counters
        self.metrics: MetricsExporter | None = None
        self.tuned: dict[int, str] = {}  # ifindex -> name of interfaces reconciled once
        self.paused = False  # after a restore request: hands off until apply or reload
        self._dirty: set[str] = set()
        self._udev_timers: dict[int, asyncio.TimerHandle] = {}  # NICs waiting for udev
        self._udev_gave_up: set[int] = set()
        self._flush_scheduled = False
        self._stop = asyncio.Event()
        self._lock: MutationLock | None = None

    # -- life cycle -------------------------------------------------------------------------

    async def run(self) -> int:
        try:
            self.loaded = engine.load(self.config_path)
        except ConfigError as exc:
            log.error("invalid configuration, not starting:\n%s", exc)
            return EXIT_CONFIG
        self.settings = self.loaded.node.daemon
        self.record.config_loaded(self.loaded)
        logging.getLogger().setLevel((self.log_level or self.settings.log_level).upper())
        try:
            self._lock = MutationLock(self.loaded.state_dir).__enter__()
        except LockBusy as exc:
            log.error("%s", exc)
            return EXIT_LOCKED
        try:
            return await self._serve()
        except NodenetdError as exc:  # an unreadable journal, a broken state dir...
            log.error("cannot run: %s", exc)
            return EXIT_FAILED
        finally:
            self._lock.__exit__(None, None, None)

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        self.session = KernelSession()
        self.journal = Journal(self.loaded.state_dir)
        self.backoff = Backoff(self.settings.backoff_corrections, self.settings.backoff_window)
        problems = recover(self.session, self.journal)
        if problems:
            log.error("could not fully undo an interrupted apply: %s", "; ".join(problems))
        self.events = LinkEvents(self._on_link_change, self._on_other_event)
        self.events.start(loop)
        self.ethtool_monitor = EthtoolMonitor(self._on_ethtool_change, self._resync)
        try:
            self.ethtool_monitor.start(loop)
        except NodenetdError as exc:  # old kernels: drift in offloads is caught by resyncs
            log.warning("no ethtool notifications (%s); offload drift is found by resyncs", exc)
        self.udev = UdevEvents(self._on_udev_event)
        self.udev.start(loop)  # optional: without udevd it stays off and says why
        # Before the first reconcile: a bond group's bond must exist to be tuned.
        self.failover = Failover(self.loaded.node.failover, links=lambda: self.events.view.links,
                                 loop=loop)
        self.failover.start()
        self.notifier.status("applying profiles")
        self.reconcile(None, reason="start")
        server = await control.serve(self.settings.control_socket, self)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        timers = [
            asyncio.create_task(self._every("sysctl_interval", self._check_sysctls)),
            asyncio.create_task(self._every("resync_interval", self._resync)),
        ]
        if (interval := watchdog_interval()) is not None:
            timers.append(asyncio.create_task(watchdog_loop(self.notifier, interval)))
        self.metrics = MetricsExporter(self.loaded.node.metrics,
                                       lambda: metrics_snapshot.build(self), loop)
        self.metrics.start()
        self.notifier.ready(self._status_line())
        log.info("ready: %s", self._status_line())
        await self._stop.wait()
        self.notifier.stopping()
        for task in timers:
            task.cancel()
        self.metrics.close()
        server.close()
        self.events.close()
        self.ethtool_monitor.close()
        self.udev.close()
        self._on_stop()
        self.session.close()
        return 0

    def _on_stop(self) -> None:
        self.failover.close(restore=self.settings.on_stop == "restore")
        if self.settings.on_stop == "restore":
            self.session.narrow(None)
            report = restore(self.session, self.journal)
            log.info("stopping: restored %d original(s), %d failed",
                     len(report.restored), len(report.failed))
        else:
            log.info("stopping: keeping the tuning (on_stop: keep); %d original(s) journaled",
                     len(self.journal.originals))

    async def _every(self, setting: str, action: Callable[[], object]) -> None:
        """Run ``action`` every ``daemon.<setting>`` seconds, as the current config says."""
        while True:
            await asyncio.sleep(getattr(self.settings, setting))
            action()

    def _status_line(self) -> str:
        state = "paused after restore" if self.paused else f"mode {self.settings.mode}"
        return (f"{len(self.tuned)} interface(s) managed, {state}, "
                f"{self.counters.drift_corrected} drift correction(s), "
                f"{len(self.backoff.until)} conflict(s)")

    # -- events -----------------------------------------------------------------------------

    def _on_other_event(self, kind: str) -> None:
        self.counters.events[kind] += 1
        if kind in ("newroute", "delroute", "newaddr"):
            self.failover.on_route_event()

    def _on_link_change(self, change: LinkChange) -> None:
        self.counters.events[f"link-{change.action}"] += 1
        link = change.link
        # Failover first, in this callback: a carrier loss becomes a switch before anything
        # else runs on the loop.
        self.failover.on_link_change({link.name, change.old_name or link.name},
                                     time.monotonic())
        if change.action == "deleted":
            self._forget(link.index, link.name)
            return
        if change.action == "renamed" and change.old_name:
            self._forget(link.index, change.old_name)
        self._mark_dirty(link.name)

    def _on_ethtool_change(self, kind: str, ifindex: int) -> None:
        self.counters.events[f"ethtool-{kind}"] += 1
        link = self.events.view.by_index.get(ifindex)
        if link is not None and ifindex in self.tuned:
            self._mark_dirty(link.name)

    def _forget(self, ifindex: int, name: str) -> None:
        """An interface that disappeared (or was renamed away) leaves the live state and the
        journal: its originals died with it."""
        self.tuned.pop(ifindex, None)
        self.record.forget(ifindex, name)
        self._dirty.discard(name)
        self._udev_gave_up.discard(ifindex)
        if (timer := self._udev_timers.pop(ifindex, None)) is not None:
            timer.cancel()
        stale = [key for key, o in self.journal.originals.items() if o.ifindex == ifindex]
        if stale:
            self.journal.drop(stale)
            log.info("%s is gone: dropped %d journaled original(s)", name, len(stale))

    def _mark_dirty(self, name: str) -> None:
        self._dirty.add(name)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # After the current callback: a burst of events drained in one read becomes
            # one reconcile.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        dirty -= self._waiting_for_udev(dirty)
        if dirty and not self.paused:
            self.reconcile(dirty, reason="event")

    def _waiting_for_udev(self, names: set[str]) -> set[str]:
        """New NICs udev has not processed yet, when a selector matches on udev properties:
        they wait for udev's event (or UDEV_WAIT seconds) so ID_PATH rules see them."""
        if not self.udev.available or not any(
                rule.selector.needs_udev for rule in self.loaded.resolved.rules):
            return set()
        waiting = set()
        for name in names:
            link = self.events.view.links.get(name)
            if (link is None or link.index in self.tuned or link.index in self._udev_gave_up
                    or self.udev.initialized(link.index)):
                continue
            if link.index not in self._udev_timers:
                self._udev_timers[link.index] = asyncio.get_running_loop().call_later(
                    UDEV_WAIT, self._give_up_on_udev, link.index)
            waiting.add(name)
        return waiting

    def _give_up_on_udev(self, ifindex: int) -> None:
        self._udev_timers.pop(ifindex, None)
        self._udev_gave_up.add(ifindex)
        if (link := self.events.view.by_index.get(ifindex)) is not None:
            log.warning("udev has not processed %s after %.0fs; tuning it without udev "
                        "properties", link.name, UDEV_WAIT)
            self._mark_dirty(link.name)

    def _on_udev_event(self, action: str, ifname: str, ifindex: int,
                       properties: object) -> None:
        self.counters.events[f"udev-{action}"] += 1
        if (timer := self._udev_timers.pop(ifindex, None)) is not None:
            timer.cancel()
        if action in ("add", "move", "change") and ifname in self.events.view.links:
            self._mark_dirty(ifname)

    def _check_sysctls(self) -> None:
        if not self.paused:
            self.reconcile(None, kinds={"sysctl"}, reason="sysctl check")

    def _resync(self) -> None:
        self.events.resync()
        self.failover.on_route_event()
        if not self.paused:
            self.reconcile(None, reason="resync")

    # -- reconcile --------------------------------------------------------------------------

    def _desired(self, devices: set[str] | None, kinds: set[str] | None) -> Desired:
        links = self.events.view.links
        ifindexes = None
        if devices is not None:
            ifindexes = [links[name].index for name in devices if name in links]
        self.session.narrow(ifindexes)
        desired = bind(self.loaded.resolved, self.session.links())
        return desired.only(devices=devices, node=devices is None, kinds=kinds)

    def reconcile(self, devices: set[str] | None, *, kinds: set[str] | None = None,
                  reason: str) -> Plan:
        """Plan the given interfaces (None: the whole node) and apply what policy allows:
        everything on start, reload, apply and for interfaces seen for the first time;
        drift per mode and back-off."""
        desired = self._desired(devices, kinds)
        result = plan(desired, self.session)
        self.record.planned(desired, result, devices, kinds,
                            drift_check=reason not in ("start", "reload", "apply"))
        fresh = {b.link.index for b in desired.interfaces.values()
                 if self.tuned.get(b.link.index) != b.link.name}
        wholesale = reason in ("start", "reload", "apply")
        decided = [(c, reason if wholesale else "new interface") for c in result.changes
                   if wholesale or c.target.ifindex in fresh]
        if not wholesale:
            decided += self._drift([c for c in result.changes if c.target.ifindex not in fresh])
        if decided:
            self._apply(decided, reason, desired)
        for bound in desired.interfaces.values():
            if bound.link.index in fresh:
                self.tuned[bound.link.index] = bound.link.name
                if not wholesale:
                    self.counters.hotplug_tuned += 1
                    log.info("tuned new interface %s (%s)", bound.link.name,
                             "; ".join(bound.rules))
        return result

    def _drift(self, changes: list[Change]) -> list[tuple[Change, str]]:
        """Settings changed behind our back: report, correct, or back off from a fight."""
        now = time.monotonic()
        corrections = []
        for change in changes:
            self.counters.drift_detected += 1
            fields = {"interface": change.target.device, "setting": change.key,
                      "old": change.current, "new": change.desired}
            if self.settings.mode == "observe":
                log_change(log, logging.WARNING,
                           f"drift (observe only): {change.label} is {change.current!r}, "
                           f"the profile wants {change.desired!r}",
                           reason="drift-observed", **fields)
            elif self.backoff.blocked(change.id, now):
                continue
            elif self.backoff.record(change.id, now):
                self.counters.conflicts += 1
                log_change(log, logging.ERROR,
                           f"conflict: something else keeps setting {change.label} to "
                           f"{change.current!r}; not correcting it for "
                           f"{self.backoff.window:.0f}s", reason="conflict", **fields)
            else:
                corrections.append((change, "drift"))
        return corrections

    def _apply(self, decided: list[tuple[Change, str]], reason: str,
               desired: Desired | None = None) -> None:
        why_of = {change.id: why for change, why in decided}
        try:
            result = Transaction(self.session, self.journal, strict=self.loaded.node.strict,
                                 desired=desired).run([change for change, _ in decided])
        except ApplyFailed as exc:
            self.counters.apply_failures += 1
            self.record.transaction(decided, None)
            log.error("apply (%s) failed and was rolled back:\n%s", reason, exc)
            return
        self.record.transaction(decided, result.applied)
        for change in result.applied:
            # Queue steering re-planned after a channel change was not in the decision.
            why = why_of.get(change.id, "queues changed")
            if why == "drift":
                self.counters.drift_corrected += 1
            old, new = show_setting(change, change.current), show_setting(change, change.desired)
            log_change(log, logging.INFO, f"{change.label}: {old} -> {new} ({why}; {change.why})",
                       interface=change.target.device, setting=change.key, old=old, new=new,
                       reason=why)

    # -- reload and control -----------------------------------------------------------------

    def reload(self) -> Reply:
        """Re-read and validate; apply only the difference; a bad config changes nothing."""
        self.notifier.reloading()
        try:
            loaded = engine.load(self.config_path)
        except ConfigError as exc:
            self.counters.reload_failures += 1
            self.record.reload_failed()
            log.error("reload rejected, the running configuration stays in force:\n%s", exc)
            self.notifier.ready(f"reload rejected; {self._status_line()}")
            return Reply(EXIT_CONFIG, "", error=f"invalid configuration:\n{exc}\n"
                         "the running configuration stays in force")
        self.loaded = loaded
        self.record.config_loaded(loaded)
        if self.metrics is not None:
            self.metrics.reload(loaded.node.metrics)
        if loaded.node.daemon.control_socket != self.settings.control_socket:
            log.warning("reload: control_socket changes take effect at the next restart")
        self.settings = loaded.node.daemon
        self.backoff.limit = self.settings.backoff_corrections
        self.backoff.window = self.settings.backoff_window
        self.paused = False
        for line in self.failover.reload(loaded.node.failover):
            log.info("reload: failover %s", line)
        self.session.narrow(None)
        managed = bind(loaded.resolved, self.session.links())
        unmanaged = {key for key, o in self.journal.originals.items()
                     if not managed.manages(o.kind, o.device, o.key)}
        if unmanaged:
            report = restore(self.session, self.journal, only=unmanaged)
            self.record.restore_done(len(report.restored), len(report.failed),
                                     len(report.gone))
            log.info("reload: restored %d setting(s) the new config no longer manages",
                     len(report.restored))
        result = self.reconcile(None, reason="reload")
        self.counters.reloads += 1
        self.notifier.ready(self._status_line())
        log.info("reloaded: %d change(s)", len(result.changes))
        return Reply(0, f"reloaded: {len(result.changes)} change(s), "
                        f"{len(unmanaged)} setting(s) no longer managed restored",
                     {"changes": len(result.changes), "restored": len(unmanaged)})

    async def handle(self, command: str, args: dict[str, Any]) -> Reply:
        """A control request, run on the loop between events: the transaction it may start
        and the daemon's own never interleave. (An apply of 1000 interfaces takes well under
        a second, far inside the watchdog interval.)"""
        if command == "reload":
            return self.reload()
        if command == "failover":
            try:
                args = commands.check_args(command, args)
            except commands.BadRequest as exc:
                return Reply(EXIT_USAGE, "", error=f"nodenetctl: {exc}")
            return self.failover.control(args)
        if command in ("status", "plan"):
            self.session.narrow(None)
            reply = commands.run_loaded(self.loaded, command, args, session=self.session)
            if command == "status":
                reply.data["daemon"] = self._daemon_status()
                reply.text += f"\n\nnodenetd: {self._status_line()}"
            return reply
        reply = commands.run_loaded(self.loaded, command, args, locked=True)
        # The command wrote the journal through its own handle: read it back.
        self.journal = Journal(self.loaded.state_dir)
        if command == "restore":
            self.record.restore_reply(reply.data)
        if command == "apply" and not args.get("dry_run"):
            self.record.control_apply(reply.exit_code == 0)
            self.paused = False
            self.reconcile(None, reason="apply")
        elif command == "restore" and reply.exit_code == 0:
            self.paused = True
            log.info("restored on request; not tuning until the next apply or reload")
        self.notifier.status(self._status_line())
        return reply

    def _daemon_status(self) -> dict[str, Any]:
        return {
            "mode": self.settings.mode,
            "paused": self.paused,
            "managed": len(self.tuned),
            "conflicts": sorted(self.backoff.until),
            "counters": {k: v for k, v in vars(self.counters).items() if k != "events"},
            "events": dict(self.counters.events),
            "resyncs": self.events.resyncs,
            "failover": {runtime.config.name: {"active": runtime.policy.active,
                                               "active_usable": bool(
                                                   runtime.decision
                                                   and runtime.decision.active_usable)}
                         for runtime in self.failover.groups.values()},
        }
