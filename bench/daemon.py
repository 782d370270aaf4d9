"""bench/daemon: nodenetd as a service, against a udev-rule-plus-fork tuner (one shell forked
per new interface running ip/ethtool/sysctl, as udev RUN+= rules and tuned's hotplug
scripts do), measured in the same run.

1. Idle: 500 managed veths, the daemon READY, then CPU over 60 s (target < 0.5 % of one
   core, no busy polling) and RSS (target < 60 MB).
2. Hotplug: 1000 veths created at 100 per second; latency from the kernel announcing a new
   interface to its MTU being the profile's (nodenetd applies MTU after offloads and before
   per-interface sysctls), p50/p99 (target p99 < 50 ms), and that every one was tuned.

    .venv/bin/python -m bench.daemon [--idle-seconds 60] [--managed 500] [--hotplug 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.apply_scale import machine
from tests.lab.netns import REPO, Netns

PROFILE = """\
interfaces:
  - match: {name: ["h*", "m*"]}
    mtu: 4000
    txqueuelen: 2500
    features: {gro: true}
    sysctls: {net.ipv4.conf.IF.rp_filter: 2}
"""

# The baseline: what a udev rule with RUN+= does, one fork per new interface. The MTU is set
# last so that, as for nodenetd, the MTU event marks the interface's tuning as complete.
BASELINE = r"""
ip -o monitor link | while read -r index name rest; do
    name=${name%:}; name=${name%@*}
    case "$name" in h*) ;; *) continue ;; esac
    case "$rest" in *"mtu 4000"*) continue ;; esac
    sh -c "ethtool -K $name gro on; sysctl -qw net.ipv4.conf.$name.rp_filter=2;
           ip link set dev $name mtu 4000 txqueuelen 2500" &
done
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and every live descendant (the baseline is a shell pipeline)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        pending += [int(c) for c in children]
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def create_veths(ns: Netns, peer: Netns, prefix: str, count: int, rate: float | None) -> None:
    """Create veths through one `ip -batch -`, paced at ``rate`` per second if given."""
    proc = subprocess.Popen(["ip", "-n", ns.name, "-batch", "-"], stdin=subprocess.PIPE,
                            text=True)
    start = time.monotonic()
    for i in range(count):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        proc.stdin.write(f"link add name {prefix}{i} type veth peer name {prefix}p{i} "
                         f"netns {peer.name}\n")
        proc.stdin.flush()
    proc.stdin.close()
    proc.wait(timeout=300)


def watch_hotplug(ns: Netns, prefix: str, count: int) -> subprocess.Popen:
    """A watcher inside the namespace timing each interface from creation to tuned MTU."""
    argv = ns.python_argv("bench.hotplug_watch", prefix, str(count), "4000")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def start_nodenetd(ns: Netns, root: Path) -> tuple[subprocess.Popen, object]:
    import socket

    (root / "profiles").mkdir(exist_ok=True)
    (root / "profiles" / "bench.yaml").write_text(PROFILE)
    config = root / "nodenetd.yaml"
    config.write_text(f"profiles: [bench]\nprofile_dirs: [{root / 'profiles'}]\n"
                      f"state_dir: {root / 'state'}\n"
                      f"daemon: {{control_socket: {root / 'ctl.sock'}, log_level: warning}}\n")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify.sock"))
    notify.settimeout(120)
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(root / "notify.sock")}
    proc = subprocess.Popen(ns.python_argv("nodenetd.daemon.main", "--config", str(config)),
                            env=env, stderr=subprocess.DEVNULL)
    while b"READY=1" not in notify.recv(4096):
        pass
    return proc, notify


def measure(tuner: str, idle_seconds: float, managed: int, hotplug: int) -> dict:
    node, peer = Netns.create("bnode"), Netns.create("bpeer")
    tmp = tempfile.TemporaryDirectory(prefix="nodenetd-bench-")
    root = Path(tmp.name)
    try:
        create_veths(node, peer, "m", managed, None)
        if tuner == "nodenetd":
            proc, _notify = start_nodenetd(node, root)
        else:
            proc = subprocess.Popen(node.exec_argv("bash", "-c", BASELINE),
                                    start_new_session=True)
            time.sleep(1)
        time.sleep(3)  # settle after start-up work
        cpu0, t0 = tree_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        idle_pct = 100 * (tree_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = rss_mib(proc.pid)
        watcher = watch_hotplug(node, "h", hotplug)
        time.sleep(0.5)
        cpu1 = tree_cpu_seconds(proc.pid)
        create_veths(node, peer, "h", hotplug, rate=100)
        out, _ = watcher.communicate(timeout=120)
        busy = tree_cpu_seconds(proc.pid) - cpu1
        result = json.loads(out)
        latencies = [ms for ms in result["latency_ms"].values()]
        return {
            "tuner": tuner,
            "idle_cpu_pct": idle_pct,
            "rss_mib": rss,
            "tuned": len(latencies),
            "p50_ms": percentile(latencies, 50) if latencies else float("nan"),
            "p99_ms": percentile(latencies, 99) if latencies else float("nan"),
            "max_ms": max(latencies) if latencies else float("nan"),
            "hotplug_cpu_s": busy,
        }
    finally:
        if tuner == "nodenetd":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        node.delete()
        peer.delete()
        tmp.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--managed", type=int, default=500)
    parser.add_argument("--hotplug", type=int, default=1000)
    args = parser.parse_args()
    rows = [measure(t, args.idle_seconds, args.managed, args.hotplug)
            for t in ("nodenetd", "udev-rule + fork")]
    print(f"\nbench/daemon on {machine()}")
    print(f"{args.managed} managed veths idle for {args.idle_seconds:.0f} s; "
          f"{args.hotplug} veths created at 100/s\n")
    print("| tuner | idle CPU % of a core | RSS MiB | tuned | hotplug p50 ms | p99 ms | max ms "
          "| CPU s for the hotplug burst |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tuner']} | {r['idle_cpu_pct']:.2f} | {r['rss_mib']:.0f} | "
              f"{r['tuned']}/{args.hotplug} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['max_ms']:.1f} | {r['hotplug_cpu_s']:.1f} |")
    ours, base = rows
    print(f"\nratios (baseline / nodenetd): p99 {base['p99_ms'] / ours['p99_ms']:.1f}x, "
          f"hotplug CPU {base['hotplug_cpu_s'] / max(ours['hotplug_cpu_s'], 1e-3):.1f}x")
    for label, ok in (
        ("idle CPU < 0.5 % of one core", ours["idle_cpu_pct"] < 0.5),
        ("RSS < 60 MB", ours["rss_mib"] < 60),
        ("hotplug p99 < 50 ms", ours["p99_ms"] < 50),
        ("every hotplugged veth tuned", ours["tuned"] == args.hotplug),
    ):
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
