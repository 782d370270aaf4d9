"""Probe targets: rise/fall counting per target, then any / all / quorum into a path verdict."""

import pytest

from nodenetd.health.signals import LinkSignal, OperState, ProbeResult
from nodenetd.health.targets import ALL, ANY, Combine, TargetSet, TargetState

T = 1000.0


def ok(target, rtt=0.001, member="eth0"):
    return ProbeResult(member, target, True, rtt, T)


def lost(target, member="eth0"):
    return ProbeResult(member, target, False, None, T)


def feed(targets, *results):
    verdict = targets.verdict
    for result in results:
        verdict = targets.record(result)
    return verdict


def state(targets, name):
    return {t.name: t.state for t in targets.health()}[name]


def bring_up(targets, *names):
    for name in names:
        feed(targets, *[ok(name)] * targets.rise)


# -- rise / fall ------------------------------------------------------------------------------


def test_a_target_is_unknown_until_rise_consecutive_successes():
    targets = TargetSet(["a"], rise=3, fall=3)
    assert state(targets, "a") is TargetState.UNKNOWN
    assert not targets.verdict.up  # an unproven path is not trusted
    feed(targets, ok("a"), ok("a"))
    assert state(targets, "a") is TargetState.UNKNOWN
    assert feed(targets, ok("a")).up
    assert state(targets, "a") is TargetState.UP


def test_a_failure_restarts_the_rise_count():
    targets = TargetSet(["a"], rise=3, fall=3)
    feed(targets, ok("a"), ok("a"), lost("a"), ok("a"), ok("a"))
    assert state(targets, "a") is TargetState.UNKNOWN
    feed(targets, ok("a"))
    assert state(targets, "a") is TargetState.UP


def test_an_up_target_goes_down_only_after_fall_consecutive_failures():
    targets = TargetSet(["a"], rise=2, fall=3)
    bring_up(targets, "a")
    assert feed(targets, lost("a"), lost("a")).up  # two misses are noise
    feed(targets, ok("a"), lost("a"), lost("a"))  # a reply in between resets the count
    assert state(targets, "a") is TargetState.UP
    assert not feed(targets, lost("a")).up
    assert state(targets, "a") is TargetState.DOWN


def test_a_down_target_comes_back_after_rise_successes():
    targets = TargetSet(["a"], rise=2, fall=1)
    bring_up(targets, "a")
    assert not feed(targets, lost("a")).up
    assert not feed(targets, ok("a")).up
    assert feed(targets, ok("a")).up


def test_unknown_target_leaves_by_whichever_streak_completes_first():
    targets = TargetSet(["a"], rise=3, fall=2)
    feed(targets, lost("a"), lost("a"))
    assert state(targets, "a") is TargetState.DOWN


def test_rise_and_fall_of_one_make_every_result_count():
    targets = TargetSet(["a"], rise=1, fall=1)
    assert feed(targets, ok("a")).up
    assert not feed(targets, lost("a")).up
    assert feed(targets, ok("a")).up


def test_streaks_are_per_target_so_interleaved_results_do_not_reset_each_other():
    targets = TargetSet(["a", "b"], combine=ALL, rise=3, fall=3)
    feed(targets, ok("a"), lost("b"), ok("a"), lost("b"), ok("a"), lost("b"))
    assert state(targets, "a") is TargetState.UP
    assert state(targets, "b") is TargetState.DOWN


# -- any / all / quorum -----------------------------------------------------------------------


def test_any_keeps_the_path_up_while_one_target_answers():
    targets = TargetSet(["a", "b"], combine=ANY, rise=1, fall=1)
    bring_up(targets, "a", "b")
    verdict = feed(targets, lost("a"))
    assert verdict.up
    assert (verdict.up_count, verdict.down_count, verdict.needed) == (1, 1, 1)
    assert not feed(targets, lost("b")).up


def test_all_loses_the_path_when_any_one_target_is_lost():
    targets = TargetSet(["a", "b", "c"], combine=ALL, rise=1, fall=1)
    bring_up(targets, "a", "b", "c")
    assert targets.verdict.up
    verdict = feed(targets, lost("b"))
    assert not verdict.up
    assert str(verdict) == "2 of 3 targets up, need 3 (all)"


