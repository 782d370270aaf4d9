"""Group selection: priorities, preempt with hold-down vs sticky, nobody usable, and the
operator's switch (with expiry) and hold layered on top. Every decision says why."""

import re

import pytest

from nodenetd.health.clock import ManualClock
from nodenetd.health.policy import (
    Decision,
    Failback,
    GroupCause,
    GroupConfig,
    GroupPolicy,
    Hold,
    MemberSpec,
    Pin,
    SwitchRefused,
)

# A primary uplink and a cheaper-to-lose backup, as in most two-uplink nodes.
PRIMARY_BACKUP = (MemberSpec("eth0", priority=100), MemberSpec("eth1", priority=50))


class Group:
    def __init__(self, members=PRIMARY_BACKUP, failback=Failback.PREEMPT, preempt_delay=10.0,
                 active=None):
        self.clock = ManualClock()
        self.policy = GroupPolicy(GroupConfig("uplink", members, failback, preempt_delay),
                                  active=active)
        self.usable = {}

    def set(self, warming=(), **usable) -> Decision:
        self.usable.update(usable)
        return self.policy.decide(self.clock(), self.usable, warming)

    def at(self, seconds, warming=()) -> Decision:
        self.clock.advance(seconds)
        return self.policy.decide(self.clock(), self.usable, warming)


# -- choosing ---------------------------------------------------------------------------------


def test_the_first_choice_is_the_usable_member_with_the_highest_priority():
    group = Group()
    d = group.set(eth0=True, eth1=True)
    assert (d.active, d.previous, d.changed, d.cause) == ("eth0", None, True, GroupCause.INITIAL)
    assert d.reason == "best usable member (priority 100)"
    assert d.active_usable


def test_priorities_decide_regardless_of_configuration_order():
    group = Group(members=(MemberSpec("eth0", 1), MemberSpec("eth1", 2)))
    assert group.set(eth0=True, eth1=True).active == "eth1"


def test_equal_priorities_fall_back_to_configuration_order():
    group = Group(members=(MemberSpec("b"), MemberSpec("a"), MemberSpec("c")))
    assert group.set(a=True, b=True, c=True).active == "b"


def test_deciding_again_on_the_same_input_changes_nothing():
    group = Group()
    group.set(eth0=True, eth1=True)
    for _ in range(3):
        d = group.at(1.0)
        assert (d.active, d.changed, d.cause) == ("eth0", False, GroupCause.STEADY)


def test_the_active_member_failing_moves_to_the_best_usable_one():
    group = Group(members=(*PRIMARY_BACKUP, MemberSpec("eth2", priority=75)))
    group.set(eth0=True, eth1=True, eth2=True)
    d = group.set(eth0=False)
    assert (d.previous, d.active, d.cause) == ("eth0", "eth2", GroupCause.FAILOVER)
    assert d.reason == "eth0 unusable; eth2 is the best usable member (priority 75)"


def test_an_adopted_active_member_is_kept_while_usable_and_better_is_not_waiting():
    group = Group(failback=Failback.STICKY, active="eth1")
    d = group.set(eth0=True, eth1=True)
    assert (d.active, d.changed) == ("eth1", False)


def test_unknown_members_are_a_wiring_error():
    group = Group()
    with pytest.raises(ValueError, match="unknown member 'eth9'"):
        group.set(eth9=True)
    with pytest.raises(ValueError, match="duplicate"):
        GroupConfig("g", (MemberSpec("a"), MemberSpec("a")))


# -- preempt vs sticky ------------------------------------------------------------------------


def test_preempt_fails_back_once_the_preferred_member_was_usable_for_the_hold_down():
    group = Group(preempt_delay=10.0)
    group.set(eth0=True, eth1=True)
    group.set(eth0=False)
    group.clock.advance(5)
    back = group.clock()
    d = group.set(eth0=True)
    assert (d.active, d.changed) == ("eth1", False)
    assert d.reason == "eth1 is usable; failback to eth0 in 10.0 s if it stays usable"
    assert group.policy.next_deadline() == back + 10.0
    assert not group.at(9.999).changed
    d = group.at(0.001)
    assert (d.previous, d.active, d.cause) == ("eth1", "eth0", GroupCause.FAILBACK)
    assert d.reason == "eth0 (priority 100) usable for 10.0 s (preempt_delay 10 s)"
    assert group.policy.next_deadline() is None


def test_a_relapse_during_the_hold_down_restarts_it():
    group = Group(preempt_delay=10.0)
    group.set(eth0=True, eth1=True)
    group.set(eth0=False)
    group.set(eth0=True)
    group.clock.advance(8)
    assert group.set(eth0=False).active == "eth1"
    assert group.policy.next_deadline() is None
    group.clock.advance(1)
    group.set(eth0=True)
    assert not group.at(9.0).changed
    assert group.at(1.0).active == "eth0"


def test_preempt_with_no_delay_fails_back_at_once():
    group = Group(preempt_delay=0.0)
    group.set(eth0=False, eth1=True)
    d = group.set(eth0=True)
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILBACK)


def test_sticky_stays_on_the_current_member_while_it_is_usable():
    group = Group(failback=Failback.STICKY)
    group.set(eth0=True, eth1=True)
    group.set(eth0=False)
    group.set(eth0=True)
    d = group.at(3600)
    assert (d.active, d.changed, d.reason) == ("eth1", False, "eth1 is usable (sticky)")
    assert group.policy.next_deadline() is None
    d = group.set(eth1=False)
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILOVER)


def test_equal_priorities_never_preempt():
    group = Group(members=(MemberSpec("a"), MemberSpec("b")), preempt_delay=0)
    group.set(a=True, b=True)
    group.set(a=False)
    d = group.set(a=True)
    assert (d.active, d.changed) == ("b", False)
    assert group.policy.next_deadline() is None


# -- nobody usable ----------------------------------------------------------------------------


def test_with_no_usable_member_the_last_active_is_kept_and_reported_unusable():
    group = Group()
    group.set(eth0=True, eth1=True)
    d = group.set(eth0=False, eth1=False)
    assert (d.active, d.changed, d.active_usable) == ("eth0", False, False)
    assert d.cause is GroupCause.NO_USABLE
    assert d.reason == "no usable member; keeping eth0 in place"


def test_when_one_comes_back_it_takes_over_and_the_preferred_one_later_fails_back():
    group = Group(preempt_delay=10.0)
    group.set(eth0=True, eth1=True)
    group.set(eth0=False, eth1=False)
    d = group.set(eth1=True)
    assert (d.active, d.cause) == ("eth1", GroupCause.FAILOVER)
    group.set(eth0=True)
    assert group.at(10).active == "eth0"


def test_nothing_usable_yet_means_no_choice_yet():
    d = Group().set(eth0=False, eth1=False)
    assert (d.active, d.changed, d.cause) == (None, False, GroupCause.NO_USABLE)


def test_a_member_in_its_up_delay_is_taken_when_nothing_else_is_usable():
    """bonding ignores updelay when no slave is active: carrying traffic beats waiting."""
    group = Group()
    group.set(eth0=True, eth1=True)
    group.set(eth0=False, eth1=False)
    d = group.set(warming=("eth1",))
    assert (d.active, d.cause, d.active_usable) == ("eth1", GroupCause.FAILOVER, False)
    assert d.reason == "no usable member; taking eth1 during its up-delay"
    d = group.set(eth1=True)
    assert (d.active, d.changed, d.active_usable) == ("eth1", False, True)


# -- manual switch ----------------------------------------------------------------------------


