"""/metrics of a running nodenetd in a namespace lab: the values move with real events.

A pulled cable moves carrier changes and failovers, a blackholed probe target moves probe
failures, a setting changed behind nodenetd's back moves drift, a removed veth drops its
series; every scrape passes ``promtool check metrics``; the textfile for node_exporter is
written atomically and removed on stop. Scrapes are made from the test process through a
socket opened inside the lab namespace (each namespace has its own loopback, so every daemon
listens on the default 127.0.0.1:10037).
"""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import subprocess
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodenetd.config.metrics import DEFAULT_PORT
from nodenetd.kernel.netlink import in_netns
from tests.integration.daemon_lab import Daemon, eventually
from tests.integration.failover_lab import FailoverLab, group_yaml, member_yaml
from tests.lab.netns import Netns
from tests.lab.node import Node
from tests.lab.uplinks import SERVER_V4, UplinkLab, gateway

pytestmark = pytest.mark.root

PROFILE = """\
sysctls:
  net.ipv4.tcp_slow_start_after_idle: 0
interfaces:
  - match: {name: ["lab*"]}
    mtu: 4000
    features: {gro: true}
"""


# -- scraping --------------------------------------------------------------------------------


def get(ns: Netns, path: str = "/metrics", port: int = DEFAULT_PORT,
        headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    sock = in_netns(ns.name, lambda: socket.create_connection(("127.0.0.1", port), timeout=10))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.sock = sock
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Scrape:
    """One parsed scrape: ``scrape.value(name, **labels)``."""

    def __init__(self, body: bytes) -> None:
        self.text = body.decode()
        self.samples: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def devices(self) -> set[str]:
        """Devices with per-interface series (nodenetd_interface_*)."""
        return {dict(labels)["device"] for name, labels in self.samples
                if name.startswith("nodenetd_interface_")}


def scrape(ns: Netns, **kw) -> Scrape:
    status, body = get(ns, **kw)
    assert status == 200, body
    return Scrape(body)


def promtool_findings(text: str) -> str:
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return (proc.stdout + proc.stderr).strip()


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool (Debian package prometheus) is missing")


def daemon_config(node, extra: str = "", **settings) -> str:
    values = {"control_socket": str(node.root / "ctl.sock"), "sysctl_interval": 3600,
              "resync_interval": 3600, **settings}
    return ("daemon:\n" + "".join(f"  {k}: {v}\n" for k, v in values.items()) + extra)


@pytest.fixture
def tuned(node):
    """Two lab NICs tuned by the lab profile, nodenetd running with default metrics."""
    node.nics(2)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node))
    daemon = Daemon.start(node)
    daemon.wait_ready()
    yield node, daemon
    daemon.stop(signal.SIGKILL)


# -- tuning and interfaces ---------------------------------------------------------------------


@needs_promtool
def test_a_scrape_reports_the_tuned_node_and_passes_promtool(tuned):
    node, _ = tuned
    status, landing = get(node.ns, "/")
    assert status == 200 and b'href="/metrics"' in landing
    s = scrape(node.ns)
    assert promtool_findings(s.text) == ""
    assert s.value("nodenetd_interface_info", device="lab0", kind="veth", driver="veth",
                   master="", profile="lab") == 1
    assert s.value("nodenetd_interface_mtu_bytes", device="lab0") == 4000
    assert s.value("nodenetd_interface_carrier", device="lab0") == 1
    assert s.value("nodenetd_interface_operstate", device="lab0", operstate="up") == 1
    assert s.value("nodenetd_interface_speed_bytes", device="lab0") == 10_000 * 125_000
    assert s.value("nodenetd_setting_in_sync", kind="link", device="lab0", setting="mtu") == 1
    assert s.value("nodenetd_setting_in_sync", kind="sysctl", device="",
                   setting="net.ipv4.tcp_slow_start_after_idle") == 1
    assert s.value("nodenetd_profile_applies_total", profile="lab") == 1
    assert s.value("nodenetd_profile_last_apply_success", profile="lab") == 1
    assert s.value("nodenetd_tuning_interfaces_managed") == 2
    assert s.value("nodenetd_journal_originals", kind="link") == 2
    for collector in ("snapshot", "daemon", "interfaces", "interface_stats", "tuning",
                      "failover", "probes", "process"):
        assert s.value("nodenetd_collector_success", collector=collector) == 1, collector
    # the switch-side peers are unmanaged veths: not reported by default
    assert s.devices() == {"lab0", "lab1"}


