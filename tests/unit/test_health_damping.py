"""Flap damping (RFC 2439 style): penalty per flap, exponential decay, suppress/reuse
hysteresis, the max-suppress cap, and a next_change the daemon can arm one timer on."""

import math

import pytest

from nodenetd.health.clock import ManualClock
from nodenetd.health.damping import DampingConfig, FlapDamper

CFG = DampingConfig()  # penalty 1000, suppress 2000, reuse 750, half-life 15 s, max 60 s


def exact(value):
    return pytest.approx(value, rel=1e-12)


def test_defaults_are_the_bgp_ratios_in_seconds():
    assert (CFG.penalty, CFG.suppress, CFG.reuse) == (1000, 2000, 750)
    assert (CFG.half_life, CFG.max_suppress) == (15, 60)
    assert CFG.ceiling == exact(750 * 2**4)  # max_suppress is 4 half-lives


def test_a_member_that_never_flapped_has_no_penalty_and_no_timer():
    damper, clock = FlapDamper(), ManualClock()
    assert damper.penalty(clock()) == 0
    assert not damper.suppressed(clock())
    assert damper.next_change(clock()) is None


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_flaps_at_once_add_k_penalties(k):
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(k):
        damper.flap(clock())
    assert damper.penalty(clock()) == exact(1000 * k)
    assert damper.flaps == k


def test_the_penalty_halves_every_half_life_exactly():
    damper, clock = FlapDamper(), ManualClock()
    damper.flap(clock())
    assert damper.penalty(clock.advance(15)) == exact(500)
    assert damper.penalty(clock.advance(15)) == exact(250)
    assert damper.penalty(clock() + 7.5) == exact(250 / math.sqrt(2))


def test_penalties_add_on_top_of_the_decayed_figure():
    damper, clock = FlapDamper(), ManualClock()
    damper.flap(clock())
    clock.advance(15)
    damper.flap(clock())
    assert damper.penalty(clock()) == exact(1500)


def test_two_flaps_never_suppress_even_at_the_same_instant():
    """A cable reseat or a switch reboot is not damped: 2000 is not *above* suppress."""
    damper, clock = FlapDamper(), ManualClock()
    assert not damper.flap(clock())
    assert not damper.flap(clock())
    assert damper.penalty(clock()) == exact(2000)
    assert not damper.suppressed(clock())


def test_a_third_quick_flap_suppresses_until_the_figure_decays_to_reuse():
    damper, clock = FlapDamper(), ManualClock()
    start = clock()
    damper.flap(clock())
    damper.flap(clock.advance(1))
    assert damper.flap(clock.advance(1))
    figure = 1000 * (2 ** (-2 / 15) + 2 ** (-1 / 15) + 1)
    assert damper.penalty(clock()) == exact(figure)
    release = start + 2 + 15 * math.log2(figure / 750)
    assert damper.next_change(clock()) == exact(release)
    assert damper.suppressed(release - 1e-6)
    assert not damper.suppressed(release)
    assert damper.penalty(release) == exact(750)
    assert damper.next_change(release) is None


def test_suppression_holds_while_the_figure_is_between_reuse_and_suppress():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(3):
        damper.flap(clock())
    clock.advance(15)  # 3000 -> 1500: below suppress, above reuse
    assert damper.penalty(clock()) == exact(1500)
    assert damper.suppressed(clock())


def test_three_flaps_at_once_hold_the_member_out_for_two_half_lives():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(3):
        damper.flap(clock())
    assert damper.next_change(clock()) == exact(clock() + 30)  # 3000 -> 750


def test_a_flap_while_suppressed_adds_penalty_and_pushes_release_back():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(3):
        damper.flap(clock())
    clock.advance(10)
    damper.flap(clock())
    figure = 3000 * 2 ** (-10 / 15) + 1000
    assert damper.penalty(clock()) == exact(figure)
    assert damper.next_change(clock()) == exact(clock() + 15 * math.log2(figure / 750))


def test_the_figure_is_capped_so_release_is_at_most_max_suppress_after_the_last_flap():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(100):
        damper.flap(clock.advance(0.1))
    last = clock()
    assert damper.penalty(last) == exact(CFG.ceiling)
    assert damper.next_change(last) == exact(last + 60)
    assert damper.suppressed(last + 59.999)
    assert not damper.suppressed(last + 60)


def test_after_release_a_single_flap_does_not_suppress_again():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(3):
        damper.flap(clock())
    clock.set(damper.next_change(clock()))
    assert not damper.flap(clock())  # 750 + 1000 = 1750
    assert damper.flap(clock.advance(1))  # but a second one soon after does


def test_periodic_flapping_faster_than_the_half_life_is_eventually_suppressed():
    def suppressed_ever(period, cycles=50):
        damper, clock = FlapDamper(), ManualClock()
        return any(damper.flap(clock.advance(period)) for _ in range(cycles))

    assert suppressed_ever(10.0)
    assert suppressed_ever(14.0)
    assert not suppressed_ever(16.0)  # steady state 1000 / (1 - 2^(-16/15)) < 2000


def test_the_same_history_gives_the_same_answers():
    def run():
        damper, clock = FlapDamper(), ManualClock()
        for gap in (0.3, 0.7, 1.1, 0.2):
            damper.flap(clock.advance(gap))
        return damper.status(clock.advance(4.2))

    assert run() == run()


def test_an_earlier_time_counts_as_the_last_one_seen():
    damper, clock = FlapDamper(), ManualClock()
    damper.flap(clock())
    assert damper.penalty(clock() - 5) == exact(1000)  # never grows backwards


def test_status_is_a_snapshot_for_metrics():
    damper, clock = FlapDamper(), ManualClock()
    for _ in range(3):
        damper.flap(clock())
    status = damper.status(clock())
    assert status.suppressed
    assert status.penalty == exact(3000)
    assert status.reuse_at == exact(clock() + 30)
    assert status.flaps == 3
    assert damper.status(clock() + 30).reuse_at is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reuse": 2000}, "reuse 2000 must be below suppress"),
        ({"max_suppress": 15}, "too short"),  # cap 1500 could never exceed 2000
        ({"half_life": 0}, "positive"),
        ({"penalty": float("inf")}, "positive"),
    ],
)
def test_configs_that_could_not_work_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DampingConfig(**kwargs)
