"""The member state machine: link + probe targets + up/down delays + damping -> usable, with
a cause and a reason for every transition. Time comes only from a manual clock."""

import pytest

from nodenetd.health.clock import ManualClock
from nodenetd.health.damping import DampingConfig
from nodenetd.health.member import Cause, MemberConfig, MemberHealth, Standing
from nodenetd.health.signals import LinkSignal, OperState, ProbeResult
from nodenetd.health.targets import ALL


class Rig:
    """One member, a manual clock, and every transition it reported."""

    def __init__(self, **config):
        self.clock = ManualClock()
        self.member = MemberHealth(MemberConfig("eth0", **config))
        self.log = []

    def _take(self, transitions):
        self.log.extend(transitions)
        return transitions

    def link(self, up=True, operstate=OperState.UP):
        return self._take(self.member.observe(
            LinkSignal("eth0", up, operstate if up else OperState.DOWN, self.clock())))

    def probe(self, target, ok):
        return self._take(self.member.observe(
            ProbeResult("eth0", target, ok, 0.001 if ok else None, self.clock())))

    def probes(self, ok, times=1, targets=None):
        for _ in range(times):
            for target in targets or self.member.config.targets:
                self.probe(target, ok)

    def tick(self):
        return self._take(self.member.tick(self.clock()))

    def at(self, seconds):
        """Advance the clock and deliver due timers, as the daemon's loop would."""
        self.clock.advance(seconds)
        return self.tick()

    @property
    def standing(self):
        return self.member.standing

    def usable_changes(self):
        return sum(t.usable_changed for t in self.log)


# -- link only --------------------------------------------------------------------------------


def test_a_member_starts_down_and_untrusted():
    rig = Rig()
    assert rig.standing is Standing.DOWN
    assert not rig.member.usable
    assert rig.member.next_deadline() is None
    assert rig.member.status(rig.clock()).link_up is None


def test_link_up_makes_a_member_without_targets_usable_at_once():
    rig = Rig()
    (t,) = rig.link(up=True)
    assert rig.member.usable
    assert (t.previous, t.standing, t.cause) == (Standing.DOWN, Standing.UP, Cause.RECOVERED)
    assert t.reason == "healthy: link up, no probe targets"
    assert t.at == rig.clock()


def test_carrier_loss_is_immediate_even_with_a_down_delay():
    rig = Rig(down_delay=5.0)
    rig.link(up=True)
    (t,) = rig.link(up=False)
    assert t.standing is Standing.DOWN
    assert (t.cause, t.reason) == (Cause.CARRIER, "carrier lost")


def test_an_operstate_that_passes_no_traffic_counts_as_link_down():
    rig = Rig()
    rig.link(up=True)
    (t,) = rig.link(up=True, operstate=OperState.DORMANT)
    assert t.standing is Standing.DOWN
    assert (t.cause, t.reason) == (Cause.CARRIER, "operstate DORMANT")


def test_repeating_the_same_state_reports_nothing():
    rig = Rig()
    rig.link(up=True)
    assert rig.link(up=True) == []
    assert rig.at(100) == []


def test_signals_for_another_member_are_a_wiring_error():
    member = MemberHealth(MemberConfig("eth0"))
    with pytest.raises(ValueError, match="eth1"):
        member.observe(LinkSignal("eth1", True, OperState.UP, 0.0))


# -- probe targets ----------------------------------------------------------------------------


def test_with_targets_the_path_must_prove_itself_rise_times_after_link_up():
    rig = Rig(targets=("gw",), rise=3, fall=3)
    assert rig.link(up=True) == []
    rig.probes(ok=True, times=2)
    assert rig.standing is Standing.DOWN
    (t,) = rig.probe("gw", True)
    assert t.standing is Standing.UP
    assert t.reason == "healthy: link up, 1 of 1 targets up, need 1 (any)"