def test_quorum_needs_n_targets_up():
    targets = TargetSet(["a", "b", "c"], combine=Combine.quorum(2), rise=1, fall=1)
    bring_up(targets, "a")
    assert not targets.verdict.up  # 1 up, 2 unknown
    assert str(targets.verdict) == "1 of 3 targets up, need 2 (quorum: 2), 2 not yet known"
    bring_up(targets, "b")
    assert targets.verdict.up
    bring_up(targets, "c")
    assert feed(targets, lost("a")).up  # 2 of 3 still a quorum
    assert not feed(targets, lost("c")).up  # 1 of 3 is not


def test_partial_failure_under_each_combination():
    """One of three targets lost: only `all` (and a quorum of 3) call the path down."""
    verdicts = {}
    for combine in (ANY, ALL, Combine.quorum(2), Combine.quorum(3)):
        targets = TargetSet(["a", "b", "c"], combine=combine, rise=1, fall=2)
        bring_up(targets, "a", "b", "c")
        verdicts[str(combine)] = feed(targets, lost("c"), lost("c")).up
    assert verdicts == {"any": True, "all": False, "quorum: 2": True, "quorum: 3": False}


def test_a_member_without_targets_has_an_up_path():
    verdict = TargetSet([]).verdict
    assert verdict.up
    assert str(verdict) == "no probe targets"


def test_a_quorum_larger_than_the_targets_is_refused():
    with pytest.raises(ValueError, match="quorum 3 cannot be met by 2"):
        TargetSet(["a", "b"], combine=Combine.quorum(3))


@pytest.mark.parametrize("bad", [{"rise": 0}, {"fall": 0}])
def test_rise_and_fall_must_be_at_least_one(bad):
    with pytest.raises(ValueError):
        TargetSet(["a"], **bad)


def test_duplicate_targets_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        TargetSet(["a", "a"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("any", ANY), ("all", ALL), ("quorum: 2", Combine.quorum(2)), ({"quorum": 3},
                                                                     Combine.quorum(3))],
)
def test_combine_parses_its_config_forms(text, expected):
    assert Combine.parse(text) == expected


@pytest.mark.parametrize("bad", ["most", "quorum", "quorum: 0", "any: 1", {"quorum": "x"}, 2])
def test_combine_rejects_anything_else(bad):
    with pytest.raises(ValueError):
        Combine.parse(bad)


# -- reset, stray results, counters -----------------------------------------------------------


def test_reset_makes_the_path_prove_itself_again_but_keeps_the_counters():
    targets = TargetSet(["a"], rise=2, fall=2)
    bring_up(targets, "a")
    targets.reset()
    assert not targets.verdict.up
    assert state(targets, "a") is TargetState.UNKNOWN
    assert targets.health()[0].results == 2
    assert not feed(targets, ok("a")).up
    assert feed(targets, ok("a")).up


def test_results_for_targets_not_in_the_set_are_ignored():
    targets = TargetSet(["a"], rise=1, fall=1)
    bring_up(targets, "a")
    assert feed(targets, lost("removed-by-reload")).up
    assert targets.health()[0].results == 1


def test_health_reports_last_rtt_and_loss():
    targets = TargetSet(["a"], rise=1, fall=3)
    feed(targets, ok("a", rtt=0.002), lost("a"), ok("a", rtt=0.004), lost("a"))
    (health,) = targets.health()
    assert health.last_rtt == 0.004
    assert (health.results, health.lost) == (4, 2)
    assert (health.streak, health.streak_ok) == (1, False)


# -- the signal records -----------------------------------------------------------------------


def test_a_failed_probe_cannot_carry_an_rtt():
    with pytest.raises(ValueError, match="no RTT"):
        ProbeResult("eth0", "a", False, 0.01, T)


@pytest.mark.parametrize("rtt", [-0.001, float("nan"), float("inf")])
def test_an_rtt_must_be_a_finite_non_negative_number(rtt):
    with pytest.raises(ValueError, match="bad RTT"):
        ProbeResult("eth0", "a", True, rtt, T)


@pytest.mark.parametrize(
    ("carrier", "operstate", "up"),
    [
        (True, OperState.UP, True),
        (True, OperState.UNKNOWN, True),  # drivers that never set operstate
        (True, OperState.DORMANT, False),  # e.g. 802.1X not yet authorised
        (True, OperState.LOWERLAYERDOWN, False),
        (False, OperState.UP, False),
    ],
)
def test_a_link_passes_traffic_with_carrier_and_operstate_up_or_unknown(carrier, operstate, up):
    assert LinkSignal("eth0", carrier, operstate, T).up is up
