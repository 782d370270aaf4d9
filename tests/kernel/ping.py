"""``ping`` as a witness: what a path's delay and loss really are, measured from a namespace."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.lab.netns import Netns


@dataclass(frozen=True)
class PingStats:
    transmitted: int
    received: int
    rtt_min_ms: float | None
    rtt_avg_ms: float | None

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.transmitted - self.received) / self.transmitted


def ping(ns: Netns, addr: str, *, count: int, interval: float, wait_s: int = 2) -> PingStats:
    """``ping -q`` from inside NS; the summary lines parsed (ping exits 1 on any loss)."""
    timeout = count * interval + wait_s + 30
    out = ns.run(
        "ping", "-q", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait_s), addr,
        check=False, timeout=timeout,
    ).stdout  # fmt: skip
    counts = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert counts, f"unexpected ping output:\n{out}"
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", out)
    return PingStats(
        transmitted=int(counts[1]),
        received=int(counts[2]),
        rtt_min_ms=float(rtt[1]) if rtt else None,
        rtt_avg_ms=float(rtt[2]) if rtt else None,
    )
