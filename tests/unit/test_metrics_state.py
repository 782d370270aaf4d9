"""What the service records for the metrics: each reconcile replaces exactly the part it
planned; transactions count per profile; restores and reloads are remembered."""

from __future__ import annotations

from types import SimpleNamespace

from nodenetd.config.model import Origin
from nodenetd.metrics.state import ServiceRecord, SettingStates
from nodenetd.tuning.plan import Change, InSync, Plan, Skip, Target

BASE, EXTRA = Origin("base"), Origin("extra")
LAB0, LAB1, NODE = Target("lab0", 5), Target("lab1", 6), Target()


def in_sync(kind, target, key, origin=BASE):
    return InSync(kind, target, key, origin, 1)


def change(kind, target, key, origin=BASE):
    return Change(kind, target, key, origin, 1, 2)


def table(states: SettingStates) -> dict:
    return {(device, kind, key): state for device, kind, key, state in states.freeze()}


def full_plan() -> Plan:
    return Plan(in_sync=[in_sync("link", LAB0, "mtu"), in_sync("features", LAB0, "rx-gro"),
                         in_sync("link", LAB1, "mtu"), in_sync("sysctl", NODE, "a.b"),
                         in_sync("sysctl", LAB0, "net.ipv4.conf.IF.rp_filter")],
                skipped=[Skip("rings", LAB1, "rx", BASE, 4096, "no rings")])


def test_a_whole_node_plan_fills_the_table():
    states = SettingStates()
    states.record(full_plan(), None, None)
    assert table(states) == {
        ("lab0", "link", "mtu"): True, ("lab0", "features", "rx-gro"): True,
        ("lab1", "link", "mtu"): True, (None, "sysctl", "a.b"): True,
        ("lab0", "sysctl", "net.ipv4.conf.IF.rp_filter"): True, ("lab1", "rings", "rx"): None}


def test_a_device_plan_replaces_only_that_device():
    states = SettingStates()
    states.record(full_plan(), None, None)
    states.record(Plan(changes=[change("link", LAB0, "mtu")]), {"lab0"}, None)
    assert table(states) == {
        ("lab0", "link", "mtu"): False,  # and rx-gro is no longer managed on lab0
        ("lab1", "link", "mtu"): True, (None, "sysctl", "a.b"): True,
        ("lab1", "rings", "rx"): None}


def test_a_kinds_plan_replaces_only_those_kinds_everywhere():
    states = SettingStates()
    states.record(full_plan(), None, None)
    states.record(Plan(changes=[change("sysctl", NODE, "a.b")]), None, {"sysctl"})
    assert table(states)[(None, "sysctl", "a.b")] is False
    assert ("lab0", "sysctl", "net.ipv4.conf.IF.rp_filter") not in table(states)
    assert table(states)[("lab0", "link", "mtu")] is True


def test_applied_changes_are_in_sync_and_a_gone_device_is_forgotten():
    states = SettingStates()
    drift = change("link", LAB0, "mtu")
    states.record(Plan(changes=[drift], in_sync=[in_sync("link", LAB1, "mtu")]), None, None)
    states.mark_in_sync([drift])
    assert table(states)[("lab0", "link", "mtu")] is True
    states.forget("lab0")
    assert table(states) == {("lab1", "link", "mtu"): True}


def test_observed_differences_are_out_of_sync():
    states = SettingStates()
    plan = Plan()
    plan.observed = [change("link", LAB0, "mtu")]
    states.record(plan, None, None)
    assert table(states) == {("lab0", "link", "mtu"): False}


def test_transactions_count_per_profile_and_drift_per_kind():
    record = ServiceRecord()
    record.profiles = ("base", "extra")
    mtu, gro = change("link", LAB0, "mtu"), change("features", LAB0, "rx-gro", EXTRA)
    record.transaction([(mtu, "drift"), (gro, "start")], [mtu, gro])
    record.transaction([(mtu, "drift")], None)
    frozen = record.freeze()
    assert dict(frozen.applies) == {"base": 1, "extra": 1}
    assert dict(frozen.apply_failures) == {"base": 1}
    assert frozen.last_apply["base"][1] is False and frozen.last_apply["extra"][1] is True
    assert dict(frozen.corrections) == {"link": 1}
    record.control_apply(ok=True)
    assert record.freeze().applies == {"base": 2, "extra": 2}


def test_profiles_of_interfaces_follow_full_plans_only():
    record = ServiceRecord()
    bound = SimpleNamespace(link=SimpleNamespace(index=5), settings={
        "link": {"mtu": SimpleNamespace(origin=EXTRA)},
        "features": {"rx-gro": SimpleNamespace(origin=BASE)}})
    desired = SimpleNamespace(interfaces={"lab0": bound})
    record.planned(desired, Plan(), {"lab0"}, None, drift_check=False)
    assert record.freeze().profiles_of == {5: ("base", "extra")}
    assert record.freeze().last_drift_check_at is None
    narrowed = SimpleNamespace(interfaces={"lab0": SimpleNamespace(
        link=bound.link, settings={"sysctl": {}})})
    record.planned(narrowed, Plan(), None, {"sysctl"}, drift_check=True)
    assert record.freeze().profiles_of == {5: ("base", "extra")}
    assert record.freeze().last_drift_check_at is not None
    record.forget(5, "lab0")
    assert record.freeze().profiles_of == {}


def test_restores_and_reloads_are_remembered(tmp_path):
    record = ServiceRecord()
    record.restore_reply({"restored": [{}, {}], "failed": ["x"], "gone": []})
    record.restore_done(3, 0, 1)
    frozen = record.freeze()
    assert (frozen.restored, frozen.restore_failed, frozen.restore_gone) == (5, 1, 1)
    assert frozen.last_restore_at is not None
    record.reload_failed()
    assert record.freeze().reload_ok is False

    profile = tmp_path / "base.yaml"
    profile.write_text("description: x\n")
    node_config = tmp_path / "nodenetd.yaml"
    node_config.write_text("profiles: [base]\n")
    node = SimpleNamespace(path=str(node_config), profile_dirs=(str(tmp_path),),
                           failover=None, overrides=object())
    record.config_loaded(SimpleNamespace(node=node, resolved=SimpleNamespace(names=("base",))))
    frozen = record.freeze()
    assert frozen.reload_ok and frozen.profiles == ("base", "overrides")
    import hashlib

    assert frozen.revisions["base"] == hashlib.sha256(b"description: x\n").hexdigest()[:12]
    assert frozen.revisions["overrides"] == hashlib.sha256(
        b"profiles: [base]\n").hexdigest()[:12]