def test_traffic_moves_the_64_bit_counters(tuned):
    node, _ = tuned
    node.ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lab0")
    node.switch.run("ip", "addr", "add", "192.0.2.2/24", "dev", "labp0")
    before = scrape(node.ns)
    node.ns.run("ping", "-q", "-c", "20", "-i", "0.01", "-s", "1000", "192.0.2.2")
    after = scrape(node.ns)
    sent = (after.value("nodenetd_interface_transmit_bytes_total", device="lab0")
            - before.value("nodenetd_interface_transmit_bytes_total", device="lab0"))
    packets = (after.value("nodenetd_interface_receive_packets_total", device="lab0")
               - before.value("nodenetd_interface_receive_packets_total", device="lab0"))
    assert sent >= 20 * 1000 and packets >= 20
    witness = node.ns.json("ip", "-j", "-s", "link", "show", "dev", "lab0")[0]["stats64"]
    assert witness["tx"]["bytes"] >= after.value("nodenetd_interface_transmit_bytes_total",
                                                 device="lab0")


def test_a_setting_changed_behind_its_back_moves_drift(tuned):
    node, daemon = tuned
    before = scrape(node.ns)
    assert before.value("nodenetd_drift_corrections_total", kind="link") == 0

    node.ns.run("ip", "link", "set", "lab0", "mtu", "1500")

    assert eventually(lambda: node.ns.link("lab0")["mtu"] == 4000)
    after = scrape(node.ns)
    assert after.value("nodenetd_drift_corrections_total", kind="link") == 1
    assert after.value("nodenetd_drift_detected_total") >= 1
    assert after.value("nodenetd_profile_applies_total", profile="lab") == 2
    assert after.value("nodenetd_setting_in_sync", kind="link", device="lab0",
                       setting="mtu") == 1
    assert after.value("nodenetd_drift_last_check_timestamp_seconds") >= before.value(
        "nodenetd_drift_last_check_timestamp_seconds")
    assert "lab0 link.mtu: 1500 -> 4000 (drift" in daemon.log


def test_drift_in_observe_mode_stays_out_of_sync(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node, mode="observe"))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        node.ns.run("ip", "link", "set", "lab0", "mtu", "1500")
        in_sync = {"kind": "link", "device": "lab0", "setting": "mtu"}
        assert eventually(lambda: scrape(node.ns).value("nodenetd_setting_in_sync",
                                                        **in_sync) == 0)
        s = scrape(node.ns)
        assert s.value("nodenetd_drift_detected_total") >= 1
        assert s.value("nodenetd_drift_corrections_total", kind="link") == 0
        assert s.value("nodenetd_tuning_mode", mode="observe") == 1
        assert node.ns.link("lab0")["mtu"] == 1500
    finally:
        daemon.stop(signal.SIGKILL)


def test_a_removed_veth_drops_its_series(tuned):
    node, _ = tuned
    node.ns.run("ip", "link", "add", "lab9", "type", "veth", "peer", "name", "peer9")
    assert eventually(lambda: "lab9" in scrape(node.ns).devices())
    s = scrape(node.ns)
    assert s.value("nodenetd_setting_in_sync", kind="link", device="lab9", setting="mtu") == 1
    assert s.value("nodenetd_tuning_hotplug_tuned_total") == 1

    node.ns.run("ip", "link", "del", "lab9")

    assert eventually(lambda: "lab9" not in scrape(node.ns).devices())
    s = scrape(node.ns)
    assert not [key for key in s.samples if "lab9" in str(key)]  # settings' series too
    assert s.devices() == {"lab0", "lab1"}


