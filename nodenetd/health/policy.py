"""Group selection: which member should be active, and why. Pure; no kernel, no clock reads.

Input: each member's ``usable`` (from ``member``), optionally the members that are healthy
but serving their up-delay hold-down ("warming"), and the operator's overrides. Output: a
:class:`Decision` (active member, whether it changed, a cause and a one-line reason). The
actuator (bond active slave, route move) acts only when ``changed`` is true.

Rules, in order:

1. **hold GROUP** freezes the choice for maintenance: no automatic change at all, even if
   the active member dies (the reason says so; for a bond the kernel's carrier fast path
   still works). The operator is in charge until ``release``.
2. **switch GROUP MEMBER [--for D]** pins a usable member, for D seconds or until released.
   A pin is a preference, not a hold: if the pinned member becomes unusable, the pin is
   cancelled and the normal rules fail over. The latest manual command wins: a switch
   replaces a hold and a hold replaces a switch (freezing the pinned member).
3. The active member stays while usable, unless ``preempt`` and a member of *strictly*
   higher priority has been usable continuously for ``preempt_delay`` (keepalived's
   preempt_delay; bonding's primary_reselect=always plus a hold-down). ``sticky`` never
   fails back (teamd's sticky, bonding's primary_reselect=failure). Equal priorities never
   preempt: switching between equals gains nothing and costs a path change.
4. A new active member is needed (none yet, or the active one is unusable): the usable
   member with the highest priority (higher wins, as in teamd, keepalived and bond slave
   prio), ties broken by configuration order.
5. No usable member: take a warming one if any (bonding ignores updelay when no slave is
   active, so a recovering member carries traffic at once instead of after its hold-down);
   otherwise keep the last active member and report it unusable.

**What an actuator does when no member is usable**: nothing. It keeps the last active
member and its routes rather than tearing them down: if every path is dead, removing the
route or clearing the active slave gains nothing, and it loses the instant recovery when
the kernel's fast path (bond miimon, routes coming back with carrier) sees the member return
before nodenetd's probes do. ``Decision.active_usable`` tells status and metrics the group is
down.

Decisions change only when they must: calling :meth:`GroupPolicy.decide` again with the
same input returns the same active member with ``changed=False``.

Default ``preempt_delay`` 10 s: upstream recovery comes in stages (link up, then the
neighbour's STP/routing/VRRP converge, ~3.6 s for a VRRP master-down, ~0.9 s for FRR BFD),
so 10 s covers two VRRP detection cycles, long enough that a member that relapses right
after recovering is seen before traffic moves back. The price is 10 s on a working backup,
and failback is make-before-break, so it costs no loss. Flapping is damping's job, not this.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from nodenetd.errors import NodenetdError

__all__ = [
    "DEFAULT_PREEMPT_DELAY",
    "Decision",
    "Failback",
    "GroupCause",
    "GroupConfig",
    "GroupPolicy",
    "Hold",
    "MemberSpec",
    "Pin",
    "SwitchRefused",
]

DEFAULT_PREEMPT_DELAY = 10.0


class Failback(Enum):
    PREEMPT = "preempt"
    STICKY = "sticky"


class GroupCause(Enum):
    """Why a decision came out as it did: a small fixed set, fit for a metrics label."""

    INITIAL = "initial"  # first choice
    FAILOVER = "failover"  # the active member became unusable
    FAILBACK = "failback"  # preempted by a better member
    MANUAL = "manual"  # switch/hold/release by the operator
    STEADY = "steady"  # nothing to change
    NO_USABLE = "no usable member"


@dataclass(frozen=True, slots=True)
class MemberSpec:
    name: str
    priority: int = 0  # higher wins


@dataclass(frozen=True, slots=True)
class GroupConfig:
    name: str
    members: tuple[MemberSpec, ...]
    failback: Failback = Failback.PREEMPT
    preempt_delay: float = DEFAULT_PREEMPT_DELAY

    def __post_init__(self) -> None:
        names = [m.name for m in self.members]
        if not names:
            raise ValueError(f"group {self.name} has no members")
        if len(set(names)) != len(names):
            raise ValueError(f"group {self.name}: duplicate members in {names}")
        if not (math.isfinite(self.preempt_delay) and self.preempt_delay >= 0):
            raise ValueError(f"group {self.name}: preempt_delay must be >= 0 seconds")


@dataclass(frozen=True, slots=True)
class Pin:
    """Operator's ``switch``: ``member`` until ``until`` (monotonic), or until released."""

    member: str
    until: float | None