def test_a_manual_switch_holds_for_its_duration_then_normal_rules_resume():
    group = Group(preempt_delay=10.0)
    group.set(eth0=True, eth1=True)
    group.clock.advance(60)
    started = group.clock()
    d = group.policy.switch(group.clock(), "eth1", duration=30)
    assert (d.previous, d.active, d.cause) == ("eth0", "eth1", GroupCause.MANUAL)
    assert d.reason == "manual switch for 30.0 s more"
    assert group.policy.override == Pin("eth1", started + 30)
    assert group.policy.next_deadline() == started + 30
    d = group.at(29.9)
    assert (d.active, d.changed, d.cause) == ("eth1", False, GroupCause.MANUAL)
    d = group.at(0.1)
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILBACK)  # usable for long enough
    assert d.reason.startswith("manual switch expired; eth0 (priority 100) usable for")
    assert group.policy.override is None


def test_after_a_manual_switch_expires_sticky_stays_where_it_is():
    group = Group(failback=Failback.STICKY)
    group.set(eth0=True, eth1=True)
    group.policy.switch(group.clock(), "eth1", duration=5)
    d = group.at(5)
    assert (d.active, d.changed) == ("eth1", False)
    assert d.reason == "manual switch expired; eth1 is usable (sticky)"


def test_a_switch_without_duration_lasts_until_released():
    group = Group(preempt_delay=0)
    group.set(eth0=True, eth1=True)
    group.policy.switch(group.clock(), "eth1")
    assert group.policy.next_deadline() is None
    assert group.at(86400).active == "eth1"
    d = group.policy.release(group.clock())
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILBACK)
    assert d.reason.startswith("released by operator; ")


def test_a_pinned_member_that_becomes_unusable_is_failed_over_and_the_pin_dropped():
    group = Group()
    group.set(eth0=True, eth1=True)
    group.policy.switch(group.clock(), "eth1", duration=300)
    d = group.set(eth1=False)
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILOVER)
    assert d.reason.startswith("manual switch cancelled, eth1 unusable; ")
    assert group.policy.override is None


@pytest.mark.parametrize(
    ("member", "duration", "why"),
    [
        ("eth9", None, "not a member (members: eth0, eth1)"),
        ("eth1", None, "it is not usable now"),
        ("eth0", 0, "duration must be positive"),
    ],
)
def test_a_switch_that_cannot_be_honoured_is_refused_with_the_reason(member, duration, why):
    group = Group()
    group.set(eth0=True, eth1=False)
    with pytest.raises(SwitchRefused, match=re.escape(why)) as info:
        group.policy.switch(group.clock(), member, duration)
    assert str(info.value).startswith(f"failover group uplink: cannot switch to {member}: ")
    assert group.policy.active == "eth0"


# -- hold -------------------------------------------------------------------------------------


def test_hold_freezes_the_choice_even_when_the_active_member_dies():
    group = Group(preempt_delay=0)
    group.set(eth0=False, eth1=True)
    d = group.policy.hold(group.clock())
    assert (d.active, d.changed, d.cause) == ("eth1", False, GroupCause.MANUAL)
    assert group.policy.override == Hold()
    assert not group.set(eth0=True).changed  # no failback while held
    d = group.set(eth1=False)
    assert (d.active, d.changed, d.active_usable) == ("eth1", False, False)
    assert d.reason == "held by operator; eth1 is NOT usable"
    d = group.policy.release(group.clock())
    assert (d.active, d.cause) == ("eth0", GroupCause.FAILOVER)


def test_the_latest_manual_command_wins():
    group = Group()
    group.set(eth0=True, eth1=True)
    group.policy.hold(group.clock())
    assert group.policy.switch(group.clock(), "eth1").active == "eth1"  # switch replaces hold
    group.policy.hold(group.clock())  # hold freezes the pinned member
    assert group.policy.override == Hold()
    assert not group.at(3600).changed
    assert group.policy.active == "eth1"


def test_decisions_read_as_one_log_line():
    group = Group()
    group.set(eth0=True, eth1=True)
    d = group.set(eth0=False)
    assert str(d) == ("eth0 -> eth1 (failover): eth0 unusable; "
                      "eth1 is the best usable member (priority 50)")
    assert str(group.at(1)) == "stay eth1 (steady): eth1 is usable with the best priority"