def test_include_and_exclude_choose_the_interfaces(node):
    node.nics(2)
    node.ns.run("ip", "link", "add", "kube0", "type", "veth", "peer", "name", "kubep0")
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(
        node, extra="metrics:\n  interfaces: {include: ['kube*'], exclude: ['lab1']}\n"))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert scrape(node.ns).devices() == {"lab0", "kube0", "kubep0"}
    finally:
        daemon.stop(signal.SIGKILL)


def test_concurrent_scrapes_during_events_all_succeed(tuned):
    node, _ = tuned
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                results.append(get(node.ns))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for i in range(10):  # events while scraping: drift and hotplug
        node.ns.run("ip", "link", "set", "lab0", "mtu", str(1500 + i))
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 30
    for status, body in results:
        assert status == 200
        s = Scrape(body)
        assert s.value("nodenetd_collector_success", collector="interfaces") == 1


@needs_promtool
def test_the_textfile_is_written_atomically_and_removed_on_stop(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    textfile = node.root / "textfile" / "nodenetd.prom"
    textfile.parent.mkdir()
    node.write_config(["lab"], daemon_config(
        node, extra=f"metrics:\n  listen: false\n  textfile: {{path: {textfile}, "
                    "interval: 1}\n"))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert eventually(textfile.exists)
        text = textfile.read_text()
        assert promtool_findings(text) == ""
        assert 'nodenetd_interface_mtu_bytes{device="lab0"} 4000' in text
        assert "process_" not in text  # node_exporter exports its own process_*
        assert oct(textfile.stat().st_mode & 0o777) == "0o644"
        with pytest.raises(ConnectionRefusedError):
            get(node.ns)  # listen: false
        assert sorted(p.name for p in textfile.parent.iterdir()) == ["nodenetd.prom"]
    finally:
        assert daemon.stop() == 0
    assert not textfile.exists()


def test_a_taken_port_leaves_the_daemon_running_without_metrics(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node))

    def squat() -> socket.socket:
        sock = socket.socket()
        sock.bind(("127.0.0.1", DEFAULT_PORT))
        sock.listen()
        return sock

    squatter = in_netns(node.ns.name, squat)
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert "metrics: cannot serve on 127.0.0.1:10037" in daemon.log
        assert node.ns.link("lab0")["mtu"] == 4000  # tuning goes on
    finally:
        daemon.stop(signal.SIGKILL)
        squatter.close()


def test_a_reload_that_would_expose_metrics_unprotected_is_rejected(tuned):
    node, _ = tuned
    config = node.config.read_text()
    node.config.write_text(config + 'metrics: {listen: "0.0.0.0:10037"}\n')
    reply = node.ctl("reload")
    assert reply.returncode == 3, reply.stdout + reply.stderr
    assert "beyond loopback" in reply.stderr and "nodenetd.yaml:" in reply.stderr
    s = scrape(node.ns)  # still served, from the running config
    assert s.value("nodenetd_config_last_reload_successful") == 0
    assert s.value("nodenetd_config_reload_failures_total") == 1
    node.config.write_text(config)
    assert node.ctl("reload").returncode == 0
    s = scrape(node.ns)
    assert s.value("nodenetd_config_last_reload_successful") == 1
    assert s.value("nodenetd_config_reloads_total") == 1


# -- failover and probes -----------------------------------------------------------------------


@pytest.fixture
def lab(make_netns, tmp_path):
    uplinks = UplinkLab.build(make_netns)
    lab = FailoverLab(uplinks, Node(uplinks.node, None, tmp_path))
    yield lab
    lab.stop()


