"""One failover group at run time: the failover pipeline of design.md, wired.

    link events, probe results
      -> MemberHealth per member (rise/fall, delays, damping)      nodenetd.health.member
      -> GroupPolicy (priority, preempt/sticky, hold-down, manual) nodenetd.health.policy
      -> Actuator.converge (bond active member | routes)           bond_group, route_group
      -> PeerNotifier (gratuitous ARP / unsolicited NA)            notify

Everything runs on the daemon's event loop. Link events come from the daemon's rtnetlink
view (no polling); probe results from one Prober per present member; one timer is armed at
the earliest deadline of any member's state machine or of the policy (up/down delays,
damping release, failback hold-down, the end of a manual switch), so an idle group costs
nothing but its probes.

Every member transition and every decision is one log line with its reason and journal
fields (GROUP, MEMBER, OLD, NEW, REASON), and is counted (``GroupCounters``) for status and
the metrics. A decision that moves the active member is made before anything else happens on
the loop, and the actuator writes at once: carrier loss seen on rtnetlink becomes a bond
active-slave change or a route replace within the same callback.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodenetd.config.failover import FailoverGroup
from nodenetd.daemon.logs import log_fields
from nodenetd.errors import KernelError, NodenetdError
from nodenetd.failover.actuator import Actuator, MemberLink
from nodenetd.failover.notify import NotifySettings, PeerNotifier, addresses_of
from nodenetd.health import probes
from nodenetd.health.member import Cause, MemberConfig, MemberHealth, Standing, Transition
from nodenetd.health.policy import (
    Decision,
    Failback,
    GroupCause,
    GroupConfig,
    GroupPolicy,
    MemberSpec,
)
from nodenetd.health.signals import LinkSignal, OperState, ProbeResult, target_key
from nodenetd.kernel.links import Link

__all__ = ["GroupCounters", "GroupRuntime"]

log = logging.getLogger("nodenetd.failover")

DETECTIONS_KEPT = 256  # recent failover detection times kept for status and metrics
# Upper bounds (seconds) of the detection-time histogram (nodenetd_failover_detection_seconds):
# carrier loss lands in the first buckets, probe-detected failures at (fall + 1) x interval.
DETECTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0)


def _reason_label(cause: Cause | GroupCause) -> str:
    return cause.value.replace(" ", "-")


@dataclass
class GroupCounters:
    """What a group did since the daemon started; read by status and the metrics."""

    transitions: collections.Counter[str] = field(default_factory=collections.Counter)
    switches: collections.Counter[str] = field(default_factory=collections.Counter)
    switch_errors: int = 0
    last_switch_at: float | None = None  # wall-clock time of the last switch
    # (cause, seconds from the first sign of failure to the decision), newest last
    detections: collections.deque[tuple[str, float]] = field(
        default_factory=lambda: collections.deque(maxlen=DETECTIONS_KEPT))
    # every detection since start, per DETECTION_BUCKETS bucket (the last one above them all)
    detection_counts: list[int] = field(
        default_factory=lambda: [0] * (len(DETECTION_BUCKETS) + 1))
    detection_sum: float = 0.0

    def detected(self, cause: str, seconds: float) -> None:
        self.detections.append((cause, seconds))
        self.detection_counts[bisect.bisect_left(DETECTION_BUCKETS, seconds)] += 1
        self.detection_sum += seconds


class GroupRuntime:
    """Health, policy, probes, actuator and notifier of one group."""

    def __init__(self, config: FailoverGroup, actuator: Actuator, *,
                 links: Callable[[], Mapping[str, Link]],
                 loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.monotonic,
                 prober_factory: Callable[..., probes.Prober] = probes.Prober) -> None:
        self.config = config
        self.actuator = actuator
        self._links = links
        self._loop = loop
        self._clock = clock
        self._prober_factory = prober_factory
        self.health = {
            m.interface: MemberHealth(MemberConfig(
                name=m.interface,
                targets=tuple(target_key(p.kind, p.target) for p in m.probes),
                combine=m.combine, rise=m.rise, fall=m.fall, up_delay=m.up_delay,
                down_delay=m.down_delay, damping=config.damping))
            for m in config.members
        }
        self.policy = GroupPolicy(GroupConfig(
            config.name, tuple(MemberSpec(m.interface, m.priority) for m in config.members),
            Failback(config.failback), config.preempt_delay))
        self.notifier = PeerNotifier(config.name, NotifySettings(
            config.notify_count, config.notify_interval), loop)
        self.counters = GroupCounters()
        self.probers: dict[str, probes.Prober] = {}
        self.links: dict[str, MemberLink] = {}
        self.kernel_error: str | None = None  # the last actuator failure, until one works
        self.decision: Decision | None = None
        self._last_ok: dict[str, float] = {}  # member -> when its path last answered
        self._failing_since: dict[str, float] = {}  # member -> first sign of its failure
        self._timer: asyncio.TimerHandle | None = None
        self._usable: frozenset[str] = frozenset()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Create or adopt the kernel objects and start from the kernel's current choice."""
        active = self.actuator.prepare(self._links())
        if active in self.health:
            self.policy = GroupPolicy(self.policy.config, active=active)
        log.info("failover group %s (%s): %d member(s), kernel's active member %s",
                 self.config.name, self.actuator.kind, len(self.health), active or "none")
        self.on_links()
        self._converge(self.policy.active)

    def close(self, *, restore: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for prober in self.probers.values():
            prober.close()
        self.probers.clear()
        self.notifier.close()
        try:
            self.actuator.release(restore=restore)
        except KernelError as exc:
            log.error("failover group %s: could not release: %s", self.config.name, exc)
        self.actuator.close()

    # -- inputs ---------------------------------------------------------------------------------

    def on_links(self, at: float | None = None) -> None:
        """A link event about a member (or the bond): re-read members' links, feed changes."""
        now = self._clock() if at is None else at
        states = self.actuator.member_links(self._links())
        transitions: list[Transition] = []
        for name, state in states.items():
            previous = self.links.get(name)
            self.links[name] = state
            self._manage_prober(name, state)
            if previous == state:
                continue
            operstate = OperState[state.operstate] if state.present else OperState.NOTPRESENT
            transitions += self.health[name].observe(
                LinkSignal(name, state.carrier, operstate, now))
            hidden = state.hidden_downs(previous)
            if hidden:
                log.info("failover group %s: %s lost carrier %d more time(s) than notified",
                         self.config.name, name, hidden)
                transitions += self.health[name].hidden_flaps(hidden, now)
            if not state.carrier:
                self._failing_since.setdefault(name, now)
        self._settle(transitions, now)

    def on_probe(self, result: ProbeResult) -> None:
        """One probe outcome (on the loop, from the member's prober)."""
        health = self.health.get(result.member)
        if health is None:
            return
        if result.ok:
            self._last_ok[result.member] = result.at
        transitions = health.observe(result)
        if transitions:
            self._settle(transitions, result.at)

    def on_kernel_event(self) -> None:
        """Something changed in the kernel objects the group owns (a route deleted, the bond
        reselected): converge again; writes only if the kernel differs from the choice."""
        self._converge(self.policy.active)

    # -- manual control ---------------------------------------------------------------------

    def switch(self, member: str, duration: float | None) -> Decision:
        """Pin ``member`` (raises SwitchRefused when it is not usable now)."""
        return self._manual(lambda now: self.policy.switch(now, member, duration))

    def hold(self) -> Decision:
        return self._manual(self.policy.hold)

    def release_override(self) -> Decision:
        return self._manual(self.policy.release)

    def _manual(self, act: Callable[[float], Decision]) -> Decision:
        now = self._clock()
        decision = act(now)
        self._apply(decision, now)
        self._arm()
        return decision

    # -- the pipeline -------------------------------------------------------------------------

    def _manage_prober(self, name: str, state: MemberLink) -> None:
        member = self.config.member(name)
        running = self.probers.get(name)
        if state.present and running is None and member.probes:
            prober = self._prober_factory(name, member.probes, self.on_probe)
            try:
                prober.start(self._loop)
            except NodenetdError as exc:
                log.error("failover group %s: cannot probe %s: %s", self.config.name, name, exc)
                return
            self.probers[name] = prober
        elif not state.present and running is not None:
            running.close()
            del self.probers[name]

    def _settle(self, transitions: list[Transition], now: float) -> None:
        for transition in transitions:
            self._log_transition(transition)
        if transitions or self.decision is None:
            self._decide(now)
        self._arm()

    def _log_transition(self, transition: Transition) -> None:
        self.counters.transitions[_reason_label(transition.cause)] += 1
        member = transition.member
        if transition.usable_changed and not transition.usable:
            if transition.cause is Cause.PROBE_TARGETS_LOST:
                since = self._last_ok.get(member, transition.at)
                self._failing_since[member] = min(self._failing_since.get(member, since), since)
            else:
                self._failing_since.setdefault(member, transition.at)
        elif transition.usable:
            self._failing_since.pop(member, None)
        level = logging.WARNING if transition.usable_changed and not transition.usable \
            else logging.INFO
        log_fields(log, level, f"failover group {self.config.name}: {transition}",
                   group=self.config.name, member=member, old=transition.previous.value,
                   new=transition.standing.value, reason=_reason_label(transition.cause))

    def _decide(self, now: float) -> None:
        usable = {name: health.usable for name, health in self.health.items()}
        warming = [name for name, health in self.health.items()
                   if health.standing is Standing.RISING]
        decision = self.policy.decide(now, usable, warming)
        changed_usable = frozenset(n for n, ok in usable.items() if ok) != self._usable
        self._usable = frozenset(n for n, ok in usable.items() if ok)
        self._apply(decision, now, ranking_changed=changed_usable)

    def _apply(self, decision: Decision, now: float, *, ranking_changed: bool = False) -> None:
        first = self.decision is None
        self.decision = decision
        if not decision.changed:
            if ranking_changed or first:
                self._converge(decision.active)
            if first or decision.cause is GroupCause.MANUAL:
                log.info("failover group %s: %s", self.config.name, decision)
            return
        cause = _reason_label(decision.cause)
        written = self._converge(decision.active)
        self.counters.switches[cause] += 1
        self.counters.last_switch_at = time.time()
        previous = decision.previous
        if decision.cause is GroupCause.FAILOVER and previous is not None:
            since = self._failing_since.get(previous)
            if since is not None and math.isfinite(since):
                self.counters.detected(cause, max(0.0, now - since))
        log_fields(log, logging.WARNING if decision.cause is GroupCause.FAILOVER
                   else logging.INFO,
                   f"failover group {self.config.name}: {decision}"
                   + ("" if written else " (the kernel already had it)"),
                   group=self.config.name, member=decision.active, old=previous,
                   new=decision.active, reason=cause)
        if decision.active is not None and decision.active_usable:
            self._notify(decision.active, f"{cause}: {decision.reason}")

    def ranking(self) -> list[str]:
        """Members in the order they should take over: usable ones first, each part by
        priority (higher first), then configuration order."""
        order = {m.interface: i for i, m in enumerate(self.config.members)}
        return sorted(self.health, key=lambda n: (
            not self.health[n].usable, -self.config.member(n).priority, order[n]))

    def _converge(self, active: str | None) -> bool:
        try:
            written = self.actuator.converge(self._links(), active, self.ranking())
        except KernelError as exc:
            self.counters.switch_errors += 1
            self.kernel_error = str(exc)
            log_fields(log, logging.ERROR, f"failover group {self.config.name}: could not "
                       f"make {active} active: {exc}", group=self.config.name, member=active,
                       reason="actuator-error")
            return False
        self.kernel_error = None
        return written

    def _notify(self, active: str, reason: str) -> None:
        if self.config.notify_count <= 0:
            return
        target = self.actuator.notify_target(active)
        try:
            ipv4, ipv6 = addresses_of(target.interface)
        except KernelError as exc:
            log.warning("failover group %s: no peer notification on %s: %s",
                        self.config.name, target.interface, exc)
            return
        self.notifier.notify(target.interface, ipv4=ipv4, ipv6=ipv6, reason=reason)

    def _arm(self) -> None:
        deadlines = [h.next_deadline() for h in self.health.values()]
        deadlines.append(self.policy.next_deadline())
        deadline = min((d for d in deadlines if d is not None), default=None)
        if self._timer is not None:
            if deadline is not None and self._timer.when() == deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._clock()
        transitions: list[Transition] = []
        for health in self.health.values():
            transitions += health.tick(now)
        for transition in transitions:
            self._log_transition(transition)
        self._decide(now)
        self._arm()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot: members, health, probes, damping, the active member."""
        now = self._clock()
        decision = self.decision
        override = self.policy.override
        members = []
        for member in self.config.members:
            name = member.interface
            health = self.health[name].status(now)
            counters = self.probers[name].counters() if name in self.probers else {}
            link = self.links.get(name)
            members.append({
                "name": name,
                "priority": member.priority,
                "standing": health.standing.value,
                "usable": health.usable,
                "healthy": health.healthy,
                "since": None if not math.isfinite(health.since) else round(now - health.since,
                                                                            3),
                "link": None if link is None else {"present": link.present,
                                                   "carrier": link.carrier,
                                                   "operstate": link.operstate},
                "path": str(health.path),
                "damping": None if health.damping is None else {
                    "penalty": round(health.damping.penalty, 1),
                    "suppressed": health.damping.suppressed,
                    "reuse_in": None if health.damping.reuse_at is None
                    else round(health.damping.reuse_at - now, 3),
                    "flaps": health.damping.flaps,
                },
                "last_transition": None if health.last is None else str(health.last),
                "probes": [_probe_json(kind, target, c, t)
                           for (kind, target), c in counters.items()
                           for t in [_target(health.targets, target_key(kind, target))]],
            })
        return {
            "name": self.config.name,
            "type": self.actuator.kind,
            "active": self.policy.active,
            "active_usable": bool(decision and decision.active_usable),
            "last_decision": None if decision is None else str(decision),
            "override": None if override is None else (
                {"hold": True} if not hasattr(override, "member") else {
                    "switch": override.member,
                    "remaining": None if override.until is None
                    else round(override.until - now, 3)}),
            "failback": self.config.failback,
            "preempt_delay": self.config.preempt_delay,
            "kernel_error": self.kernel_error,
            "members": members,
            "counters": {
                "switches": dict(self.counters.switches),
                "transitions": dict(self.counters.transitions),
                "switch_errors": self.counters.switch_errors,
                "last_switch_at": self.counters.last_switch_at,
                "detections_ms": [round(s * 1000, 2) for _, s in self.counters.detections],
            },
            "notify": dataclasses.asdict(self.notifier.counters()),
        }


def _target(targets: tuple, key: str) -> Any:
    return next((t for t in targets if t.name == key), None)


def _probe_json(kind: str, target: str, counters: probes.ProbeCounters, health: Any) -> dict:
    sent = counters.sent
    return {
        "kind": str(kind),
        "target": target,
        "state": None if health is None else health.state.value,
        "sent": sent,
        "ok": counters.ok,
        "failed": counters.failed,
        "loss": round(counters.failed / sent, 4) if sent else None,
        "last_rtt_ms": None if counters.last_rtt is None else round(counters.last_rtt * 1000, 3),
    }
