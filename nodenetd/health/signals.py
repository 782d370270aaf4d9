"""The inputs of member health: link observations and probe results, as plain values.

Event sources (rtnetlink for carrier and operstate, the probes for reachability) turn what
they see into these immutable records; the state machines in this package consume only
these. That keeps the health logic free of sockets and of the kernel, and lets a test replay
any history, to the microsecond, by building the records by hand.

Every record carries ``at``: the *monotonic* time it was observed (see ``clock``), stamped by
the source when the event arrived, not when the state machine got round to it, so queueing
inside the daemon does not shift hold-down or damping arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

__all__ = ["LinkSignal", "OperState", "ProbeResult", "Signal"]


class OperState(IntEnum):
    """RFC 2863 operational state, with the kernel's IF_OPER_* numbering (IFLA_OPERSTATE)."""

    UNKNOWN = 0
    NOTPRESENT = 1
    DOWN = 2
    LOWERLAYERDOWN = 3
    TESTING = 4
    DORMANT = 5
    UP = 6


# UNKNOWN counts as up: many drivers (dummy, tun, some virtual NICs) never set an operstate,
# and the kernel's own documentation (operstates.rst) tells userspace to treat UNKNOWN with
# carrier as usable. DORMANT (e.g. waiting for 802.1X) and TESTING do not pass traffic.
_PASSES_TRAFFIC = frozenset({OperState.UP, OperState.UNKNOWN})


@dataclass(frozen=True, slots=True)
class LinkSignal:
    """What rtnetlink said about a member's link: carrier (IFLA_CARRIER) and operstate."""

    member: str
    carrier: bool
    operstate: OperState
    at: float

    @property
    def up(self) -> bool:
        """Whether the link can pass traffic: carrier present and operstate UP (or UNKNOWN)."""
        return self.carrier and self.operstate in _PASSES_TRAFFIC


def target_key(kind: str, address: str) -> str:
    """A probe target's key: its kind and address, so ICMP and ARP to one address stay
    apart ("icmp:192.0.2.1", "ns:2001:db8::1")."""
    return f"{kind}:{address}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome for one target of one member, as the prober reports it and member
    health counts it. Times are ``time.monotonic()`` seconds.

    A probe that got no reply within its timeout is reported as ``ok=False`` at the moment
    the timeout expired. Probes are the ones that know their timeouts; the health logic
    only counts outcomes, in the order they are fed in. ``at`` is when the outcome happened
    (the reply's kernel receive time, the deadline that passed, the failed send), not when
    the event loop noticed; ``error`` says why a probe failed (``"timeout"``,
    ``"send: ENETDOWN"``...).
    """

    member: str
    target: str  # target_key(kind, address), e.g. "icmp:192.0.2.1" or "ns:2001:db8::1"
    ok: bool
    rtt: float | None  # seconds; None when there was no reply (or the probe cannot time it)
    at: float
    sent_at: float | None = None
    error: str | None = None

    @property
    def kind(self) -> str:
        return self.target.partition(":")[0]

    @property
    def address(self) -> str:
        return self.target.partition(":")[2]

    def __post_init__(self) -> None:
        if self.rtt is not None:
            if not self.ok:
                raise ValueError(f"{self.member}/{self.target}: a failed probe has no RTT")
            if not math.isfinite(self.rtt) or self.rtt < 0:
                raise ValueError(f"{self.member}/{self.target}: bad RTT {self.rtt!r}")


Signal = LinkSignal | ProbeResult