@needs_promtool
def test_a_pulled_cable_moves_carrier_changes_and_failovers(lab):
    lab.start()
    lab.wait_active("a0")
    before = scrape(lab.ns)
    assert promtool_findings(before.text) == ""
    g = {"group": "uplinks"}
    assert before.value("nodenetd_failover_active", **g, device="a0") == 1
    assert before.value("nodenetd_failover_active", **g, device="b0") == 0
    assert before.value("nodenetd_failover_healthy", **g, device="a0") == 1
    assert before.value("nodenetd_failovers_total", **g, reason="failover") == 0
    assert before.value("nodenetd_failover_detection_seconds_count", **g) == 0
    assert before.value("nodenetd_failover_group_running", **g, kind="route") == 1
    downs = before.value("nodenetd_interface_carrier_down_changes_total", device="a0")

    lab.uplinks.cut("a0")
    lab.wait_active("b0")

    after = scrape(lab.ns)
    assert after.value("nodenetd_failover_active", **g, device="a0") == 0
    assert after.value("nodenetd_failover_active", **g, device="b0") == 1
    assert after.value("nodenetd_failover_healthy", **g, device="a0") == 0
    assert after.value("nodenetd_failover_usable", **g, device="a0") == 0
    assert after.value("nodenetd_failovers_total", **g, reason="failover") == 1
    assert after.value("nodenetd_failover_transitions_total", **g, reason="carrier") >= 1
    assert after.value("nodenetd_failover_detection_seconds_count", **g) == 1
    assert after.value("nodenetd_failover_detection_seconds_bucket", **g, le="+Inf") == 1
    assert after.value("nodenetd_failover_last_timestamp_seconds", **g) > 0
    assert after.value("nodenetd_failover_members_healthy", **g) == 1
    assert after.value("nodenetd_interface_carrier", device="a0") == 0
    operstate = lab.ns.link("a0")["operstate"].lower()  # the witness
    assert operstate != "up"
    assert after.value("nodenetd_interface_operstate", device="a0", operstate=operstate) == 1
    assert after.value("nodenetd_interface_operstate", device="a0", operstate="up") == 0
    assert after.value("nodenetd_interface_carrier_down_changes_total",
                       device="a0") == downs + 1
    assert promtool_findings(after.text) == ""


def test_a_blackholed_probe_target_moves_probe_failures(lab):
    lab.start()
    lab.wait_active("a0")
    icmp = {"group": "uplinks", "device": "a0", "kind": "icmp", "target": SERVER_V4}
    arp = {"group": "uplinks", "device": "a0", "kind": "arp", "target": gateway("a0")}
    assert eventually(lambda: scrape(lab.ns).value("nodenetd_probe_success", **icmp) == 1)
    before = scrape(lab.ns)
    assert before.value("nodenetd_probes_total", **icmp) > 0
    assert before.value("nodenetd_probe_rtt_seconds_count", **icmp) > 0
    failed = before.value("nodenetd_probes_failed_total", **icmp)

    lab.uplinks.blackhole("a0")

    assert eventually(lambda: scrape(lab.ns).value("nodenetd_probe_success", **icmp) == 0)
    after = scrape(lab.ns)
    assert after.value("nodenetd_probes_failed_total", **icmp) >= failed + 3  # fall: 3
    assert after.value("nodenetd_probe_success", **arp) == 1  # the router still answers
    assert after.value("nodenetd_probes_failed_total", **arp) == before.value(
        "nodenetd_probes_failed_total", **arp)
    assert after.value("nodenetd_failover_active", group="uplinks", device="a0") == 1  # any

    lab.uplinks.blackhole("a0", on=False)
    assert eventually(lambda: scrape(lab.ns).value("nodenetd_probe_success", **icmp) == 1)


def test_an_absent_member_is_still_reported_as_zero(lab):
    members = member_yaml("a0", 100) + member_yaml("b0", 50).replace("b0", "zz9")
    lab.start(group_yaml(members=members))
    lab.wait_active("a0")
    s = scrape(lab.ns)
    g = {"group": "uplinks"}
    assert s.value("nodenetd_failover_active", **g, device="a0") == 1
    assert s.value("nodenetd_failover_active", **g, device="zz9") == 0
    assert s.value("nodenetd_failover_healthy", **g, device="zz9") == 0
    assert s.value("nodenetd_failover_members", **g) == 2
    zz9 = {**g, "device": "zz9", "kind": "icmp", "target": SERVER_V4}
    assert s.value("nodenetd_probe_success", **zz9) == 0
    assert s.value("nodenetd_probes_total", **zz9) == 0