@dataclass(frozen=True, slots=True)
class Hold:
    """Operator's ``hold``: the choice is frozen until released."""


@dataclass(frozen=True, slots=True)
class Decision:
    active: str | None  # None only before anything was ever chosen
    previous: str | None
    changed: bool
    cause: GroupCause
    reason: str
    active_usable: bool

    def __str__(self) -> str:
        move = f"{self.previous} -> {self.active}" if self.changed else f"stay {self.active}"
        return f"{move} ({self.cause.value}): {self.reason}"


class SwitchRefused(NodenetdError):
    """A manual switch that cannot be honoured; the message says why."""

    def __init__(self, group: str, member: str, reason: str) -> None:
        self.group, self.member, self.reason = group, member, reason
        super().__init__(f"failover group {group}: cannot switch to {member}: {reason}")


class GroupPolicy:
    """The selection state of one failover group.

    Call :meth:`decide` whenever a member's usable state changes and when
    :meth:`next_deadline` is reached; call the manual methods from the control socket.
    ``now`` is monotonic seconds and must not go backwards (an earlier value counts as the
    last one).
    """

    def __init__(self, config: GroupConfig, active: str | None = None) -> None:
        self.config = config
        self._order = {m.name: i for i, m in enumerate(config.members)}
        self._priority = {m.name: m.priority for m in config.members}
        if active is not None:
            self._check(active)
        self._active = active  # e.g. the adopted bond's current active slave
        self._usable: frozenset[str] = frozenset()
        self._warming: frozenset[str] = frozenset()
        self._usable_since: dict[str, float] = {}
        self._override: Pin | Hold | None = None
        self._preempt_at: float | None = None
        self._now = -math.inf

    @property
    def active(self) -> str | None:
        return self._active

    @property
    def override(self) -> Pin | Hold | None:
        return self._override

    def next_deadline(self) -> float | None:
        """When a decision may change with no new input: a pending failback or pin expiry."""
        times = [self._preempt_at]
        if isinstance(self._override, Pin):
            times.append(self._override.until)
        return min((t for t in times if t is not None), default=None)

    def decide(self, now: float, usable: Mapping[str, bool],
               warming: Collection[str] = ()) -> Decision:
        """The active member given every member's usable state (absent means unusable)."""
        now = self._clamp(now)
        for name in (*usable, *warming):
            self._check(name)
        self._usable = frozenset(name for name, ok in usable.items() if ok)
        self._warming = frozenset(warming) - self._usable
        for name in self._order:
            if name in self._usable:
                self._usable_since.setdefault(name, now)
            else:
                self._usable_since.pop(name, None)
        return self._decide(now)

    def switch(self, now: float, member: str, duration: float | None = None) -> Decision:
        """Pin ``member`` (usable now) for ``duration`` seconds, or until :meth:`release`."""
        now = self._clamp(now)
        group = self.config.name
        if member not in self._order:
            members = ", ".join(self._order)
            raise SwitchRefused(group, member, f"not a member (members: {members})")
        if member not in self._usable:
            raise SwitchRefused(group, member, "it is not usable now")
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise SwitchRefused(group, member, f"duration must be positive, not {duration}")
        self._override = Pin(member, None if duration is None else now + duration)
        return self._decide(now)

    def hold(self, now: float) -> Decision:
        """Freeze the current choice until :meth:`release`."""
        self._override = Hold()
        return self._decide(self._clamp(now))

    def release(self, now: float) -> Decision:
        """End a switch or hold; the normal rules decide again at once."""
        was = self._override
        self._override = None
        return self._decide(self._clamp(now), "released by operator; " if was else "")

    # -- internals ---------------------------------------------------------------------------

    def _decide(self, now: float, prefix: str = "") -> Decision:
        self._preempt_at = None
        active = self._active
        override = self._override
        if isinstance(override, Pin) and override.until is not None and now >= override.until:
            self._override = override = None
            prefix += "manual switch expired; "

        if isinstance(override, Hold):
            note = "" if active is None or active in self._usable else f"; {active} is NOT usable"
            return self._keep(GroupCause.MANUAL, f"{prefix}held by operator{note}")
        if isinstance(override, Pin):
            if override.member in self._usable:
                if active != override.member:
                    return self._move(override.member, GroupCause.MANUAL,
                                      f"{prefix}manual switch{self._for(override, now)}")
                return self._keep(GroupCause.MANUAL,
                                  f"{prefix}manual switch{self._for(override, now)}")
            self._override = None
            prefix += f"manual switch cancelled, {override.member} unusable; "

        if active in self._usable:
            return self._stay_or_fail_back(active, now, prefix)
        if self._usable:
            best = self._best(self._usable)
            if active is None:
                return self._move(best, GroupCause.INITIAL,
                                  f"{prefix}best usable member{self._prio(best)}")
            return self._move(best, GroupCause.FAILOVER,
                              f"{prefix}{active} unusable; {best} is the best usable member"
                              f"{self._prio(best)}")
        if self._warming:
            if active in self._warming:
                return self._keep(GroupCause.NO_USABLE,
                                  f"{prefix}no usable member; {active} is recovering")
            best = self._best(self._warming)
            return self._move(best, GroupCause.INITIAL if active is None else GroupCause.FAILOVER,
                              f"{prefix}no usable member; taking {best} during its up-delay")
        if active is None:
            return self._keep(GroupCause.NO_USABLE, f"{prefix}no usable member yet")
        return self._keep(GroupCause.NO_USABLE,
                          f"{prefix}no usable member; keeping {active} in place")

    def _stay_or_fail_back(self, active: str, now: float, prefix: str) -> Decision:
        if self.config.failback is Failback.STICKY:
            return self._keep(GroupCause.STEADY, f"{prefix}{active} is usable (sticky)")
        best = self._best(self._usable)
        if self._priority[best] <= self._priority[active]:
            return self._keep(GroupCause.STEADY,
                              f"{prefix}{active} is usable with the best priority")
        ready_at = self._usable_since[best] + self.config.preempt_delay
        if now >= ready_at:
            return self._move(best, GroupCause.FAILBACK,
                              f"{prefix}{best}{self._prio(best)} usable for "
                              f"{now - self._usable_since[best]:.1f} s "
                              f"(preempt_delay {self.config.preempt_delay:g} s)")
        self._preempt_at = ready_at
        return self._keep(GroupCause.STEADY,
                          f"{prefix}{active} is usable; failback to {best} in "
                          f"{ready_at - now:.1f} s if it stays usable")

    def _move(self, member: str, cause: GroupCause, reason: str) -> Decision:
        previous, self._active = self._active, member
        return Decision(member, previous, True, cause, reason, member in self._usable)

    def _keep(self, cause: GroupCause, reason: str) -> Decision:
        active = self._active
        return Decision(active, active, False, cause, reason, active in self._usable)

    def _best(self, names: Collection[str]) -> str:
        return max(names, key=lambda n: (self._priority[n], -self._order[n]))

    def _prio(self, name: str) -> str:
        return f" (priority {self._priority[name]})"

    @staticmethod
    def _for(pin: Pin, now: float) -> str:
        return "" if pin.until is None else f" for {pin.until - now:.1f} s more"

    def _check(self, name: str) -> None:
        if name not in self._order:
            raise ValueError(f"group {self.config.name}: unknown member {name!r}")

    def _clamp(self, now: float) -> float:
        self._now = max(now, self._now)
        return self._now
