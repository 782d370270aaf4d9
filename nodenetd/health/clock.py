"""The one source of time for member health: a monotonic clock, injected.

Every health computation (rise/fall, up/down delays, damping decay, preempt hold-down,
manual-switch expiry) is a function of explicit ``now`` arguments and of the ``at`` stamps
that signals carry. Nothing in ``nodenetd.health`` reads a clock or sleeps on its own. So:

- Wall-clock steps (NTP, an operator's ``date -s``) cannot shorten a hold-down or release a
  damped member early: the daemon passes ``time.monotonic()``, which never jumps.
- Tests and simulations pass a :class:`ManualClock` and run ten seconds of flapping in
  microseconds, deterministically.

The daemon asks each state machine for its next deadline and arms one timer; it never polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "monotonic"]

Clock = Callable[[], float]
"""Seconds on a monotonic timeline. Only differences are meaningful."""

monotonic: Clock = time.monotonic
"""The production clock. Not ``time.time``: wall time jumps."""


class ManualClock:
    """A clock that moves only when told to; for tests and offline simulations.

    It refuses to run backwards, because nothing downstream is written for a monotonic clock
    that goes back, and a test that did so would test nothing real.
    """

    def __init__(self, start: float = 1000.0) -> None:
        # Not 0: real monotonic clocks start at an arbitrary offset, and code that silently
        # treats 0.0 as "never" should fail a test rather than pass by accident.
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self._now += seconds
        return self._now

    def set(self, when: float) -> float:
        """Jump forward to ``when`` (>= now); returns it."""
        if when < self._now:
            raise ValueError(f"a monotonic clock cannot go back ({when} < {self._now})")
        self._now = float(when)
        return self._now
