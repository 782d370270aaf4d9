"""The collectors on hand-made snapshots: which interfaces, which series, which values, what
a failing part does to a scrape. ``snapshot_of`` and ``registry_of`` are shared with the
other metrics tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from types import MappingProxyType
from typing import ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodenetd.config.metrics import MetricsSettings
from nodenetd.config.model import Origin
from nodenetd.health.probes import ProbeCounters
from nodenetd.health.probes.prober import RTT_BUCKETS
from nodenetd.kernel.links import Link
from nodenetd.metrics.daemon import DaemonCollector, ProcessCollector
from nodenetd.metrics.failover import FailoverCollector, ProbesCollector
from nodenetd.metrics.interfaces import (
    InterfacesCollector,
    InterfaceSelection,
    InterfaceStatsCollector,
)
from nodenetd.metrics.registry import Registry
from nodenetd.metrics.snapshot import DaemonState, GroupState, MemberState, ProbeState, Snapshot
from nodenetd.metrics.state import ServiceRecord
from nodenetd.metrics.tuning import TuningCollector
from nodenetd.tuning.plan import Change, InSync, Plan, Skip, Target
from tests.unit.test_metrics_exposition import parse

# -- fixtures ------------------------------------------------------------------------------


def link(index: int, name: str, *, kind: str | None = "veth", bus: str | None = None,
         master: int | None = None, carrier: bool = True, operstate: str = "UP",
         mtu: int = 1500, loopback: bool = False, downs: int = 1) -> Link:
    return Link(index=index, name=name, kind=kind, slave_kind="bond" if master else None,
                master=master, mtu=mtu, min_mtu=68, max_mtu=65535, txqueuelen=1000,
                admin_up=True, operstate=operstate, carrier=carrier, mac="02:00:00:00:00:01",
                perm_mac=None, parent_bus=bus, loopback=loopback, carrier_up_count=downs + 1,
                carrier_down_count=downs)


LINKS = [
    link(1, "lo", kind=None, loopback=True, operstate="UNKNOWN"),
    link(2, "eth0", kind=None, bus="pci", master=4, downs=3),  # physical, in bond0
    link(3, "eth1", kind=None, bus="pci", carrier=False, operstate="LOWERLAYERDOWN"),
    link(4, "bond0", kind="bond", mtu=9000),
    link(5, "lab0", mtu=4000),  # tuned by a profile
    link(6, "vethabc", mtu=1450),  # a pod's veth: not reported by default
]


def record_with_settings() -> ServiceRecord:
    record = ServiceRecord()
    record.profiles = ("base", "failover")
    record.revisions = {"base": "0123456789ab", "failover": "ba9876543210"}
    record.profiles_of = {5: ("base",)}
    origin_plan = Plan(
        changes=[],
        in_sync=[InSync("link", Target("lab0", 5), "mtu", None, 4000),
                 InSync("sysctl", Target(), "net.core.somaxconn", None, 4096)],
        skipped=[Skip("rings", Target("lab0", 5), "rx", None, 4096, "no rings")],
    )
    record.settings.record(origin_plan, None, None)
    record.applies["base"] = 2
    record.last_apply["base"] = (1_700_000_000.0, True)
    record.corrections["link"] = 1
    return record


def counters(sent: int = 10, ok: int = 8, timeouts: int = 2, rtts=(0.00003, 0.0002)):
    counts = [0] * (len(RTT_BUCKETS) + 1)
    for rtt in rtts:
        import bisect

        counts[bisect.bisect_left(RTT_BUCKETS, rtt)] += 1
    return ProbeCounters(sent=sent, ok=ok, timeouts=timeouts, rtt_counts=tuple(counts),
                         rtt_sum=sum(rtts))


def groups() -> tuple[GroupState, ...]:
    running = GroupState(
        name="bond0", kind="bond", running=True,
        members=(MemberState("eth0", 100, active=True, usable=True, healthy=True, present=True),
                 MemberState("eth1", 50, present=True, penalty=1500.5, suppressed=True,
                             flaps=4)),
        probes=(ProbeState("eth0", "arp", "192.0.2.1", up=True, counters=counters()),
                ProbeState("eth1", "arp", "192.0.2.1", up=False, counters=None)),
        switches=MappingProxyType({"initial": 1, "failover": 2}),
        transitions=MappingProxyType({"carrier": 3}),
        switch_errors=1, last_switch_at=1_700_000_100.0,
        detection_counts=(0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), detection_sum=0.3,
        notify=MappingProxyType({"arp_sent": 3, "na_sent": 3, "send_errors": 0}))
    waiting = GroupState(name="uplinks", kind="route", running=False,
                         members=(MemberState("a0", 100), MemberState("b0", 50)),
                         probes=(ProbeState("a0", "icmp", "203.0.113.10"),))
    return running, waiting


def snapshot_of(links=LINKS, *, managed=frozenset({5}), record: ServiceRecord | None = None,
                group_states=None, **daemon) -> Snapshot:
    record = record or record_with_settings()
    return Snapshot(
        taken_at=time.time(), taken_mono=time.monotonic(),
        links=MappingProxyType({lk.index: lk for lk in links}),
        managed=managed, failover_interfaces=frozenset({"eth0", "eth1", "bond0"}),
        daemon=DaemonState(rtnl_events=MappingProxyType({"newlink": 7}), **daemon),
        tuning=record.freeze(),
        groups=groups() if group_states is None else group_states)


class FakeSpeeds:
    dumps = 0

    def __init__(self) -> None:
        pass

    def dump(self):
        FakeSpeeds.dumps += 1
        return {2: 25000, 3: None, 4: 25000, 5: 10000}

    def close(self):
        pass


class FakeDrivers:
    asked: ClassVar[list[str]] = []

    def get(self, name):
        FakeDrivers.asked.append(name)
        return {"eth0": "mlx5_core", "eth1": "mlx5_core", "bond0": "bonding"}.get(name, "veth")

    def close(self):
        pass


class FakeStats:
    fail = False

    def dump(self):
        if FakeStats.fail:
            raise OSError(105, "No buffer space available")
        return {index: tuple(index * 1000 + field for field in range(16))
                for index in (1, 2, 3, 4, 5, 6)}

    def close(self):
        pass


def collectors(settings: MetricsSettings | None = None):
    selection = InterfaceSelection(settings or MetricsSettings())
    return [DaemonCollector(),
            InterfacesCollector(selection, speeds=FakeSpeeds, drivers=FakeDrivers),
            InterfaceStatsCollector(selection, reader=FakeStats),
            TuningCollector(), FailoverCollector(), ProbesCollector()]


def registry_of(snapshot_source, settings: MetricsSettings | None = None) -> Registry:
    return Registry(collectors(settings), snapshot_source, process=ProcessCollector())


def scrape(snapshot: Snapshot | None = None, settings=None, fresh: bool = True) -> dict:
    snap = snapshot_of() if snapshot is None else snapshot
    return parse(registry_of(lambda: (snap, fresh), settings).scrape())


def value(samples: dict, name: str, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def devices(samples: dict) -> set[str]:
    return {dict(labels)["device"] for name, labels in samples
            if name.startswith("nodenetd_interface_")}


# -- interfaces ----------------------------------------------------------------------------


def test_by_default_managed_failover_and_physical_interfaces_are_reported():
    assert devices(scrape()) == {"eth0", "eth1", "bond0", "lab0"}


def test_include_adds_and_exclude_wins():
    settings = MetricsSettings(include=("veth*", "lo"), exclude=("lab*", "eth1"))
    assert devices(scrape(settings=settings)) == {"eth0", "bond0", "vethabc", "lo"}


def test_interface_series_carry_the_link_state():
    s = scrape()
    assert value(s, "nodenetd_interface_info", device="eth0", kind="physical",
                 driver="mlx5_core", master="bond0", profile="") == 1
    assert value(s, "nodenetd_interface_info", device="lab0", kind="veth", driver="veth",
                 master="", profile="base") == 1
    assert value(s, "nodenetd_interface_carrier", device="eth1") == 0
    assert value(s, "nodenetd_interface_operstate", device="eth1",
                 operstate="lowerlayerdown") == 1
    states = [value(s, "nodenetd_interface_operstate", device="eth1", operstate=state)
              for state in ("up", "down", "lowerlayerdown", "dormant", "notpresent",
                            "testing", "unknown")]
    assert states == [0, 0, 1, 0, 0, 0, 0]
    assert value(s, "nodenetd_interface_carrier_down_changes_total", device="eth0") == 3
    assert value(s, "nodenetd_interface_carrier_up_changes_total", device="eth0") == 4
    assert value(s, "nodenetd_interface_mtu_bytes", device="bond0") == 9000
    assert value(s, "nodenetd_interface_speed_bytes", device="eth0") == 25000 * 125000
    assert value(s, "nodenetd_interface_speed_bytes", device="eth1") is None  # unknown
    assert value(s, "nodenetd_interface_admin_up", device="lab0") == 1


def test_counters_come_from_the_64_bit_stats_dump():
    s = scrape()
    assert value(s, "nodenetd_interface_receive_bytes_total", device="lab0") == 5002
    assert value(s, "nodenetd_interface_transmit_bytes_total", device="lab0") == 5003
    assert value(s, "nodenetd_interface_receive_packets_total", device="lab0") == 5000
    assert value(s, "nodenetd_interface_transmit_drops_total", device="lab0") == 5007
    assert value(s, "nodenetd_interface_receive_missed_total", device="lab0") == 5015


def test_a_removed_interface_drops_every_series_and_its_caches():
    selection = InterfaceSelection(MetricsSettings(include=("veth*",)))
    interfaces = InterfacesCollector(selection, speeds=FakeSpeeds, drivers=FakeDrivers)
    registry = Registry([interfaces, InterfaceStatsCollector(selection, reader=FakeStats),
                         TuningCollector()], lambda: (current, True))
    current = snapshot_of()
    assert "vethabc" in devices(parse(registry.scrape()))
    many = [*LINKS, *(link(100 + i, f"veth{i}") for i in range(200))]
    current = snapshot_of(many)
    registry.scrape()
    current = snapshot_of([lk for lk in LINKS if lk.name != "vethabc"])
    after = parse(registry.scrape())
    assert "vethabc" not in devices(after)
    assert not [key for key in after if "vethabc" in str(key)]
    assert all(index < 100 for index in interfaces._driver)  # pruned


def test_speeds_are_cached_until_the_carrier_changes():
    selection = InterfaceSelection(MetricsSettings())
    collector = InterfacesCollector(selection, speeds=FakeSpeeds, drivers=FakeDrivers)
    FakeSpeeds.dumps = 0
    FakeDrivers.asked = []
    collector.collect(snapshot_of())
    collector.collect(snapshot_of())
    assert FakeSpeeds.dumps == 1
    assert sorted(FakeDrivers.asked) == ["bond0", "eth0", "eth1", "lab0"]  # once each
    flapped = [link(3, "eth1", kind=None, bus="pci", downs=2) if lk.index == 3 else lk
               for lk in LINKS]
    collector.collect(snapshot_of(flapped))
    assert FakeSpeeds.dumps == 2


def test_a_failing_stats_dump_is_a_partial_scrape_not_an_error():
    FakeStats.fail = True
    try:
        s = scrape()
    finally:
        FakeStats.fail = False
    assert value(s, "nodenetd_collector_success", collector="interface_stats") == 0
    assert value(s, "nodenetd_interface_receive_bytes_total", device="lab0") is None
    assert value(s, "nodenetd_collector_success", collector="interfaces") == 1
    assert value(s, "nodenetd_interface_mtu_bytes", device="lab0") == 4000
    assert value(s, "nodenetd_failover_active", group="bond0", device="eth0") == 1


# -- tuning --------------------------------------------------------------------------------


def test_tuning_series():
    s = scrape()
    assert value(s, "nodenetd_profile_info", profile="base", revision="0123456789ab") == 1
    assert value(s, "nodenetd_profile_applies_total", profile="base") == 2
    assert value(s, "nodenetd_profile_applies_total", profile="failover") == 0
    assert value(s, "nodenetd_profile_last_apply_success", profile="base") == 1
    assert value(s, "nodenetd_profile_last_apply_success", profile="failover") is None
    assert value(s, "nodenetd_setting_in_sync", kind="link", device="lab0", setting="mtu") == 1
    assert value(s, "nodenetd_setting_in_sync", kind="sysctl", device="",
                 setting="net.core.somaxconn") == 1
    assert value(s, "nodenetd_setting_in_sync", kind="rings", device="lab0",
                 setting="rx") is None
    assert value(s, "nodenetd_settings_unsupported", kind="rings") == 1
    assert value(s, "nodenetd_drift_corrections_total", kind="link") == 1
    assert value(s, "nodenetd_drift_corrections_total", kind="features") == 0
    assert value(s, "nodenetd_tuning_mode", mode="enforce") == 1
    assert value(s, "nodenetd_tuning_interfaces_managed") == 1


def test_a_drifted_setting_is_out_of_sync_until_corrected():
    record = record_with_settings()
    drift = Change("link", Target("lab0", 5), "mtu", Origin("base"), 1500, 4000)
    record.planned(type("D", (), {"interfaces": {}})(), Plan(changes=[drift]), {"lab0"},
                   None, drift_check=True)
    s = scrape(snapshot_of(record=record))
    assert value(s, "nodenetd_setting_in_sync", kind="link", device="lab0", setting="mtu") == 0
    assert value(s, "nodenetd_drift_last_check_timestamp_seconds") is not None
    record.transaction([(drift, "drift")], [drift])
    s = scrape(snapshot_of(record=record))
    assert value(s, "nodenetd_setting_in_sync", kind="link", device="lab0", setting="mtu") == 1


# -- failover and probes --------------------------------------------------------------------


def test_every_configured_member_is_present_as_0_or_1():
    s = scrape()
    bond = {"group": "bond0"}
    assert value(s, "nodenetd_failover_active", **bond, device="eth0") == 1
    assert value(s, "nodenetd_failover_active", **bond, device="eth1") == 0
    assert value(s, "nodenetd_failover_suppressed", **bond, device="eth1") == 1
    assert value(s, "nodenetd_failover_damping_penalty", **bond, device="eth1") == 1500.5
    assert value(s, "nodenetd_failover_flaps_total", **bond, device="eth1") == 4
    assert value(s, "nodenetd_failover_members", **bond) == 2
    assert value(s, "nodenetd_failover_members_healthy", **bond) == 1
    for device in ("a0", "b0"):  # a group still waiting for its interfaces
        assert value(s, "nodenetd_failover_active", group="uplinks", device=device) == 0
        assert value(s, "nodenetd_failover_healthy", group="uplinks", device=device) == 0
    assert value(s, "nodenetd_failover_group_running", group="uplinks", kind="route") == 0
    assert value(s, "nodenetd_failover_group_running", group="bond0", kind="bond") == 1


def test_failovers_by_reason_are_always_there():
    s = scrape()
    for reason, count in (("initial", 1), ("failover", 2), ("failback", 0), ("manual", 0),
                          ("no-usable-member", 0)):
        assert value(s, "nodenetd_failovers_total", group="bond0", reason=reason) == count
        assert value(s, "nodenetd_failovers_total", group="uplinks", reason=reason) == 0
    assert value(s, "nodenetd_failovers_total", group="bond0", reason="steady") is None
    assert value(s, "nodenetd_failover_errors_total", group="bond0") == 1
    assert value(s, "nodenetd_failover_last_timestamp_seconds", group="bond0") == 1.7000001e9
    assert value(s, "nodenetd_failover_transitions_total", group="bond0", reason="carrier") == 3
    assert value(s, "nodenetd_failover_notifications_total", group="bond0", frame="arp") == 3


def test_the_detection_histogram():
    s = scrape()
    g = {"group": "bond0"}
    assert value(s, "nodenetd_failover_detection_seconds_count", **g) == 2
    assert value(s, "nodenetd_failover_detection_seconds_bucket", **g, le="0.0025") == 1
    assert value(s, "nodenetd_failover_detection_seconds_bucket", **g, le="0.25") == 2
    assert value(s, "nodenetd_failover_detection_seconds_sum", **g) == 0.3
    assert value(s, "nodenetd_failover_detection_seconds_count", group="uplinks") == 0


def test_probe_series():
    s = scrape()
    eth0 = {"group": "bond0", "device": "eth0", "kind": "arp", "target": "192.0.2.1"}
    assert value(s, "nodenetd_probe_success", **eth0) == 1
    assert value(s, "nodenetd_probes_total", **eth0) == 10
    assert value(s, "nodenetd_probes_failed_total", **eth0) == 2
    assert value(s, "nodenetd_probe_rtt_seconds_count", **eth0) == 2
    assert value(s, "nodenetd_probe_rtt_seconds_bucket", **eth0, le="2.5e-05") == 0
    assert value(s, "nodenetd_probe_rtt_seconds_bucket", **eth0, le="5e-05") == 1
    assert value(s, "nodenetd_probe_rtt_seconds_bucket", **eth0, le="0.0002") == 2
    not_probing = {"group": "bond0", "device": "eth1", "kind": "arp", "target": "192.0.2.1"}
    assert value(s, "nodenetd_probe_success", **not_probing) == 0
    assert value(s, "nodenetd_probes_total", **not_probing) == 0
    waiting = {"group": "uplinks", "device": "a0", "kind": "icmp", "target": "203.0.113.10"}
    assert value(s, "nodenetd_probe_success", **waiting) == 0


# -- the registry --------------------------------------------------------------------------


def test_daemon_series_and_build_info():
    s = scrape()
    (build,) = [labels for name, labels in s if name == "nodenetd_build_info"]
    assert [k for k, _ in build] == ["python_version", "revision", "version"]
    assert value(s, "nodenetd_netlink_events_total", family="rtnetlink", event="newlink") == 7
    assert value(s, "nodenetd_netlink_events_total", family="rtnetlink", event="dellink") == 0
    assert value(s, "nodenetd_config_last_reload_successful") == 1
    assert value(s, "process_open_fds") > 0


def test_without_a_snapshot_the_scrape_still_answers():
    s = parse(registry_of(lambda: (None, False)).scrape())
    assert value(s, "nodenetd_collector_success", collector="snapshot") == 0
    assert value(s, "nodenetd_collector_success", collector="interfaces") == 0
    assert value(s, "nodenetd_collector_success", collector="process") == 1
    assert not [k for k in s if k[0].startswith("nodenetd_interface_")]


def test_a_stale_snapshot_is_served_and_flagged():
    s = scrape(fresh=False)
    assert value(s, "nodenetd_collector_success", collector="snapshot") == 0
    assert value(s, "nodenetd_collector_success", collector="tuning") == 1
    assert value(s, "nodenetd_interface_mtu_bytes", device="lab0") == 4000


def test_a_collector_that_raises_fails_alone_and_is_logged_once(caplog):
    class Broken:
        name = "broken"
        calls = 0

        def collect(self, snapshot):
            Broken.calls += 1
            raise ValueError("boom")

    snap = snapshot_of()
    registry = Registry([Broken(), TuningCollector()], lambda: (snap, True))
    first, second = parse(registry.scrape()), parse(registry.scrape())
    for s in (first, second):
        assert value(s, "nodenetd_collector_success", collector="broken") == 0
        assert value(s, "nodenetd_collector_success", collector="tuning") == 1
        assert value(s, "nodenetd_collector_duration_seconds", collector="broken") >= 0
    assert len([r for r in caplog.records if "collector broken failed" in r.message]) == 1


def test_the_textfile_variant_has_no_process_series():
    snap = snapshot_of()
    body = registry_of(lambda: (snap, True)).scrape(process=False)
    assert b"process_" not in body and b"nodenetd_build_info" in body


def test_every_family_has_help_and_a_valid_type():
    snap = snapshot_of()
    text = registry_of(lambda: (snap, True)).scrape().decode()
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        assert family.type in ("gauge", "counter", "histogram"), family.name
        assert family.name.startswith(("nodenetd_", "process_")), family.name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus)")
def test_the_full_exposition_passes_promtool_with_no_findings():
    snap = snapshot_of()
    body = registry_of(lambda: (snap, True), MetricsSettings(include=("*",))).scrape()
    proc = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                          timeout=60)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout
