"""bench/failover's arithmetic: holes in iperf3's sequence numbers, receive silences, path
moves, the windows each event is charged, and the percentiles of the table."""

import math

import pytest

from bench.failover_lab import evaluate, gap_threshold_ms
from bench.failover_stats import (
    SEQ_MOD,
    holes,
    lost_datagrams,
    percentile,
    ratio,
    receive_gap_ms,
    stream_loss,
    summarize,
    switches,
    unwrap,
)

MS = 1_000_000  # ns
RATE = 10_000  # datagrams/s: one every 0.1 ms


def steady(first_seq: int, count: int, start_ns: int = 0, spacing_ns: int = 100_000):
    """``count`` datagrams from ``first_seq`` on, one every ``spacing_ns`` from ``start_ns``."""
    seqs = list(range(first_seq, first_seq + count))
    times = [start_ns + i * spacing_ns for i in range(count)]
    return times, seqs


# -- lost datagrams -------------------------------------------------------------------------


def test_a_clean_stream_loses_nothing_however_it_starts_and_ends():
    times, seqs = steady(17, 1000)  # iperf3's first sequence number need not be 0 or 1

    assert lost_datagrams(times, seqs) == 0
    assert holes(times, seqs) == []


def test_a_hole_is_counted_and_placed_at_the_datagram_before_it():
    t1, s1 = steady(1, 100)
    t2, s2 = steady(151, 100, start_ns=t1[-1] + 51 * 100_000)  # 50 datagrams never came

    assert holes(t1 + t2, s1 + s2) == [(t1[-1], 50)]
    assert lost_datagrams(t1 + t2, s1 + s2) == 50
    assert lost_datagrams(t1 + t2, s1 + s2, window=(0, t1[-1] - 1)) == 0  # before the hole
    assert lost_datagrams(t1 + t2, s1 + s2, window=(t1[-1], t1[-1])) == 50


def test_reordered_and_duplicated_datagrams_are_not_loss():
    seqs = [1, 2, 4, 3, 5, 5, 6]
    times = list(range(len(seqs)))

    assert lost_datagrams(times, seqs) == 0


def test_sequence_numbers_wrapping_at_32_bits_are_not_four_billion_losses():
    seqs = [SEQ_MOD - 2, SEQ_MOD - 1, 0, 1, 3]

    assert unwrap(seqs) == [SEQ_MOD - 2, SEQ_MOD - 1, SEQ_MOD, SEQ_MOD + 1, SEQ_MOD + 3]
    assert lost_datagrams(list(range(5)), seqs) == 1


# -- receive silences -----------------------------------------------------------------------


def test_normal_spacing_and_short_hiccups_are_not_silence():
    times, _ = steady(0, 1000)
    times[500:] = [t + 800_000 for t in times[500:]]  # one 0.9 ms hiccup

    assert receive_gap_ms(times, RATE) == (0.0, pytest.approx(0.9))


def test_a_silence_counts_without_the_normal_spacing():
    times, _ = steady(0, 100)
    times += [times[-1] + 25 * MS]  # 25 ms of nothing, then a datagram

    total, longest = receive_gap_ms(times, RATE)

    assert total == pytest.approx(25 - 0.1)
    assert longest == pytest.approx(25)


def test_a_sender_stalled_to_the_end_of_the_stream_counts_to_the_end():
    times, _ = steady(0, 100)  # 10 ms of datagrams, then none, in a 1 s stream

    total, _ = receive_gap_ms(times, RATE, end_ns=1000 * MS)

    assert total == pytest.approx(1000 - times[-1] / MS - 0.1)


def test_only_silences_that_begin_in_the_window_count():
    times, _ = steady(0, 10)
    times += [times[-1] + 5 * MS]  # a silence starting at 0.9 ms
    times += [times[-1] + 7 * MS]  # and one starting at 5.9 ms

    early = receive_gap_ms(times, RATE, window=(0, 2 * MS))
    late = receive_gap_ms(times, RATE, window=(3 * MS, 20 * MS))

    assert early[0] == pytest.approx(5 - 0.1)
    assert late[0] == pytest.approx(7 - 0.1)


def test_the_outage_is_lost_over_rate_or_the_silence_whichever_is_larger():
    # iperf3 catching up after a stall: nothing lost, a 300 ms silence
    times, seqs = steady(0, 100)
    t2, s2 = steady(100, 100, start_ns=times[-1] + 300 * MS, spacing_ns=1000)
    stalled = stream_loss(times + t2, seqs + s2, RATE)
    # a path that drops 200 datagrams while the sender keeps its pace
    times, seqs = steady(0, 600)
    del times[100:300], seqs[100:300]
    dropped = stream_loss(times, seqs, RATE)

    assert (stalled.lost, stalled.outage_ms) == (0, pytest.approx(300 - 0.1))
    assert dropped.lost == 200
    assert dropped.lost_ms == pytest.approx(20)
    assert dropped.outage_ms == pytest.approx(20)  # the silence is the same 20 ms (less 0.1)