def test_a_gray_failure_takes_the_member_down_after_fall_misses_with_carrier_up():
    rig = Rig(targets=("gw",), rise=1, fall=3)
    rig.link(up=True)
    rig.probes(ok=True)
    rig.probes(ok=False, times=2)
    assert rig.member.usable
    (t,) = rig.probe("gw", False)
    assert t.standing is Standing.DOWN
    assert t.cause is Cause.PROBE_TARGETS_LOST
    assert t.reason == "probe targets lost: 0 of 1 targets up, need 1 (any)"


def test_all_targets_policy_fails_the_member_on_a_partial_failure():
    rig = Rig(targets=("a", "b"), combine=ALL,
              rise=1, fall=1)
    rig.link(up=True)
    rig.probes(ok=True)
    assert rig.member.usable
    (t,) = rig.probe("b", False)
    assert t.cause is Cause.PROBE_TARGETS_LOST
    assert "1 of 2 targets up, need 2 (all)" in t.reason


def test_a_carrier_change_discards_path_evidence():
    rig = Rig(targets=("gw",), rise=2, fall=2)
    rig.link(up=True)
    rig.probes(ok=True, times=2)
    assert rig.member.usable
    rig.link(up=False)
    assert rig.link(up=True) == []  # replies from before say nothing about the path now
    rig.probes(ok=True)
    assert rig.standing is Standing.DOWN
    rig.probes(ok=True)
    assert rig.member.usable


# -- up / down delays -------------------------------------------------------------------------


def test_up_delay_holds_a_healthy_member_back_then_releases_it_on_the_timer():
    rig = Rig(up_delay=2.0)
    start = rig.clock()
    (t,) = rig.link(up=True)
    assert (t.standing, t.cause) == (Standing.RISING, Cause.HOLD_DOWN)
    assert t.reason == "healthy: link up, no probe targets; usable after up_delay 2 s"
    assert rig.member.next_deadline() == start + 2.0
    assert rig.at(1.999) == []
    (t,) = rig.at(0.001)
    assert (t.standing, t.cause, t.at) == (Standing.UP, Cause.RECOVERED, start + 2.0)
    assert t.reason == "healthy for up_delay 2 s"


def test_a_failure_during_the_hold_down_restarts_it():
    rig = Rig(up_delay=2.0)
    rig.link(up=True)
    rig.at(1.5)
    (t,) = rig.link(up=False)
    assert t.standing is Standing.DOWN
    assert rig.member.next_deadline() is None
    rig.clock.advance(0.1)
    rig.link(up=True)
    assert rig.at(1.9) == []
    assert rig.standing is Standing.RISING
    rig.at(0.1)
    assert rig.member.usable


def test_down_delay_keeps_a_member_usable_while_its_targets_are_briefly_lost():
    rig = Rig(targets=("gw",), rise=1, fall=1, down_delay=0.5)
    rig.link(up=True)
    rig.probes(ok=True)
    lost_at = rig.clock()
    (t,) = rig.probe("gw", False)
    assert (t.standing, t.cause) == (Standing.FALLING, Cause.PROBE_TARGETS_LOST)
    assert rig.member.usable
    assert rig.member.next_deadline() == lost_at + 0.5
    (t,) = rig.at(0.5)
    assert (t.standing, t.at) == (Standing.DOWN, lost_at + 0.5)
    assert t.reason.endswith("for down_delay 0.5 s")


def test_targets_back_within_down_delay_return_the_member_to_up_without_up_delay():
    rig = Rig(targets=("gw",), rise=1, fall=1, up_delay=3.0, down_delay=0.5)
    rig.link(up=True)
    rig.probes(ok=True)
    rig.at(3.0)
    assert rig.standing is Standing.UP
    rig.probe("gw", False)
    rig.clock.advance(0.2)
    (t,) = rig.probe("gw", True)
    assert (t.previous, t.standing, t.cause) == (Standing.FALLING, Standing.UP, Cause.RECOVERED)
    assert rig.usable_changes() == 1  # only the first time it became usable


