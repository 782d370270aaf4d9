"""One member's health state machine: link + path verdict + delays + damping -> usable.

Inputs are the records of ``signals`` (each stamped with its monotonic ``at``) and timer
ticks; the output is a :class:`Transition`, with a cause and a one-line reason, whenever the
member's standing changes. The daemon logs each transition, counts it by cause, and feeds
``usable`` to the group policy. It arms one timer at :meth:`MemberHealth.next_deadline`.

A member is *healthy* when its link is up (carrier, operstate UP/UNKNOWN) and its path
verdict is up (see ``targets``; a member without targets is judged on its link alone).
Standing follows from health over time:

- DOWN: not usable.
- RISING: healthy, serving its hold-down; usable once healthy for ``up_delay``.
- UP: usable.
- FALLING: probe targets lost, but within ``down_delay``; still usable. If the targets come
  back in time the member goes straight back to UP (as bonding does for a link that returns
  within downdelay).
- SUPPRESSED: flap damping holds it out, healthy or not (see ``damping``).

Decisions:

- **Carrier loss is immediate; ``down_delay`` debounces only the path verdict.** Bonding
  applies downdelay to MII; nodenetd does not, on purpose. For a bond group the kernel
  already acts on carrier at miimon speed with its *own* downdelay, and refuses an active
  slave whose link is down; for a route group, ``ignore_routes_with_linkdown`` drops the
  route at once. Holding a carrier-less member "usable" here would only make nodenetd's view
  disagree with the kernel's, and could make it steer traffic onto a dead link and fight the
  fast path. Carrier is a clean signal; if it needs debouncing, that is the bond's downdelay.
- **A flap is any healthy -> unhealthy change of raw health**, before delays, and any loss
  of the link, even one that comes before the path proved itself again: a link toggling
  faster than ``rise`` probes would otherwise never look healthy, so never flap, and be
  back in use the moment it settles for ``rise`` intervals. A member
  flapping faster than its ``up_delay`` never becomes usable, but it is still flapping: it
  is damped, so it stays out until it has been stable, not merely until the storm's last
  blip plus ``up_delay``. Blips hidden by ``down_delay`` count too: a path that drops every
  few seconds is unhealthy even if each drop is short.
- **A carrier change discards the path evidence** (targets go back to UNKNOWN), so after the
  link returns the path must answer ``rise`` times again before the member is healthy: the
  switch port may not forward yet (bonding.rst §13.1: updelay vs. port forwarding delay).
- **Nothing is trusted at start**: the member is DOWN until a link signal and, with targets,
  ``rise`` replies have arrived; the group policy keeps the kernel's current choice meanwhile.

Defaults: ``up_delay = down_delay = 0``, as in bonding (updelay/downdelay 0) and teamd
(delay_up/delay_down 0). Hysteresis already comes from rise/fall (3/3) and damping, and the
failback hold-down belongs to the group (``preempt_delay``): delaying a member's return in
the "both were down, one came back" case would only lengthen an outage, which is why
bonding ignores updelay when no slave is active. ``down_delay = 0`` keeps gray-failure
detection at fall x interval (30 ms at 10 ms probes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from nodenetd.health.damping import DampingConfig, DampingStatus, FlapDamper
from nodenetd.health.signals import LinkSignal, OperState, ProbeResult, Signal
from nodenetd.health.targets import (
    ANY,
    DEFAULT_FALL,
    DEFAULT_RISE,
    Combine,
    PathVerdict,
    TargetHealth,
    TargetSet,
)

__all__ = ["Cause", "MemberConfig", "MemberHealth", "MemberStatus", "Standing", "Transition"]


class Standing(Enum):
    DOWN = "down"
    RISING = "rising"
    UP = "up"
    FALLING = "falling"
    SUPPRESSED = "suppressed"

    @property
    def usable(self) -> bool:
        return self in (Standing.UP, Standing.FALLING)


class Cause(Enum):
    """Why a member's standing changed: a small fixed set, fit for a metrics label."""

    CARRIER = "carrier"  # link down, or not known yet
    PROBE_TARGETS_LOST = "probe targets lost"
    DAMPING = "damping"  # suppressed, or a suppression ended with the member still down
    HOLD_DOWN = "hold-down"  # healthy, serving up_delay
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class MemberConfig:
    name: str
    targets: tuple[str, ...] = ()
    combine: Combine = ANY
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    up_delay: float = 0.0  # seconds healthy before usable
    down_delay: float = 0.0  # seconds of lost probe targets before unusable; not for carrier
    damping: DampingConfig | None = field(default_factory=DampingConfig)  # None: off

    def __post_init__(self) -> None:
        for name in ("up_delay", "down_delay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{self.name}: {name} must be >= 0 seconds, not {value!r}")


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of standing, with the reason to log."""

    member: str
    at: float
    previous: Standing
    standing: Standing
    cause: Cause
    reason: str

    @property
    def usable(self) -> bool:
        return self.standing.usable

    @property
    def usable_changed(self) -> bool:
        return self.previous.usable != self.standing.usable

    def __str__(self) -> str:
        return (f"{self.member}: {self.previous.value} -> {self.standing.value} "
                f"({self.cause.value}): {self.reason}")


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """An immutable snapshot for ``nodenetctl failover status`` and the metrics."""

    name: str
    standing: Standing
    since: float  # when the standing last changed
    link_up: bool | None  # None: no link signal yet
    healthy: bool
    path: PathVerdict
    targets: tuple[TargetHealth, ...]
    damping: DampingStatus | None
    last: Transition | None

    @property
    def usable(self) -> bool:
        return self.standing.usable


class MemberHealth:
    """The state machine of one member. Feed it signals in time order; tick it at deadlines.

    ``observe`` and ``tick`` first play out any deadline that passed before their time (at
    the deadline's own time), so a late timer never changes the outcome, only when the
    caller hears of it. A signal stamped earlier than the last one seen counts as the last.
    """

    def __init__(self, config: MemberConfig) -> None:
        self.config = config
        self._targets = TargetSet(config.targets, config.combine, config.rise, config.fall)
        self._damper = FlapDamper(config.damping) if config.damping else None
        self._link: LinkSignal | None = None
        self._path = self._targets.verdict
        self._healthy = False
        self._changed_at = -math.inf  # when _healthy last changed
        self._standing = Standing.DOWN
        self._since = -math.inf
        self._now = -math.inf
        self._last: Transition | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def standing(self) -> Standing:
        return self._standing

    @property
    def usable(self) -> bool:
        return self._standing.usable

    def observe(self, signal: Signal) -> list[Transition]:
        """Take one link signal or probe result; returns the transitions it caused."""
        if not isinstance(signal, LinkSignal | ProbeResult):
            # e.g. the probes' own result record, unconverted: fail loudly, never drop it.
            raise TypeError(f"{self.name}: not a health signal: {type(signal).__qualname__}")
        if signal.member != self.name:
            raise ValueError(f"signal for {signal.member} fed to member {self.name}")
        now = max(signal.at, self._now)
        changes = self._advance(now)
        link_lost = False
        if isinstance(signal, LinkSignal):
            if self._link is not None and signal.up != self._link.up:
                self._targets.reset()
                link_lost = not signal.up
            self._link = signal
            self._path = self._targets.verdict
        else:
            self._path = self._targets.record(signal)
        healthy = self._link is not None and self._link.up and self._path.up
        if healthy != self._healthy:
            self._healthy, self._changed_at = healthy, now
            if not healthy and self._damper is not None:
                self._damper.flap(now)
        elif link_lost and self._damper is not None:
            # The link went down again before its path had proven itself: still a flap.
            self._damper.flap(now)
        changes.extend(self._settle(now))
        return changes

    def hidden_flaps(self, count: int, at: float) -> list[Transition]:
        """``count`` flaps that happened between two observations and were never seen as
        signals, each charged to damping.

        The kernel coalesces link notifications: its link-watch reports a device's changes at
        most about once a second once they come fast, and a down-up pair inside that window
        never reaches userspace. A link toggling at 10 Hz would look nearly stable from its
        notifications alone; its carrier-down counter (IFLA_CARRIER_DOWN_COUNT) shows every
        change, and the difference is passed in here.
        """
        now = max(at, self._now)
        changes = self._advance(now)
        if self._damper is not None and count > 0:
            for _ in range(count):
                self._damper.flap(now)
        changes.extend(self._settle(now))
        return changes

    def tick(self, now: float) -> list[Transition]:
        """Play out deadlines up to ``now`` (call at :meth:`next_deadline`)."""
        return self._advance(max(now, self._now))

    def next_deadline(self) -> float | None:
        """When the standing will change with no new signal, or None."""
        if self._standing is Standing.RISING:
            return self._changed_at + self.config.up_delay
        if self._standing is Standing.FALLING:
            return self._changed_at + self.config.down_delay
        if self._standing is Standing.SUPPRESSED and self._damper is not None:
            return self._damper.next_change(self._now)
        return None

    def status(self, now: float) -> MemberStatus:
        now = max(now, self._now)
        return MemberStatus(
            self.name, self._standing, self._since,
            None if self._link is None else self._link.up, self._healthy, self._path,
            self._targets.health(),
            None if self._damper is None else self._damper.status(now), self._last)

    # -- internals ---------------------------------------------------------------------------

    def _advance(self, now: float) -> list[Transition]:
        changes: list[Transition] = []
        # Each deadline changes the standing when it is reached, so this ends; the bound is
        # a guard against an arithmetic surprise turning into a hung event loop.
        for _ in range(4):
            deadline = self.next_deadline()
            if deadline is None or deadline > now:
                break
            settled = self._settle(deadline)
            if not settled:
                break
            changes.extend(settled)
        self._now = now
        return changes

    def _settle(self, now: float) -> list[Transition]:
        """Re-evaluate the standing at ``now``; a transition if it changed."""
        self._now = max(self._now, now)
        previous = self._standing
        standing = self._evaluate(now)
        if standing is previous:
            return []
        cause, reason = self._explain(previous, standing, now)
        transition = Transition(self.name, now, previous, standing, cause, reason)
        self._standing, self._since, self._last = standing, now, transition
        return [transition]

    def _evaluate(self, now: float) -> Standing:
        cfg = self.config
        if self._damper is not None and self._damper.suppressed(now):
            return Standing.SUPPRESSED
        was_usable = self._standing.usable
        if self._healthy:
            if was_usable or now >= self._changed_at + cfg.up_delay:
                return Standing.UP
            return Standing.RISING
        if (was_usable and self._link_ok
                and now < self._changed_at + cfg.down_delay):
            return Standing.FALLING
        return Standing.DOWN

    @property
    def _link_ok(self) -> bool:
        return self._link is not None and self._link.up

    def _failure(self) -> tuple[Cause, str]:
        link = self._link
        if link is None:
            return Cause.CARRIER, "link state not known yet"
        if not link.carrier:
            return Cause.CARRIER, "carrier lost"
        if not link.up:
            return Cause.CARRIER, f"operstate {OperState(link.operstate).name}"
        return Cause.PROBE_TARGETS_LOST, f"probe targets lost: {self._path}"

    def _explain(self, previous: Standing, standing: Standing, now: float) -> tuple[Cause, str]:
        cfg = self.config
        if standing is Standing.SUPPRESSED:
            assert self._damper is not None
            status = self._damper.status(now)
            release = (status.reuse_at or now) - now
            return Cause.DAMPING, (
                f"flapping: penalty {status.penalty:.0f} above suppress "
                f"{self._damper.config.suppress:.0f} after {status.flaps} flap(s); "
                f"held out for {release:.1f} s unless it flaps again")
        released = "damping released; " if previous is Standing.SUPPRESSED else ""
        if standing is Standing.UP:
            if previous is Standing.FALLING:
                return Cause.RECOVERED, f"{self._health_text()} again within down_delay"
            if previous is Standing.RISING:
                return Cause.RECOVERED, f"healthy for up_delay {cfg.up_delay:g} s"
            return Cause.RECOVERED, f"{released}{self._health_text()}"
        if standing is Standing.RISING:
            return Cause.HOLD_DOWN, (
                f"{released}{self._health_text()}; usable after up_delay {cfg.up_delay:g} s")
        cause, text = self._failure()
        if standing is Standing.FALLING:
            return cause, f"{text}; out of use in {cfg.down_delay:g} s unless they recover"
        if previous is Standing.FALLING and cause is Cause.PROBE_TARGETS_LOST:
            return cause, f"{text}, for down_delay {cfg.down_delay:g} s"
        if released:
            return Cause.DAMPING, f"{released}still down: {text}"
        return cause, text

    def _health_text(self) -> str:
        return f"healthy: link up, {self._path}"