def test_the_silence_threshold_follows_pacing_and_rate():
    assert gap_threshold_ms(10_000, 100) == 1.0
    assert gap_threshold_ms(10_000, 1000) == 2.0  # iperf3 sends a burst every 1 ms
    assert gap_threshold_ms(1_000, 100) == 3.0  # three datagram spacings


# -- path moves and the windows of one stream ------------------------------------------------


def test_a_move_is_where_the_new_path_first_carried_a_settled_run():
    times = list(range(0, 100))
    paths = [0] * 50 + [1, 0, 1] + [1] * 47  # some interleaving while the route moves

    assert switches(times, paths) == [(52, 0, 1)]
    assert switches(times, [0] * 100) == []


def raw_stream(cut_ms: float, mend_ms: float, segments):
    """A stream at RATE over segments of (path, from_ms, to_ms): datagrams with consecutive
    sequence numbers whatever their path (gaps in time are losses unless a segment is
    marked 'stall', then the sequence numbers carry on)."""
    times, seqs, paths = [], [], []
    seq = 0
    last_end = 0.0
    for path, start, end, *stall in segments:
        if not stall:
            seq += round((start - last_end) * 10)  # what the silence cost at 10/ms
        for i in range(round((end - start) * 10)):
            times.append(round((start + i * 0.1) * MS))
            seqs.append(seq)
            paths.append(path)
            seq += 1
        last_end = end
    iperf = {"end": {"sum": {"packets": seq, "seconds": last_end / 1000}}}
    return {"seen": {"t": times, "seq": seqs, "path": paths, "ifaces": ["ua", "ub"]},
            "iperf": iperf, "events": {"cut": round(cut_ms * MS), "restore": round(mend_ms * MS)}}


def test_a_failover_and_its_failback_are_charged_separately():
    # cut at 300 ms; traffic back on ub 30 ms later; mend at 800; failback at 2800 losing 5 ms
    raw = raw_stream(300, 800, [(0, 0, 300), (1, 330, 2800), (0, 2805, 3500)])

    over, back = evaluate(raw, RATE, "ua")

    assert (over.kind, back.kind) == ("failover", "failback")
    assert over.lost == 300
    assert over.outage_ms == pytest.approx(30, abs=0.2)
    assert over.moved_ms == pytest.approx(30)
    assert back.lost == 50
    assert back.outage_ms == pytest.approx(5, abs=0.2)
    assert back.moved_ms == pytest.approx(2005)
    assert over.valid and back.valid


def test_a_system_that_never_fails_over_is_charged_the_whole_cut():
    raw = raw_stream(300, 800, [(0, 0, 300), (0, 800, 1500)])

    over, back = evaluate(raw, RATE, "ua")

    assert over.outage_ms == pytest.approx(500, abs=0.2)
    assert over.moved_ms is None
    assert not back.valid and back.note == "never failed over"


def test_a_failback_missing_from_the_stream_makes_the_sample_invalid():
    raw = raw_stream(300, 800, [(0, 0, 300), (1, 310, 1500)])

    _, back = evaluate(raw, RATE, "ua")

    assert not back.valid
    assert "never moved back to ua" in back.note


def test_a_stall_before_the_failback_shows_though_nothing_is_lost():
    # the kernel moves traffic back at the mend into an unresolved neighbour: 1 s silence
    raw = raw_stream(300, 800, [(0, 0, 300), (1, 300.5, 800), (0, 1800, 2500, "stall")])

    over, back = evaluate(raw, RATE, "ua")

    assert back.lost == 0
    assert back.outage_ms == pytest.approx(1000, abs=0.2)
    assert over.outage_ms < 1


# -- the table's statistics -----------------------------------------------------------------


def test_percentiles_are_nearest_rank_so_p99_of_thirty_is_the_maximum():
    values = [float(v) for v in range(1, 31)]

    assert percentile(values, 50) == 15.0  # index round(14.5) = 14: the 15th
    assert percentile(values, 99) == 30.0
    assert summarize(values).max == 30.0
    assert summarize(values).n == 30


def test_empty_summaries_and_zero_outages_stay_printable():
    assert math.isnan(summarize([]).p99)
    assert math.isnan(percentile([], 50))
    assert ratio(300.0, 0.0) == pytest.approx(3000.0)  # floored at 0.1 ms
    assert ratio(300.0, 30.0) == pytest.approx(10.0)
    assert math.isnan(ratio(math.nan, 1.0))