def test_carrier_loss_during_down_delay_ends_it_at_once():
    rig = Rig(targets=("gw",), rise=1, fall=1, down_delay=5.0)
    rig.link(up=True)
    rig.probes(ok=True)
    rig.probe("gw", False)
    assert rig.standing is Standing.FALLING
    (t,) = rig.link(up=False)
    assert (t.standing, t.cause, t.reason) == (Standing.DOWN, Cause.CARRIER, "carrier lost")


def test_a_late_timer_changes_when_the_caller_hears_not_what_happened():
    rig = Rig(up_delay=1.0)
    start = rig.clock()
    rig.link(up=True)
    rig.clock.advance(3.0)  # the loop was busy; the up_delay deadline passed unseen
    transitions = rig.link(up=False)
    assert [(t.standing, t.at) for t in transitions] == [
        (Standing.UP, start + 1.0),
        (Standing.DOWN, start + 3.0),
    ]


def test_negative_delays_are_refused():
    with pytest.raises(ValueError, match="up_delay"):
        MemberConfig("eth0", up_delay=-1)


# -- damping ----------------------------------------------------------------------------------


def flap_storm(rig, hz=10.0, seconds=10.0):
    """Carrier down and up again at ``hz`` for ``seconds``; returns the last down time."""
    period = 1.0 / hz
    last_down = rig.clock()
    for _ in range(round(hz * seconds)):
        last_down = rig.clock()
        rig.link(up=False)
        rig.at(period / 2)
        rig.link(up=True)
        rig.at(period / 2)
    return last_down


def test_a_member_flapping_at_10_hz_for_10_s_is_suppressed_and_its_changes_are_bounded():
    rig = Rig()
    rig.link(up=True)
    assert rig.usable_changes() == 1
    last_down = flap_storm(rig)

    # Down, up, down, up: then the third flap is above suppress and it stays out.
    damping = [t for t in rig.log if t.cause is Cause.DAMPING]
    assert len(damping) == 1
    assert damping[0].standing is Standing.SUPPRESSED
    assert damping[0].at == pytest.approx(rig.log[0].at + 0.2)  # the third flap
    assert "after 3 flap(s)" in damping[0].reason
    assert rig.usable_changes() <= 6  # 1 initial up + 5 in a storm of 200 link events
    assert len(rig.log) <= 6  # and as many log lines

    # It stays out although healthy, until it has been stable for max_suppress (60 s):
    # 100 flaps drove the penalty to the cap.
    assert rig.standing is Standing.SUPPRESSED
    status = rig.member.status(rig.clock())
    assert status.healthy
    since_last = rig.clock() - last_down
    assert status.damping.penalty == pytest.approx(DampingConfig().ceiling
                                                   * 2 ** (-since_last / 15))
    assert rig.member.next_deadline() == pytest.approx(last_down + 60.0)
    rig.clock.set(rig.member.next_deadline() - 0.001)
    assert rig.tick() == []

    (t,) = rig.at(0.001)
    assert (t.standing, t.cause) == (Standing.UP, Cause.RECOVERED)
    assert t.reason.startswith("damping released; healthy")
    assert rig.usable_changes() <= 7


def test_without_damping_the_same_storm_flips_usable_on_every_event():
    rig = Rig(damping=None)
    rig.link(up=True)
    flap_storm(rig)
    assert rig.usable_changes() == 1 + 200
    assert rig.member.usable


def test_a_storm_on_the_probe_path_is_damped_too():
    rig = Rig(targets=("gw",), rise=1, fall=1)
    rig.link(up=True)
    rig.probes(ok=True)
    for _ in range(100):
        rig.clock.advance(0.05)
        rig.probes(ok=False)
        rig.clock.advance(0.05)
        rig.probes(ok=True)
    assert rig.standing is Standing.SUPPRESSED
    assert rig.usable_changes() <= 6


