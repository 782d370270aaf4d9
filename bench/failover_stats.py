"""bench/failover's arithmetic: what one cut cost a stream, and the summary over many cuts.

Pure functions, no I/O: tests/unit/test_bench_failover.py pins them.

One stream is an iperf3 UDP stream of small datagrams at a constant rate, watched on the
server side by bench/failover_sniff (one kernel receive timestamp and iperf3 sequence number
per datagram). A cut costs the stream in two ways, and the outage is the larger of them:

- **lost**: sequence numbers that never arrived (iperf3's own ``lost_packets`` counts the
  same holes), divided by the rate. Only holes between datagrams that did arrive count, so
  the stream's start and end never do.
- **gap**: time the receiver went without datagrams beyond their normal spacing. It is what
  an application sees when the sender *stalls* instead of losing: on carrier loss the kernel
  queues the node's datagrams for a neighbour that cannot answer, the socket's send buffer
  fills and ``send()`` blocks until the queue is dropped (up to 3 s later); iperf3 then
  catches up in a burst, so it reports no loss at all.

A stream can hold two events, the failover at the cut and the failback after the mend: each
is charged what happens in its own time window (holes located by the datagram before them,
silences by their start). Over a stream without any cut both are near zero (a loaded host
adds a little gap); the bench measures such control streams in the same run and shows them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

SEQ_MOD = 1 << 32  # iperf3's UDP sequence numbers are 32 bit unless --udp-counters-64bit


@dataclass(frozen=True)
class StreamLoss:
    """What one stream lost."""

    received: int  # datagrams the receiver saw (duplicates included once)
    lost: int  # sequence numbers missing between the first and the last received
    gap_ms: float  # receive silence beyond the normal spacing, summed over the stream
    longest_gap_ms: float  # the longest single silence (the normal spacing included)
    rate: float  # datagrams per second the outage is divided by

    @property
    def lost_ms(self) -> float:
        return 1000.0 * self.lost / self.rate if self.rate > 0 else math.nan

    @property
    def outage_ms(self) -> float:
        """The larger of lost ÷ rate and the receive gap."""
        return max(self.lost_ms, self.gap_ms)


def unwrap(seqs: Sequence[int], modulo: int = SEQ_MOD) -> list[int]:
    """Sequence numbers made monotonic across counter wrap-around (order kept)."""
    out: list[int] = []
    offset, previous = 0, None
    half = modulo // 2
    for seq in seqs:
        if previous is not None and seq - previous < -half:
            offset += modulo
        elif previous is not None and seq - previous > half:
            offset -= modulo  # a late datagram from before a wrap
        out.append(seq + offset)
        previous = seq
    return out


def holes(arrivals_ns: Sequence[int], seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of sequence numbers that never arrived: [(at_ns, count)], ``at_ns`` being the
    arrival of the datagram just before the run (where in the stream the loss happened).

    Reordered and duplicated datagrams are not loss; what was never sent after the last one
    received (the stream's end) or before the first (its start) is not counted either."""
    by_seq: dict[int, int] = {}
    for seq, at in zip(unwrap(seqs), arrivals_ns, strict=True):
        by_seq.setdefault(seq, at)
    ordered = sorted(by_seq.items())
    return [(at, later - seq - 1)
            for (seq, at), (later, _) in itertools.pairwise(ordered)
            if later - seq > 1]


def lost_datagrams(arrivals_ns: Sequence[int], seqs: Sequence[int],
                   window: tuple[int, int] | None = None) -> int:
    """Datagrams lost in the stream, or in the part of it that ``window`` (start_ns, end_ns)
    covers."""
    return sum(count for at, count in holes(arrivals_ns, seqs)
               if window is None or window[0] <= at <= window[1])


def receive_gap_ms(
    arrivals_ns: Sequence[int],
    rate: float,
    *,
    threshold_ms: float = 1.0,
    end_ns: int | None = None,
    window: tuple[int, int] | None = None,
) -> tuple[float, float]:
    """(summed, longest) receive silence in ms.

    Every silence between consecutive arrivals longer than ``threshold_ms`` counts with the
    normal spacing (1/rate) taken off; shorter ones are the sender's pacing and scheduling.
    ``end_ns``, when known, is when the stream should have ended: a silence from the last
    arrival to it counts too (a sender stalled until the end sends nothing more). With a
    ``window`` (start_ns, end_ns) only silences that begin inside it count: the cut's own,
    not a scheduling hiccup elsewhere in the stream."""
    if not arrivals_ns:
        return 0.0, 0.0
    spacing_ms = 1000.0 / rate if rate > 0 else 0.0
    times = sorted(arrivals_ns)
    if end_ns is not None and end_ns > times[-1]:
        times.append(end_ns)
    total = longest = 0.0
    for earlier, later in itertools.pairwise(times):
        if window is not None and not window[0] <= earlier <= window[1]:
            continue
        silence = (later - earlier) / 1e6
        longest = max(longest, silence)
        if silence > threshold_ms:
            total += silence - spacing_ms
    return total, longest


def switches(arrivals_ns: Sequence[int], paths: Sequence[int], settle: int = 20) -> list[tuple]:
    """Where the stream moved from one path (interface) to another: [(at_ns, from, to)].

    A move counts once the new path has carried ``settle`` datagrams in a row, so a few
    datagrams interleaving during a move (both paths briefly carrying traffic) make one
    move, not many; ``at_ns`` is the first arrival on the new path."""
    moves: list[tuple] = []
    order = sorted(range(len(arrivals_ns)), key=lambda i: arrivals_ns[i])
    current = None
    run_path, run_start, run_len = None, 0, 0
    for i in order:
        path = paths[i]
        if path == run_path:
            run_len += 1
        else:
            run_path, run_start, run_len = path, arrivals_ns[i], 1
        if run_len == settle and path != current:
            if current is not None:
                moves.append((run_start, current, path))
            current = path
    return moves


def stream_loss(
    arrivals_ns: Sequence[int],
    seqs: Sequence[int],
    rate: float,
    *,
    threshold_ms: float = 1.0,
    end_ns: int | None = None,
    window: tuple[int, int] | None = None,
    lost_window: tuple[int, int] | None = None,
) -> StreamLoss:
    """What the stream lost: holes located in ``lost_window`` (default ``window``), receive
    silences beginning in ``window``; None means the whole stream."""
    gap, longest = receive_gap_ms(
        arrivals_ns, rate, threshold_ms=threshold_ms, end_ns=end_ns, window=window
    )
    return StreamLoss(
        received=len(set(seqs)),
        lost=lost_datagrams(arrivals_ns, seqs, lost_window or window),
        gap_ms=gap,
        longest_gap_ms=longest,
        rate=rate,
    )


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile on the sorted values (bench/daemon's definition): with 30
    cuts, p99 is the largest value, p50 the 15th."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Summary:
    n: int
    p50: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        return Summary(0, math.nan, math.nan, math.nan)
    return Summary(len(values), percentile(values, 50), percentile(values, 99), max(values))


def ratio(baseline: float, ours: float, floor: float = 0.1) -> float:
    """How many times smaller ``ours`` is than ``baseline``; ``ours`` is floored (a
    measurement resolution) so that a zero outage gives a finite, conservative ratio."""
    if math.isnan(baseline) or math.isnan(ours):
        return math.nan
    return baseline / max(ours, floor)


def datagram_bitrate(rate: float, length: int) -> int:
    """iperf3's -b (payload bits per second) for ``rate`` datagrams/s of ``length`` bytes."""
    return round(rate * length * 8)
