"""A member's probe targets, each debounced by rise/fall, combined into one path verdict.

Why per target, not per member: with several targets, one dead target (a router being
rebooted, a rate-limited ICMP responder) must not read as a dead path under ``any``, and a
burst of mixed results across targets must not reset each other's streaks. teamd keeps one
``missed`` counter per watcher and combines the watchers' ``link_up`` by any/all; keepalived
debounces each ``vrrp_script`` with ``rise``/``fall``. This module does both, and adds
``quorum: N`` (the case neither anchor has: "at least two of my three upstream routers").

Counting, keepalived style:

- ``rise`` consecutive successes bring a target up; ``fall`` consecutive failures bring it
  down. A result of the other kind resets the streak.
- A target starts UNKNOWN, which counts as not up: a member is not trusted until its path
  has proven itself ``rise`` times. UNKNOWN leaves by whichever streak completes first.

Defaults: ``rise = fall = 3``, the reference's suggested 3 up / 3 down, between bonding's
``arp_missed_max`` 2 and teamd's ``missed_max`` 3 (+1). At 10 ms probes that detects a gray
failure in ~30 ms, inside the issue's 50 ms target; at 100-300 ms, in 0.3-0.9 s.

Probe liveness is the probes' job: a probe that gets no reply reports ``ok=False`` when its
timeout expires. A target whose prober stopped reporting keeps its last state here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from nodenetd.health.signals import ProbeResult

__all__ = [
    "ALL",
    "ANY",
    "DEFAULT_FALL",
    "DEFAULT_RISE",
    "Combine",
    "PathVerdict",
    "TargetHealth",
    "TargetSet",
    "TargetState",
]

DEFAULT_RISE = 3
DEFAULT_FALL = 3


@dataclass(frozen=True, slots=True)
class Combine:
    """How target states combine into a path verdict: ``any``, ``all`` or ``quorum: N``.

    ``any`` (the default, as in teamd) keeps a member in use while at least one target
    answers, which is right when the targets are redundant routers. ``all`` fails the member
    if any one target is lost, which is right when every target is a must-reach service.
    """

    kind: Literal["any", "all", "quorum"]
    n: int = 0  # only for quorum

    def __post_init__(self) -> None:
        if self.kind not in ("any", "all", "quorum"):
            raise ValueError(f"unknown target combination {self.kind!r}")
        if self.kind == "quorum" and self.n < 1:
            raise ValueError(f"quorum must be at least 1, not {self.n}")
        if self.kind != "quorum" and self.n:
            raise ValueError(f"{self.kind} takes no count")

    @classmethod
    def quorum(cls, n: int) -> Combine:
        return cls("quorum", n)

    @classmethod
    def parse(cls, value: object) -> Combine:
        """From config: ``"any"``, ``"all"``, ``{"quorum": N}`` or ``"quorum: N"``."""
        if isinstance(value, Mapping) and set(value) == {"quorum"}:
            value = f"quorum: {value['quorum']}"
        if isinstance(value, str):
            word, _, count = value.partition(":")
            word = word.strip()
            if word == "any" and not count:
                return cls("any")
            if word == "all" and not count:
                return cls("all")
            if word == "quorum" and count.strip().isdigit():
                return cls.quorum(int(count))
        raise ValueError(f"expected any, all or quorum: N, not {value!r}")

    def needed(self, total: int) -> int:
        """How many of ``total`` targets must be up for the path to be up."""
        if self.kind == "any":
            return min(1, total)
        if self.kind == "all":
            return total
        return self.n

    def __str__(self) -> str:
        return f"quorum: {self.n}" if self.kind == "quorum" else self.kind


ANY = Combine("any")
ALL = Combine("all")


class TargetState(Enum):
    UNKNOWN = "unknown"  # no verdict yet (start, or evidence discarded by reset())
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """A snapshot of one target, for status and metrics."""

    name: str
    state: TargetState
    streak: int  # consecutive results of the kind that last arrived
    streak_ok: bool
    last_rtt: float | None  # of the last successful probe
    results: int  # lifetime counts, for loss ratios
    lost: int


@dataclass(frozen=True, slots=True)
class PathVerdict:
    """The combined verdict and enough detail to explain it in one log line."""

    up: bool
    combine: Combine
    up_count: int
    down_count: int
    unknown_count: int
    needed: int

    @property
    def total(self) -> int:
        return self.up_count + self.down_count + self.unknown_count

    def __str__(self) -> str:
        if not self.total:
            return "no probe targets"
        text = f"{self.up_count} of {self.total} targets up, need {self.needed} ({self.combine})"
        if self.unknown_count:
            text += f", {self.unknown_count} not yet known"
        return text


class _Target:
    __slots__ = ("last_rtt", "lost", "results", "state", "streak", "streak_ok")

    def __init__(self) -> None:
        self.state = TargetState.UNKNOWN
        self.streak = 0
        self.streak_ok = False
        self.last_rtt: float | None = None
        self.results = 0
        self.lost = 0

    def record(self, ok: bool, rtt: float | None, rise: int, fall: int) -> None:
        self.results += 1
        if ok:
            self.last_rtt = rtt if rtt is not None else self.last_rtt
        else:
            self.lost += 1
        if ok == self.streak_ok:
            self.streak += 1
        else:
            self.streak_ok, self.streak = ok, 1
        if ok and self.state is not TargetState.UP and self.streak >= rise:
            self.state = TargetState.UP
        elif not ok and self.state is not TargetState.DOWN and self.streak >= fall:
            self.state = TargetState.DOWN

    def reset(self) -> None:
        self.state, self.streak, self.streak_ok = TargetState.UNKNOWN, 0, False


class TargetSet:
    """The probe targets of one member and their combined verdict.

    With no targets the path is taken as up: such a member is judged on its link alone.
    """

    def __init__(self, targets: Iterable[str] = (), combine: Combine = ANY,
                 rise: int = DEFAULT_RISE, fall: int = DEFAULT_FALL) -> None:
        names = list(targets)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate probe targets in {names}")
        if rise < 1 or fall < 1:
            raise ValueError(f"rise and fall must be at least 1 (rise={rise}, fall={fall})")
        if combine.kind == "quorum" and combine.n > len(names):
            raise ValueError(f"quorum {combine.n} cannot be met by {len(names)} target(s)")
        self.combine = combine
        self.rise = rise
        self.fall = fall
        self._targets = {name: _Target() for name in names}
        self._verdict: PathVerdict | None = None

    def record(self, result: ProbeResult) -> PathVerdict:
        """Count one result; returns the verdict after it.

        A result for a target not in the set is ignored: after a reload removes a target,
        results already in flight for it still arrive, and they are no one's business.
        """
        target = self._targets.get(result.target)
        if target is not None:
            before = target.state
            target.record(result.ok, result.rtt, self.rise, self.fall)
            if target.state is not before:
                self._verdict = None
        return self.verdict

    def reset(self) -> None:
        """Forget every target's state (not its counters): the path must prove itself again.

        The member calls this when its carrier changes: replies seen before the link went
        down (or before it came back) say nothing about the path behind it now, e.g. a
        switch port still in STP listening/learning after the link returns.
        """
        for target in self._targets.values():
            target.reset()
        self._verdict = None

    @property
    def verdict(self) -> PathVerdict:
        """The combined verdict; kept until a target's state changes (most results, at 10 ms
        probes hundreds a second, change none)."""
        if self._verdict is None:
            self._verdict = self._combine()
        return self._verdict

    def _combine(self) -> PathVerdict:
        up = down = unknown = 0
        for target in self._targets.values():
            if target.state is TargetState.UP:
                up += 1
            elif target.state is TargetState.DOWN:
                down += 1
            else:
                unknown += 1
        total = up + down + unknown
        needed = self.combine.needed(total)
        return PathVerdict(total == 0 or up >= needed, self.combine, up, down, unknown, needed)

    def health(self) -> tuple[TargetHealth, ...]:
        """Per-target snapshots, in configuration order."""
        return tuple(
            TargetHealth(name, t.state, t.streak, t.streak_ok, t.last_rtt, t.results, t.lost)
            for name, t in self._targets.items()
        )
