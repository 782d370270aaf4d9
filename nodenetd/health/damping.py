"""Flap damping in the style of RFC 2439 (BGP route flap damping), applied to a member.

Why: hysteresis (rise/fall, up/down delays) filters noise *within* one failure, but a link
that fails and recovers cleanly every few seconds passes every such filter and drags the
group through a failover and a failback each time: the "flip-flopping" users of keepalived
and bonding complain about (reference §4.1). None of the anchors has a remedy beyond
``sticky``/``primary_reselect``. Damping remembers the flaps themselves:

- Each flap (the member's health going up -> down) adds ``penalty`` to a figure of merit.
- The figure decays exponentially: it halves every ``half_life`` seconds.
- When it rises above ``suppress``, the member is suppressed (held out of use, whatever its
  health) until the figure has decayed below ``reuse``. Flaps while suppressed still add
  penalty, so a member that keeps flapping stays out.
- The figure is capped at ``ceiling = reuse * 2 ** (max_suppress / half_life)``: the value
  that decays to ``reuse`` in exactly ``max_suppress`` seconds. However long a member flapped,
  it is back in use at most ``max_suppress`` after its last flap.

Defaults (penalty 1000, suppress 2000, reuse 750, half-life 15 s, max-suppress 60 s) keep
the ratios of the long-standing BGP defaults (1000/2000/750, half-life 15 min, max-suppress
60 min = 4 half-lives), with minutes scaled to seconds because link health moves ~60x faster
than BGP convergence. Against the reference's timings (§2.1):

- Detection takes 0.03-0.9 s with nodenetd probes (10-300 ms x 3), ~3.6 s with VRRP, ~4 s
  with teamd's arp_ping; so the shortest possible flap cycle is under a second and even the
  slowest anchor completes ~4 cycles per half-life. Penalty from successive flaps
  therefore accumulates instead of decaying away between them.
- Suppression needs a third flap: two flaps add at most 2000, not *above* it. A cable
  reseat or a switch reboot (link down, up, sometimes down/up again during negotiation) is
  never damped; a member that flaps three times at intervals under ~10 s is.
- A member flapping periodically with a period shorter than the half-life (15 s) is
  suppressed sooner or later (the steady-state figure 1000 / (1 - 2^(-T/15)) exceeds 2000 iff
  T < 15 s); slower periodic failures each cost one failover and one lossless failback.
- After three quick flaps (~3000) the member is out for 30 s of stability (2 half-lives);
  at worst 60 s, well below the 300 s switch MAC ageing that dominates stale-cache outages,
  and short enough that a recovered preferred link is not wasted for long.

Everything is a pure function of the ``now`` values passed in (monotonic seconds), so it is
exact and repeatable; ``next_change`` lets the daemon arm one timer instead of polling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DampingConfig", "DampingStatus", "FlapDamper"]


@dataclass(frozen=True, slots=True)
class DampingConfig:
    penalty: float = 1000.0  # added per flap
    suppress: float = 2000.0  # suppressed when the figure goes above this
    reuse: float = 750.0  # released when the figure decays below this
    half_life: float = 15.0  # seconds
    max_suppress: float = 60.0  # seconds: longest suppression after the last flap

    def __post_init__(self) -> None:
        values = (self.penalty, self.suppress, self.reuse, self.half_life, self.max_suppress)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"damping values must be positive and finite: {self}")
        if self.reuse >= self.suppress:
            raise ValueError(f"reuse {self.reuse} must be below suppress {self.suppress}")
        if self.ceiling <= self.suppress:
            # RFC 2439 §4.2: otherwise the cap would keep the figure from ever suppressing.
            raise ValueError(
                f"max_suppress {self.max_suppress} s is too short: the penalty cap "
                f"{self.ceiling:.0f} would never exceed suppress {self.suppress}")

    @property
    def ceiling(self) -> float:
        """The highest figure of merit: decays to ``reuse`` in exactly ``max_suppress``."""
        return self.reuse * math.exp2(self.max_suppress / self.half_life)


@dataclass(frozen=True, slots=True)
class DampingStatus:
    """A snapshot for status and metrics."""

    penalty: float
    suppressed: bool
    reuse_at: float | None  # monotonic time suppression ends, when suppressed
    flaps: int  # lifetime count


class FlapDamper:
    """The figure of merit of one member.

    The figure is stored as (value, time of last update) and decayed on read, so nothing
    needs to run between flaps. Suppression ends at a time computed once, when the figure
    last changed (``reuse_at``), not by comparing a decayed float with ``reuse``: that makes
    ``suppressed`` and ``next_change`` agree exactly, so a timer armed for ``next_change``
    always finds the change done when it fires.

    Times passed in must not go backwards; an earlier ``now`` is treated as the last one.
    """

    def __init__(self, config: DampingConfig | None = None) -> None:
        self.config = config or DampingConfig()
        self._value = 0.0
        self._at = -math.inf
        self._reuse_at: float | None = None
        self.flaps = 0

    def _clamp(self, now: float) -> float:
        return max(now, self._at)

    def penalty(self, now: float) -> float:
        """The figure of merit at ``now``."""
        if self._value == 0.0:
            return 0.0
        elapsed = self._clamp(now) - self._at
        return self._value * math.exp2(-elapsed / self.config.half_life)

    def suppressed(self, now: float) -> bool:
        return self._reuse_at is not None and self._clamp(now) < self._reuse_at

    def flap(self, now: float) -> bool:
        """Record one flap (up -> down) at ``now``; returns whether the member is suppressed."""
        now = self._clamp(now)
        cfg = self.config
        was_suppressed = self.suppressed(now)
        self._value = min(self.penalty(now) + cfg.penalty, cfg.ceiling)
        self._at = now
        self.flaps += 1
        if was_suppressed or self._value > cfg.suppress:
            self._reuse_at = now + cfg.half_life * math.log2(self._value / cfg.reuse)
        return self.suppressed(now)

    def next_change(self, now: float) -> float | None:
        """When decay alone will change ``suppressed``: the release time, or None.

        Decay only ever releases; suppression starts only at a flap, which the caller sees.
        """
        return self._reuse_at if self.suppressed(now) else None

    def status(self, now: float) -> DampingStatus:
        suppressed = self.suppressed(now)
        return DampingStatus(self.penalty(now), suppressed,
                             self._reuse_at if suppressed else None, self.flaps)