def test_flaps_faster_than_up_delay_still_count_so_the_member_stays_out_after_the_storm():
    rig = Rig(up_delay=1.0)
    rig.link(up=True)
    rig.at(1.0)
    last_down = flap_storm(rig, hz=10, seconds=2)
    assert rig.standing is Standing.SUPPRESSED
    rig.at(1.0)  # up_delay alone would have let it back by now
    assert not rig.member.usable
    assert rig.member.next_deadline() > last_down + 30


def test_suppression_ending_while_still_unhealthy_leaves_it_down_quietly():
    rig = Rig()
    rig.link(up=True)
    for _ in range(3):
        rig.link(up=False)
        rig.link(up=True)
    rig.link(up=False)  # the 4th flap; now it stays down
    deadline = rig.member.next_deadline()
    rig.clock.set(deadline)
    (t,) = rig.tick()
    assert (t.previous, t.standing, t.cause) == (Standing.SUPPRESSED, Standing.DOWN,
                                                  Cause.DAMPING)
    assert t.reason == "damping released; still down: carrier lost"
    assert not t.usable_changed


def test_suppression_ending_during_the_hold_down_still_requires_it():
    rig = Rig(up_delay=40.0)
    rig.link(up=True)
    rig.at(40)
    for _ in range(3):
        rig.link(up=False)
        rig.link(up=True)
    healthy_since = rig.clock()
    release = rig.member.next_deadline()
    assert release == pytest.approx(healthy_since + 30)  # 3000 -> 750
    (t,) = rig.at(30)
    assert (t.standing, t.cause) == (Standing.RISING, Cause.HOLD_DOWN)
    assert rig.member.next_deadline() == pytest.approx(healthy_since + 40)
    (t,) = rig.at(10)
    assert t.standing is Standing.UP


def test_status_is_an_immutable_snapshot_of_everything_shown_to_the_operator():
    rig = Rig(targets=("gw",), rise=1, fall=1)
    rig.link(up=True)
    rig.probes(ok=True)
    status = rig.member.status(rig.clock())
    assert (status.name, status.standing, status.usable, status.link_up) == (
        "eth0", Standing.UP, True, True)
    assert status.targets[0].last_rtt == 0.001
    assert status.damping.penalty == 0
    assert status.last.cause is Cause.RECOVERED
    with pytest.raises(AttributeError):
        status.standing = Standing.DOWN


def test_anything_but_a_health_signal_is_refused_rather_than_dropped():
    member = MemberHealth(MemberConfig("eth0"))
    with pytest.raises(TypeError, match="not a health signal"):
        member.observe(object())


def test_flaps_the_kernel_coalesced_away_are_charged_to_damping():
    """Link-watch reports a fast-toggling link about once a second: the carrier-down
    counter's jumps are the flaps no notification showed."""
    rig = Rig(damping=DampingConfig())
    rig.link(True)
    assert rig.standing is Standing.UP

    rig.at(1.0)
    changes = rig._take(rig.member.hidden_flaps(3, rig.clock()))

    assert rig.standing is Standing.SUPPRESSED
    assert [t.cause for t in changes] == [Cause.DAMPING]
    assert rig.member.status(rig.clock()).damping.flaps == 3


def test_hidden_flaps_without_damping_change_nothing():
    rig = Rig(damping=None)
    rig.link(True)
    assert rig.member.hidden_flaps(5, rig.clock()) == []
    assert rig.standing is Standing.UP


def test_a_link_toggling_faster_than_rise_probes_is_damped_though_never_healthy():
    rig = Rig(targets=("icmp:192.0.2.1",), damping=DampingConfig())
    rig.link(True)
    rig.probes(True, times=3)
    assert rig.standing is Standing.UP

    for _ in range(5):  # down, then up for less than rise probes, again and again
        rig.clock.advance(0.05)
        rig.link(False)
        rig.clock.advance(0.05)
        rig.link(True)
        rig.probes(True, times=1)

    assert rig.standing is Standing.SUPPRESSED
    assert rig.member.status(rig.clock()).damping.flaps == 5
