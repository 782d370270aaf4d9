"""The group runtime's wiring, with a recording actuator and scripted probers: which signals
reach the state machines, when the actuator is asked to converge and with what, what is
counted. The kernel side of each actuator is tested for real in tests/integration (routes)
and tests/kernel (bonds)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json

import pytest

from nodenetd.config.failover import FailoverGroup, FailoverMember
from nodenetd.failover.actuator import Actuator, MemberLink, NotifyTarget
from nodenetd.failover.group import GroupRuntime
from nodenetd.health.policy import SwitchRefused
from nodenetd.health.probes import ProbeKind, ProbeResult, ProbeSpec
from nodenetd.kernel.links import Link


def link(name: str, index: int, *, carrier: bool = True, downs: int = 0) -> Link:
    return Link(index=index, name=name, kind="veth", slave_kind=None, master=None, mtu=1500,
                min_mtu=68, max_mtu=65535, txqueuelen=1000, admin_up=True,
                operstate="UP" if carrier else "DOWN", carrier=carrier, mac=None, perm_mac=None,
                parent_bus=None, carrier_up_count=downs + 1, carrier_down_count=downs)


class Recorder(Actuator):
    kind = "route"

    def __init__(self, kernel_active: str | None = None) -> None:
        self.kernel_active = kernel_active
        self.calls: list[tuple[str | None, list[str]]] = []

    def prepare(self, links):
        return self.kernel_active

    def member_links(self, links):
        return {name: MemberLink.of(links.get(name)) for name in ("a0", "b0")}

    def converge(self, links, active, ranking):
        self.calls.append((active, list(ranking)))
        return True

    def notify_target(self, active):
        return NotifyTarget(active)

    def release(self, *, restore):
        return None


class ScriptedProber:
    """Stands in for a Prober: records that it ran; the test feeds results itself."""

    def __init__(self, member, specs, on_result):
        self.member, self.specs, self.on_result = member, specs, on_result
        self.started = self.closed = False

    def start(self, loop):
        self.started = True

    def close(self):
        self.closed = True

    def counters(self):
        return {}


SPEC_A = ProbeSpec(ProbeKind.ICMP, "203.0.113.1", interval=0.01)


def group(**changes) -> FailoverGroup:
    members = (FailoverMember("a0", priority=100, probes=(SPEC_A,), rise=1, fall=2,
                              gateway=ipaddress.IPv4Address("192.0.2.1")),
               FailoverMember("b0", priority=50, gateway=ipaddress.IPv4Address("198.51.100.1")))
    config = FailoverGroup("uplinks", "route", members, preempt_delay=0.0, notify_count=0,
                           routes=(ipaddress.ip_network("0.0.0.0/0"),))
    return dataclasses.replace(config, **changes)


class Rig:
    def __init__(self, config: FailoverGroup | None = None, kernel_active=None) -> None:
        self.loop = asyncio.new_event_loop()
        self.links = {"a0": link("a0", 3), "b0": link("b0", 4)}
        self.actuator = Recorder(kernel_active)
        self.now = 100.0
        self.runtime = GroupRuntime(config or group(), self.actuator, links=lambda: self.links,
                                    loop=self.loop, clock=lambda: self.now,
                                    prober_factory=ScriptedProber)

    def probe(self, ok: bool, member: str = "a0") -> None:
        self.now += 0.01
        self.runtime.on_probe(ProbeResult(member, "icmp:203.0.113.1", ok,
                                          0.0002 if ok else None, self.now, self.now - 0.005))

    def set_link(self, name: str, **kw) -> None:
        self.now += 0.001
        self.links[name] = link(name, self.links[name].index, **kw)
        self.runtime.on_links(self.now)

    def close(self):
        self.runtime.close()
        self.loop.close()


@pytest.fixture
def rig():
    rig = Rig()
    yield rig
    rig.close()


def test_start_adopts_the_kernels_choice_and_probes_only_members_with_probes():
    rig = Rig(kernel_active="b0")
    try:
        rig.runtime.start()
        assert rig.runtime.policy.active == "b0"
        assert set(rig.runtime.probers) == {"a0"} and rig.runtime.probers["a0"].started
        # b0 has no probes: usable on its link alone, and it is what the kernel has
        assert rig.runtime.decision.active == "b0" and not rig.runtime.decision.changed
    finally:
        rig.close()


def test_the_best_usable_member_is_chosen_and_converged_at_once(rig):
    rig.runtime.start()
    rig.probe(True)  # rise 1: a0 is up; it has the higher priority

    # b0 (no probes) was usable on its link alone and taken first; a0 preempts it at once
    assert rig.runtime.policy.active == "a0"
    assert rig.actuator.calls[-1] == ("a0", ["a0", "b0"])
    assert rig.runtime.counters.switches == {"initial": 1, "failback": 1}


def test_carrier_loss_converges_on_the_backup_in_the_same_callback(rig):
    rig.runtime.start()
    rig.probe(True)
    assert rig.runtime.policy.active == "a0"
    calls = len(rig.actuator.calls)

    rig.set_link("a0", carrier=False, downs=1)

    assert rig.actuator.calls[calls:] == [("b0", ["b0", "a0"])]
    assert rig.runtime.counters.switches["failover"] == 1
    cause, seconds = rig.runtime.counters.detections[-1]
    assert cause == "failover" and seconds == 0.0  # the event itself is the detection


def test_lost_probe_targets_fail_over_and_the_detection_time_counts_from_the_last_reply(rig):
    rig.runtime.start()
    rig.probe(True)
    last_ok = rig.now
    rig.probe(False)
    assert rig.runtime.policy.active == "a0"  # fall 2: one miss is not enough
    rig.probe(False)

    assert rig.runtime.policy.active == "b0"
    _cause, seconds = rig.runtime.counters.detections[-1]
    assert seconds == pytest.approx(rig.now - last_ok)
    assert rig.runtime.counters.transitions["probe-targets-lost"] == 1


def test_carrier_losses_the_kernel_never_notified_are_charged_as_flaps(rig):
    rig.runtime.start()
    rig.probe(True)

    rig.set_link("a0", downs=3)  # still up, but it went down three times meanwhile

    status = rig.runtime.health["a0"].status(rig.now)
    assert status.damping.flaps == 3 and status.damping.suppressed
    assert rig.runtime.policy.active == "b0"


def test_hidden_downs_count_only_what_no_observation_showed():
    up = MemberLink(True, True, "UP", 4)
    assert MemberLink(True, False, "DOWN", 5).hidden_downs(up) == 0  # the one we saw
    assert MemberLink(True, False, "DOWN", 7).hidden_downs(up) == 2
    assert MemberLink(True, True, "UP", 6).hidden_downs(up) == 2
    assert MemberLink(True, True, "UP", None).hidden_downs(up) == 0  # an old kernel


def test_a_member_that_disappears_is_down_and_its_prober_closed(rig):
    rig.runtime.start()
    rig.probe(True)
    prober = rig.runtime.probers["a0"]

    del rig.links["a0"]
    rig.runtime.on_links(rig.now)

    assert prober.closed and "a0" not in rig.runtime.probers
    assert rig.runtime.policy.active == "b0"
    assert rig.runtime.status()["members"][0]["link"] == {
        "present": False, "carrier": False, "operstate": "NOTPRESENT"}


def test_manual_switch_converges_and_a_refused_switch_changes_nothing(rig):
    rig.runtime.start()
    rig.probe(True)

    decision = rig.runtime.switch("b0", 30.0)
    assert decision.changed and rig.actuator.calls[-1][0] == "b0"
    assert rig.runtime.status()["override"]["switch"] == "b0"

    rig.set_link("a0", carrier=False, downs=1)
    calls = len(rig.actuator.calls)
    with pytest.raises(SwitchRefused):
        rig.runtime.switch("a0", None)
    assert len(rig.actuator.calls) == calls


def test_status_is_json_ready_and_names_every_member(rig):
    rig.runtime.start()
    rig.probe(True)

    status = json.loads(json.dumps(rig.runtime.status()))

    assert [m["name"] for m in status["members"]] == ["a0", "b0"]
    assert status["active"] == "a0" and status["active_usable"] is True
    assert status["members"][0]["damping"]["penalty"] == 0
