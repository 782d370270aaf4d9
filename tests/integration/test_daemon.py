"""nodenetd inside a namespace lab: hotplug, drift, reload, stop, crash recovery, the lock.

The safety-net timers are set far beyond each test's length, so whatever the daemon does
here it does because of an event."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.daemon_lab import Daemon, eventually

pytestmark = pytest.mark.root

PROFILE = """\
sysctls:
  net.ipv4.tcp_slow_start_after_idle: 0
interfaces:
  - match: {name: ["lab*"]}
    mtu: 4000
    txqueuelen: 2500
    features: {gro: true}
    sysctls: {net.ipv4.conf.IF.rp_filter: 2}
"""


def daemon_config(node, **settings) -> str:
    values = {"control_socket": str(node.root / "ctl.sock"), "sysctl_interval": 3600,
              "resync_interval": 3600, **settings}
    return "daemon:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in values.items())


@pytest.fixture
def running(node):
    """A node with two NICs, the lab profile, and nodenetd running and READY."""
    node.nics(2)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node))
    daemon = Daemon.start(node)
    daemon.wait_ready()
    yield node, daemon
    daemon.stop(signal.SIGKILL)


def mtu(node, name: str) -> int:
    return node.ns.link(name)["mtu"]


def test_start_applies_the_profile_and_reports_ready(running):
    node, daemon = running
    assert [mtu(node, n) for n in ("lab0", "lab1")] == [4000, 4000]
    assert node.ns.sysctl("net.ipv4.tcp_slow_start_after_idle") == "0"
    ready = next(m for m in daemon.messages if "READY=1" in m)
    assert "STATUS=2 interface(s) managed" in ready


def test_interfaces_created_later_are_tuned_from_events(running):
    node, _ = running
    for i in range(10, 30):
        node.ns.run("ip", "link", "add", "name", f"lab{i}", "type", "veth",
                    "peer", "name", f"peer{i}")
    names = [f"lab{i}" for i in range(10, 30)]

    def tuned():
        links = {link["ifname"]: link for link in node.ns.json("ip", "-j", "link")}
        return all(links[n]["mtu"] == 4000 and links[n]["txqlen"] == 2500 for n in names)

    assert eventually(tuned, timeout=10)
    assert node.ns.features("lab29")["generic-receive-offload"] == "on"
    assert node.ns.sysctl("net.ipv4.conf.lab29.rp_filter") == "2"
    # the peers do not match lab*: untouched
    assert node.ns.link("peer10")["mtu"] == 1500


def test_drift_is_corrected_and_logged_with_fields(running):
    node, daemon = running
    node.ns.run("ip", "link", "set", "lab0", "mtu", "1500")
    node.ns.run("ethtool", "-K", "lab1", "gro", "off")
    assert eventually(lambda: mtu(node, "lab0") == 4000)
    assert eventually(lambda: node.ns.features("lab1")["generic-receive-offload"] == "on")
    assert eventually(lambda: "lab0 link.mtu: 1500 -> 4000 (drift" in daemon.log)
    assert "lab1 features.rx-gro: off -> on (drift" in daemon.log


def test_deleted_interfaces_leave_the_journal_without_errors(running):
    node, daemon = running
    assert any(k.startswith("link/lab1/") for k in node.journal["originals"])
    node.ns.run("ip", "link", "del", "lab1")
    assert eventually(lambda: not any("/lab1/" in k for k in node.journal["originals"]))
    assert "ERROR" not in daemon.log


def test_a_key_someone_keeps_rewriting_is_not_fought_forever(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node, backoff_corrections=3, backoff_window=600))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        for _ in range(6):
            node.ns.run("ip", "link", "set", "lab0", "mtu", "1400")
            eventually(lambda: mtu(node, "lab0") == 4000 or "conflict" in daemon.log, 5)
        assert eventually(lambda: "conflict: something else keeps setting lab0 link.mtu"
                          in daemon.log)
        assert mtu(node, "lab0") == 1400  # left alone after backing off
        assert daemon.log.count("lab0 link.mtu: 1400 -> 4000 (drift") == 2
    finally:
        daemon.stop(signal.SIGKILL)


def test_observe_mode_reports_drift_and_changes_nothing(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node, mode="observe"))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert mtu(node, "lab0") == 4000  # the profile itself is applied
        node.ns.run("ip", "link", "set", "lab0", "mtu", "1500")
        assert eventually(lambda: "drift (observe only): lab0 link.mtu is 1500" in daemon.log)
        assert mtu(node, "lab0") == 1500
    finally:
        daemon.stop(signal.SIGKILL)


def test_sysctls_are_rechecked_on_their_timer(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node, sysctl_interval=1))
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        node.ns.run("sysctl", "-qw", "net.ipv4.conf.lab0.rp_filter=0")
        node.ns.run("sysctl", "-qw", "net.ipv4.tcp_slow_start_after_idle=1")
        assert eventually(lambda: node.ns.sysctl("net.ipv4.conf.lab0.rp_filter") == "2", 10)
        assert eventually(
            lambda: node.ns.sysctl("net.ipv4.tcp_slow_start_after_idle") == "0", 10)
    finally:
        daemon.stop(signal.SIGKILL)


def watch_links(node) -> tuple[subprocess.Popen, list[str]]:
    """`ip monitor link` in the namespace: every link message while it runs."""
    proc = subprocess.Popen(node.ns.exec_argv("ip", "monitor", "link"),
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    return proc, lines


def test_reload_applies_only_the_difference(running):
    node, daemon = running
    node.write_profile("lab", PROFILE.replace("mtu: 4000", "mtu: 5000"))
    reply = node.ctl("reload")
    assert reply.returncode == 0, reply.stderr
    assert [mtu(node, n) for n in ("lab0", "lab1")] == [5000, 5000]
    assert any("RELOADING=1" in m for m in daemon.receive(0.5))


def test_sighup_reloads_and_a_setting_removed_from_the_profile_is_restored(running):
    node, daemon = running
    node.write_profile("lab", PROFILE.replace("    txqueuelen: 2500\n", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: node.ns.link("lab0")["txqlen"] == 1000)
    assert mtu(node, "lab0") == 4000


def test_invalid_reload_is_rejected_and_the_running_config_stays(running):
    node, _daemon = running
    node.write_profile("lab", PROFILE.replace("mtu: 4000", "mtu: huge"))
    reply = node.ctl("reload")
    assert reply.returncode == 3
    assert "stays in force" in reply.stderr and "lab.yaml:5" in reply.stderr
    node.ns.run("ip", "link", "set", "lab0", "mtu", "1500")  # still enforced
    assert eventually(lambda: mtu(node, "lab0") == 4000)


def test_noop_reload_flaps_nothing_and_writes_nothing(running):
    node, _daemon = running
    journal = node.state_dir / "journal.log"
    before = journal.stat()
    monitor, lines = watch_links(node)
    try:
        reply = node.ctl("reload")
        assert reply.returncode == 0, reply.stderr
        assert "reloaded: 0 change(s)" in reply.stdout
        eventually(lambda: False, timeout=0.5)  # give stray events time to show
    finally:
        monitor.terminate()
    assert lines == []
    after = journal.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_sigterm_keeps_the_tuning_by_default(running):
    node, daemon = running
    assert daemon.stop() == 0
    assert mtu(node, "lab0") == 4000
    assert node.journal["originals"]["link/lab0/mtu"]["value"] == 1500
    assert any("STOPPING=1" in m for m in daemon.messages)


def test_sigterm_restores_when_configured(node):
    node.nics(1)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node, on_stop="restore"))
    daemon = Daemon.start(node)
    daemon.wait_ready()
    assert mtu(node, "lab0") == 4000
    assert daemon.stop() == 0
    assert mtu(node, "lab0") == 1500
    assert node.ns.sysctl("net.ipv4.tcp_slow_start_after_idle") == "1"
    assert node.journal["originals"] == {}


def test_kill9_mid_apply_then_restart_recovers_from_the_journal(node):
    nics = node.nics(20)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"], daemon_config(node))
    crashed = Daemon.start(node, env={"NODENETD_FAILPOINT_STOP_AFTER_WRITES": "30"})
    stat = Path(f"/proc/{crashed.proc.pid}/stat")
    eventually(lambda: stat.read_text().split(") ")[1][0] == "T")
    crashed.stop(signal.SIGKILL)
    assert node.journal["pending"] is not None
    assert 0 < sum(mtu(node, n) == 4000 for n in nics) < len(nics)  # really mid-apply

    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert "recovering an interrupted apply" in daemon.log
        assert all(mtu(node, n) == 4000 for n in nics)
        assert node.journal["pending"] is None
        assert node.journal["originals"]["link/lab0/mtu"]["value"] == 1500
    finally:
        daemon.stop()
    assert node.ctl("restore").returncode == 0
    assert all(mtu(node, n) == 1500 for n in nics)


def test_clients_go_through_the_daemon_and_never_mutate_alongside_it(running):
    node, _daemon = running
    results = []
    threads = [threading.Thread(target=lambda: results.append(node.ctl("apply")))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    standalone = node.ctl("apply", "--standalone")
    assert standalone.returncode == 4
    assert "pid" in standalone.stderr
