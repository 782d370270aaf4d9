"""Queue steering on multi-queue veths in a namespace: RPS, RFS flow counts and XPS applied,
read back through sysfs inside the namespace (``grep`` over the queue files, the independent
witness) and through nodenetd's own reader, a no-op re-plan, restore to the exact
originals, and a channel change with the steering of its queues in one transaction. veth
changes its RX/TX queue counts with ``ethtool -L`` (a real kernel test, both directions)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nodenetd.cpuset import format_cpulist, format_mask, parse_cpulist, spread
from nodenetd.kernel.steering import SteeringFs, parse_interrupts
from tests.integration.daemon_lab import Daemon, eventually
from tests.integration.test_transaction import start_frozen_apply
from tests.lab.netns import REPO

pytestmark = pytest.mark.root

ATTRS = {"rx": ("rps_cpus", "rps_flow_cnt"), "tx": ("xps_cpus",)}


def machine() -> tuple[frozenset[int], int]:
    """Online CPUs and nr_cpu_ids (the bits of every mask the kernel prints)."""
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    possible = parse_cpulist(Path("/sys/devices/system/cpu/possible").read_text())
    return online, max(possible) + 1


def queue_files(node, nic: str) -> dict[str, str]:
    """Every queue's steering files as the kernel prints them, read with grep -H inside the
    namespace: {"rx-0/rps_cpus": "3", ...}."""
    base = f"/sys/class/net/{nic}/queues"
    queues = node.ns.run("ls", base).stdout.split()
    paths = [f"{base}/{q}/{a}" for q in queues for a in ATTRS[q.split("-")[0]]]
    out = node.ns.run("grep", "-H", "", *paths).stdout
    return {line.partition(":")[0].removeprefix(base + "/"): line.partition(":")[2]
            for line in out.splitlines()}


def nodenetd_reads(node, nic: str) -> dict[str, str]:
    """The same files through nodenetd's reader, run inside the namespace."""
    code = ("import json, sys\n"
            "from nodenetd.kernel.steering import QUEUE_ATTRS, SteeringFs\n"
            "fs = SteeringFs()\n"
            "q = fs.queues(sys.argv[1])\n"
            "out = {}\n"
            "for d, idx in (('rx', q.rx), ('tx', q.tx)):\n"
            "    for i in idx:\n"
            "        for a in QUEUE_ATTRS[d][:2 if d == 'rx' else 1]:\n"
            "            out[f'{d}-{i}/{a}'] = fs.read_queue(sys.argv[1], f'{d}-{i}', a)\n"
            "print(json.dumps(out))\n")
    proc = node.ns.run(sys.executable, "-c", code, nic,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(proc.stdout)


def write(node, nic: str, path: str, value: str) -> None:
    """Set a queue file with the shell, as an administrator would (not through nodenetd)."""
    node.ns.run("sh", "-c", 'echo "$1" > "/sys/class/net/$2/queues/$3"', "-", value, nic, path)


def steered(nic_files: dict[str, str], queues: int, flow: int) -> dict[str, str]:
    """What the profile below gives a NIC with ``queues`` RX and TX queues."""
    online, bits = machine()
    expected = {}
    for q in range(queues):
        expected[f"rx-{q}/rps_cpus"] = format_mask(online, bits)
        expected[f"rx-{q}/rps_flow_cnt"] = str(flow)
        expected[f"tx-{q}/xps_cpus"] = format_mask(spread(online, q, queues), bits)
    return expected


STEERING = """\
    steering:
      rps: {cpus: all, flow_count: 4096}
      xps: all
"""


def profile(channels: str = "") -> str:
    return ("interfaces:\n  - name: lab-nics\n    match: {name: [\"lab*\"]}\n"
            + (f"    channels: {channels}\n" if channels else "") + STEERING)


def transactions(node) -> int:
    """How many transactions the journal log has closed (a re-plan within a transaction
    re-records its begin record with the settings it adds; it ends once)."""
    lines = (node.state_dir / "journal.log").read_text().splitlines()
    return sum(1 for line in lines if json.loads(line)["t"] == "end")


def test_steering_applies_reads_back_is_idempotent_and_restores_the_originals(node):
    nics = node.nics(2, queues=4)
    # originals that are not the kernel's defaults, so restore has something to prove
    write(node, "lab1", "rx-2/rps_cpus", "1")
    write(node, "lab1", "rx-2/rps_flow_cnt", "256")
    write(node, "lab1", "tx-3/xps_cpus", "1")
    before = {nic: queue_files(node, nic) for nic in nics}
    assert before["lab1"]["rx-2/rps_flow_cnt"] == "256"
    node.write_profile("steer", profile())
    node.write_config(["steer"])

    applied = node.ctl("apply")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    for nic in nics:
        now = queue_files(node, nic)
        assert now == steered(now, 4, 4096), nic
        assert nodenetd_reads(node, nic) == now
    assert "rps_sock_flow_entries" in applied.stdout  # the RFS warning: not in this namespace

    again = node.ctl("plan", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout
    assert "Nothing to change" in again.stdout
    assert node.ctl_json("status")["converged"]

    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert {nic: queue_files(node, nic) for nic in nics} == before
    assert node.journal["originals"] == {}


def test_the_journal_holds_each_queues_own_original(node):
    node.nics(1, queues=2)
    write(node, "lab0", "rx-1/rps_cpus", "1")
    node.write_profile("steer", profile())
    node.write_config(["steer"])
    assert node.ctl("apply").returncode == 0
    originals = node.journal["originals"]
    assert originals["steering/lab0/rx-0.rps_cpus"]["value"] == "0"
    assert originals["steering/lab0/rx-1.rps_cpus"]["value"] == "1"
    assert originals["steering/lab0/rx-1.rps_flow_cnt"]["value"] == 0
    assert "steering/lab0/tx-1.xps_cpus" in originals


@pytest.mark.parametrize(("start", "target"), [(4, 2), (2, 4)], ids=["shrink", "grow"])
def test_a_channel_change_and_the_steering_of_its_queues_are_one_transaction(
        node, start, target):
    (nic,) = node.nics(1, queues=4)
    if start != 4:
        node.ns.run("ethtool", "-L", nic, "rx", str(start), "tx", str(start))
    # queue 3 (when there) gets originals the channel shrink destroys: restore brings the
    # queue back with them
    if start == 4:
        write(node, nic, "rx-3/rps_cpus", "1")
        write(node, nic, "tx-3/xps_cpus", "1")
    before = queue_files(node, nic)
    node.write_profile("steer", profile(f"{{rx: {target}, tx: {target}}}"))
    node.write_config(["steer"])

    planned = node.ctl("plan")
    assert "re-planned for the queues there are after the channels are set" in planned.stdout
    applied = node.ctl("apply")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    channels = node.ns.channels(nic)
    assert (channels["rx"], channels["tx"]) == (str(target), str(target))
    now = queue_files(node, nic)
    assert now == steered(now, target, 4096)  # every queue there is now, and only those
    assert nodenetd_reads(node, nic) == now
    assert transactions(node) == 1
    assert node.journal["pending"] is None

    assert node.ctl("plan", "--detailed-exitcode").returncode == 0

    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    channels = node.ns.channels(nic)
    assert (channels["rx"], channels["tx"]) == (str(start), str(start))
    assert queue_files(node, nic) == before
    assert node.journal["originals"] == {}


@pytest.mark.parametrize("after_writes", [1, 3], ids=["before-its-steering", "mid-steering"])
def test_killed_between_a_channel_change_and_its_steering_restore_is_exact(node, after_writes):
    """kill -9 after the channel change (1 write) or in the middle of the steering re-planned
    after it (the failpoint counts each round of writes): the journal holds both, and
    restore brings the queues back, then their originals."""
    (nic,) = node.nics(1, queues=4)
    write(node, nic, "rx-3/rps_cpus", "1")
    write(node, nic, "tx-2/xps_cpus", "1")
    before = queue_files(node, nic)
    node.write_profile("steer", profile("{rx: 2, tx: 2}"))
    node.write_config(["steer"])
    proc = start_frozen_apply(node, after_writes=after_writes)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert node.ns.channels(nic)["rx"] == "2"  # the channel change happened
    assert node.journal["pending"] is not None
    restored = node.ctl("restore")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert node.ns.channels(nic)["rx"] == "4"
    assert queue_files(node, nic) == before
    assert node.journal["originals"] == {} and node.journal["pending"] is None


def test_the_daemon_steers_queues_added_behind_its_back_and_reloads_without_writes(node):
    """Channels are not in the profile: someone adds queues (ethtool -L); the ethtool
    notification makes the daemon plan the interface again and steer the new queues. A
    reload then restores nothing (each queue's original is still managed) and writes
    nothing."""
    (nic,) = node.nics(1, queues=4)
    node.ns.run("ethtool", "-L", nic, "rx", "2", "tx", "2")
    node.write_profile("steer", profile())
    node.write_config(["steer"])
    daemon = Daemon.start(node)
    try:
        daemon.wait_ready()
        assert queue_files(node, nic) == steered({}, 2, 4096)
        node.ns.run("ethtool", "-L", nic, "rx", "4", "tx", "4")
        assert eventually(lambda: queue_files(node, nic) == steered({}, 4, 4096), timeout=30), \
            daemon.log
        assert "steering.rx-3.rps_cpus" in daemon.log
        originals = node.journal["originals"]
        assert originals["steering/lab0/rx-3.rps_cpus"]["value"] == "0"  # as it was created
        reloaded = node.ctl("reload")
        assert reloaded.returncode == 0, reloaded.stderr
        assert "reloaded: 0 change(s), 0 setting(s) no longer managed restored" in \
            reloaded.stdout
        assert node.journal["originals"] == originals
    finally:
        assert daemon.stop() == 0


def test_cpus_this_machine_lacks_are_skipped_with_the_reason(node):
    (nic,) = node.nics(1, queues=2)
    online, _ = machine()
    beyond = f"{max(online) + 1}-{max(online) + 4}"
    node.write_profile("steer", "interfaces:\n  - match: {name: [lab0]}\n    steering:\n"
                                f"      rps: \"{beyond}\"\n      xps: \"{beyond}\"\n")
    node.write_config(["steer"])
    before = queue_files(node, nic)
    planned = node.ctl_json("plan")
    assert not planned["changes"]
    reasons = {s["setting"]: s["reason"] for s in planned["skipped"]}
    assert reasons == {key: f"CPUs {beyond} are not online on this machine (online: "
                            f"{format_cpulist(online)})" for key in ("rps_cpus", "xps_cpus")}
    assert node.ctl("apply").returncode == 0
    assert queue_files(node, nic) == before
    strict = node.ctl("apply", "--strict")
    assert strict.returncode == 1 and "not online on this machine" in strict.stderr


def test_a_read_only_sysfs_skips_steering_with_the_reason(node):
    """What the hardened systemd unit gives nodenetd (ProtectKernelTunables: /sys read-only),
    made here with a private mount namespace whose sysfs is remounted read-only."""
    (nic,) = node.nics(1, queues=2)
    node.write_profile("steer", profile())
    node.write_config(["steer"])
    before = queue_files(node, nic)
    argv = node.ns.exec_argv("unshare", "-m", "sh", "-c", 'mount -o remount,ro /sys && exec "$@"',
                             "-", sys.executable, "-m", "nodenetd.cli.main", "apply",
                             "--config", str(node.config), "-o", "json")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    reply = json.loads(proc.stdout)
    assert not reply["changes"] and not reply["applied"]
    assert {s["setting"] for s in reply["skipped"]} == {"rps_cpus", "rps_flow_cnt", "xps_cpus"}
    assert all("ReadWritePaths=/sys/devices" in s["reason"] for s in reply["skipped"])
    assert queue_files(node, nic) == before


def test_interrupt_affinity_of_a_virtual_nic_is_skipped_with_the_reason(node):
    node.nics(1, queues=2)
    node.write_profile("steer", "interfaces:\n  - match: {name: [lab0]}\n    steering:\n"
                                "      irq_affinity: numa-local\n")
    node.write_config(["steer"])
    (skip,) = node.ctl_json("plan")["skipped"]
    assert skip["kind"] == "irq_affinity"
    assert "a virtual interface has no queue interrupts" in skip["reason"]


def test_a_running_irqbalance_is_found_with_what_it_leaves_alone():
    """A process named irqbalance (a python that renames itself through /proc/self/comm, as
    prctl(PR_SET_NAME) does, whatever launcher started it) with irqbalance's own options on
    its command line."""
    rename = ("import sys, time\n"
              "open('/proc/self/comm', 'w').write('irqbalance')\n"
              "print('ready', flush=True)\n"
              "time.sleep(30)\n")
    process = subprocess.Popen([sys.executable, "-c", rename, "--foreground", "--banirq=77",
                                "--banmod=mlx5_core"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ready"
        assert Path(f"/proc/{process.pid}/comm").read_text().strip() == "irqbalance"
        found = SteeringFs().irqbalance()
        assert found is not None and found.pid == process.pid
        assert found.banned_irqs == {77} and found.banned_modules == {"mlx5_core"}
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
    assert SteeringFs().irqbalance() is None


def test_the_hosts_nics_map_to_their_queue_interrupts():
    """Read-only, on this machine's own NICs: every queue interrupt nodenetd finds is one of
    the device's MSI vectors, carries the name /proc/interrupts gives it, and serves a
    queue the device has."""
    fs = SteeringFs()
    names = parse_interrupts(Path("/proc/interrupts").read_text())
    checked = 0
    for ifname in sorted(os.listdir("/sys/class/net")):
        nic = fs.nic_irqs(ifname, names)
        if nic is None or not nic.queues:
            continue
        queues = fs.queues(ifname)
        for queue in nic.queues:
            assert queue.irq in nic.irqs
            assert queue.name in names[queue.irq]
            assert queue.index in (*queues.rx, *queues.tx) or queue.index >= len(queues.rx)
        checked += 1
    if not checked:
        pytest.skip("no NIC with named MSI queue interrupts on this machine")
