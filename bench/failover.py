"""bench/failover: how much traffic a failover loses, nodenetd against what users have
without it, measured in the same run.

An iperf3 UDP stream of 64-byte datagrams (10,000/s on the host) runs from the node to a
server behind two paths; mid-stream the active path is cut on the router side, held cut for
a moment, then mended. Outage = lost datagrams ÷ rate, or the receiver's silence beyond the
normal spacing when the kernel stalls the sender instead (whichever is larger; see
bench/failover_stats). Every cut is a fresh stream; p50/p99/max over --cuts cuts per
scenario. Failback is what the same stream loses after the mend, once traffic moves back.

Host (network namespaces; bench/failover_lab's route lab):
  - static: two static default routes, metrics 50 and 51, no daemon (what users have);
  - static + ignore_routes_with_linkdown=1: the same with the kernel skipping linkdown routes;
  - nodenetd route group: 10 ms ICMP + ARP probes per uplink, rise/fall 3, preempt.
Kernel-lab VM (bonding exists only there; bench/failover_vm): the kernel bond with
miimon=100, with its ARP monitor (100 ms, arp_missed_max 2), and nodenetd's bond group.

Targets (reported met/missed, never asserted): carrier loss p99 within 5 ms; gray failure p99
within 50 ms with 10 ms probes and at least 5x better than the bond ARP monitor; failback
loses nothing; the daemon's CPU with 2 members x 2 targets at 10 ms below 5 % of one core.

    .venv/bin/python -m bench.failover [--cuts 30] [--only host|vm] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.failover_lab import (
    ROUTE_GROUP,
    Campaign,
    Cut,
    Daemon,
    LabError,
    Traffic,
    gap_threshold_ms,
    preferred_route,
    prompt_bench,
    route_lab,
    sample_dict,
    say,
    wait_until,
    workdir,
)
from bench.failover_stats import percentile, ratio, summarize
from tests.lab.netns import REPO

HOST_RATE = 10_000  # datagrams/s
VM_RATES = [10_000, 5_000, 3_000, 2_000, 1_000, 500, 250]
INTERVAL = 0.01  # nodenetd's probe interval in the bench: "10 ms probes x 3"
PREEMPT_DELAY = 2.0  # the bench's failback hold-down (default 10 s; it only delays)
HOST_SYSTEMS = ("static", "static-linkdown", "nodenetd-route", "nodenetd-route-rt",
                "nodenetd-route-100ms")
HOST_SPECS = {  # scenarios, probe interval, how long each cut is held (s)
    "static": {"scenarios": ["carrier", "gray"], "hold": 0.5},
    "static-linkdown": {"scenarios": ["carrier"], "hold": 0.5},
    "nodenetd-route": {"scenarios": ["carrier", "gray"], "hold": 0.5, "interval": INTERVAL},
    "nodenetd-route-rt": {"scenarios": ["gray"], "hold": 0.5, "interval": INTERVAL,
                          "sched": ["chrt", "-r", "1"]},
    "nodenetd-route-100ms": {"scenarios": ["gray"], "hold": 1.0, "interval": 0.1},
}
VM_SYSTEMS = ("bond-miimon", "bond-arp", "nodenetd-bond", "nodenetd-bond-100ms")
LABELS = {
    "static": "static routes, metrics 50/51, no daemon",
    "static-linkdown": "static routes + ignore_routes_with_linkdown=1",
    "nodenetd-route": "nodenetd route group (10 ms probes x 3)",
    "nodenetd-route-rt": "nodenetd route group (10 ms probes x 3), daemon SCHED_RR",
    "nodenetd-route-100ms": "nodenetd route group (100 ms probes x 3)",
    "bond-miimon": "kernel bond, miimon=100",
    "bond-arp": "kernel bond, ARP monitor 100 ms x 2",
    "nodenetd-bond": "nodenetd bond group (miimon 10, 10 ms ARP x 3)",
    "nodenetd-bond-100ms": "nodenetd bond group (miimon 10, 100 ms ARP x 3)",
}
SCENARIOS = {"carrier": "carrier loss", "gray": "gray failure"}
OURS = ("nodenetd-route", "nodenetd-bond")


# -- host half ------------------------------------------------------------------------------


def static_settle(node) -> None:
    def ok() -> bool:
        if preferred_route(node) != "a0":
            return False
        return node.run("ping", "-c1", "-W1", "-n", "203.0.113.10", check=False).returncode == 0

    wait_until("the static path via a0", ok, 30)
    time.sleep(0.2)


def measure_host(system: str, cuts: int, controls: int, cpu_seconds: float) -> dict:
    spec = HOST_SPECS[system]
    lab = route_lab()
    tmp = workdir()
    root = Path(tmp.name)
    daemon = traffic = None
    result: dict = {"scenarios": {}, "controls": [], "notes": []}
    node = lab["node"]
    try:
        if system.startswith("static"):
            node.run("ip", "route", "add", "default", "via", "192.0.2.1", "metric", "50")
            node.run("ip", "route", "add", "default", "via", "198.51.100.1", "metric", "51")
            if system == "static-linkdown":
                for conf in ("all", "default", "a0", "b0"):
                    node.run("sysctl", "-qw",
                             f"net.ipv4.conf.{conf}.ignore_routes_with_linkdown=1")

            def settle() -> None:
                static_settle(node)

            tail = 1.2
        else:
            daemon = Daemon(node, root)
            daemon.write(ROUTE_GROUP, preempt_delay=PREEMPT_DELAY, interval=spec["interval"])
            ok, said = daemon.check()
            if not ok:
                result["skipped"] = f"nodenetd rejects the route group config: {said}"
                return result
            started = time.monotonic()
            daemon.start(prefix=spec.get("sched", []))
            result["ready_s"] = round(time.monotonic() - started, 2)

            def settle() -> None:
                wait_until("nodenetd's route group settled on a0",
                           lambda: daemon.settled("uplinks", "a0")
                           and preferred_route(node) == "a0", PREEMPT_DELAY + 60)
                time.sleep(0.2)

            tail = PREEMPT_DELAY + 1.5
        settle()
        if daemon is not None:
            time.sleep(1.0)  # past start-up work
            result |= daemon.quiet_minute("uplinks", cpu_seconds)
            say(f"{system}: daemon CPU over a quiet {cpu_seconds:.0f} s with 2 members x 2 "
                f"targets every {spec['interval'] * 1000:.0f} ms: {result['cpu_pct']:.2f} % "
                f"of one core; {result['spurious_switches']} switches")
        traffic = Traffic(node, lab["server"], lab["server"], ["ua", "ub"], HOST_RATE, root)
        traffic.start()
        threshold = gap_threshold_ms(HOST_RATE, traffic.pacing_us)
        for scenario in spec["scenarios"]:
            campaign = Campaign(traffic, Cut(scenario, lab["ra"], "ra0"), "ua", settle,
                                hold=spec["hold"], tail=tail, threshold_ms=threshold)
            runs = campaign.run(cuts, f"host {system} {scenario}")
            result["scenarios"][scenario] = [[sample_dict(s) for s in run] for run in runs]
            result.setdefault("rejected", {})[scenario] = campaign.rejected
        campaign = Campaign(traffic, Cut("carrier", lab["ra"], "ra0"), "ua", settle,
                            tail=tail, threshold_ms=threshold)
        result["controls"] = [sample_dict(s)
                              for s in campaign.controls(controls, f"host {system}")]
        if daemon is not None:
            result["status_end"] = daemon.status()
    except (LabError, subprocess.SubprocessError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"{system}: {result['error']}")
    finally:
        if traffic is not None:
            traffic.close()
        if daemon is not None:
            daemon.stop()
            result["log_tail"] = daemon.tail(80)
        lab.delete()
        tmp.cleanup()
    return result


def loop_floor(seconds: float, interval: float) -> float:
    """The same-run floor for the CPU figure: % of one core that a bare asyncio event loop
    uses waking every ``interval`` to do nothing, the fixed cost any asyncio daemon probing
    at that rate pays on this machine before it sends a single probe."""

    async def tick() -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        woke = asyncio.Event()

        def wake() -> None:
            if loop.time() >= end:
                woke.set()
                return
            loop.call_at((math.floor(loop.time() / interval) + 1) * interval, wake)

        wake()
        await woke.wait()

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    asyncio.run(tick())
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return 100 * used / (time.monotonic() - started)


# -- VM half ----------------------------------------------------------------------------------


def run_vm(plan: dict, timeout: float) -> dict:
    """Boot the kernel-lab VM with bench.failover_vm; its results.json, or why not."""
    from tests.kernel_lab import run as lane

    out = REPO / ".lab-cache" / "failover-vm"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "console.log", "output.log"):
        (out / name).unlink(missing_ok=True)
    kernel = lane.newest_kernel()
    missing = lane.vm_missing(kernel)
    if os.geteuid() != 0:
        missing.append("root")
    if missing or kernel is None:
        return {"skipped": f"no kernel-lab VM here: missing {'; '.join(missing)}"}
    accel = "kvm" if lane.kvm_works(kernel, out) else "tcg"
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    argv, env = lane.guest_argv(out, f"{lane.VENV_BIN / 'python'} -m bench.failover_vm {out}",
                                kernel, accel)
    say(f"booting the kernel-lab VM ({kernel.name}, {accel}); guest output follows")
    started = time.monotonic()
    with (out / "console.log").open("wb") as console, (out / "output.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=console,
                                start_new_session=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                sys.stderr.write("  vm| " + line.decode(errors="replace"))
                sys.stderr.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            say(f"the VM is still running after {timeout:.0f} s: killing it")
        finally:
            lane.kill_group(proc)  # also on Ctrl-C: no qemu outlives the bench
            reader.join(timeout=5)
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        tail = (out / "console.log").read_text(errors="replace").splitlines()[-30:]
        return {"error": f"the VM brought back no results (vng exited {proc.returncode})",
                "console_tail": "\n".join(tail)}
    results["accel"] = accel
    results["vm_kernel"] = kernel.name
    results["wall_s"] = round(time.monotonic() - started, 1)
    return results


# -- report -----------------------------------------------------------------------------------


def machine() -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True,
                           check=False).stdout.split("\n")[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "iperf3": iperf.strip(),
            "loadavg": os.getloadavg()}


def samples_of(system: dict, scenario: str, index: int) -> list[dict]:
    """Valid samples: index 0 the failovers, 1 the failbacks."""
    runs = system.get("scenarios", {}).get(scenario, [])
    return [run[index] for run in runs if not run[index]["note"]]


def build_rows(parts: dict) -> list[dict]:
    rows = []
    for where, part in parts.items():
        systems = part.get("systems", {})
        rate = part.get("rate", HOST_RATE)
        controls = [c for s in systems.values() for c in s.get("controls", [])]
        for name, system in systems.items():
            for scenario, label in SCENARIOS.items():
                if scenario not in system.get("scenarios", {}):
                    continue
                rows.append(row(where, name, label, samples_of(system, scenario, 0), rate))
                backs = samples_of(system, scenario, 1)
                if backs:
                    rows.append(row(where, name, f"failback after {label}", backs, rate,
                                    controls=controls))
        if controls:
            rows.append(row(where, "-", "no cut (control)", controls, rate))
    return rows


def row(where: str, system: str, scenario: str, samples: list[dict], rate: float,
        controls: list[dict] | None = None) -> dict:
    outage = summarize([s["outage_ms"] for s in samples])
    moved = [s["moved_ms"] for s in samples if s["moved_ms"] is not None]
    sent = [s["rate"] for s in samples]
    result = {
        "where": where, "system": system, "scenario": scenario, "cuts": outage.n,
        "rate": rate, "sent_rate": percentile(sent, 50) if sent else math.nan,
        "p50": outage.p50, "p99": outage.p99, "max": outage.max,
        "moved_p50": percentile(moved, 50) if moved else None,
        "moved_max": max(moved) if moved else None,
        "never_moved": sum(1 for s in samples if s["moved_ms"] is None),
        "lost_max": max((s["lost"] for s in samples), default=0),
        "iperf_lost_max": max((s["iperf_lost"] or 0 for s in samples), default=0),
        "queueing_ms": percentile([s["delay_ms"] or 0 for s in samples], 50)
        if samples else math.nan,
        "target": "", "met": None,
    }
    if system in OURS:
        if scenario == "carrier loss":
            result["target"], result["met"] = "p99 <= 5 ms", outage.p99 <= 5
        elif scenario == "gray failure":
            result["target"], result["met"] = "p99 <= 50 ms", outage.p99 <= 50
        elif scenario.startswith("failback"):
            noise = summarize([c["outage_ms"] for c in controls or []])
            bound = max(1.0, noise.max if noise.n else 0.0)
            result["target"] = "loses nothing (0 datagrams lost)"
            result["met"] = result["lost_max"] == 0
            result["noise_ms"] = bound  # silences up to the controls' largest are noise
    return result


def find(rows: list[dict], system: str, scenario: str) -> dict | None:
    return next((r for r in rows if r["system"] == system and r["scenario"] == scenario
                 and r["cuts"]), None)


def ratios(rows: list[dict]) -> list[tuple[str, float, str]]:
    pairs = [
        ("carrier loss", "static", "nodenetd-route", "same host"),
        ("carrier loss", "static-linkdown", "nodenetd-route", "same host"),
        ("carrier loss", "bond-miimon", "nodenetd-bond", "same VM"),
        ("gray failure", "static", "nodenetd-route", "same host"),
        ("gray failure", "bond-arp", "nodenetd-bond", "same VM"),
        ("gray failure", "bond-arp", "nodenetd-route", "VM baseline vs host: indicative"),
    ]
    out = []
    for scenario, base, ours, note in pairs:
        b, o = find(rows, base, scenario), find(rows, ours, scenario)
        if b and o:
            out.append((f"{scenario}: {LABELS[base]} p99 / {LABELS[ours]} p99",
                        ratio(b["p99"], o["p99"]), note))
    return out


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def report(result: dict) -> None:
    rows = result["rows"]
    m = result["machine"]
    print(f"\nbench/failover on kernel {m['kernel']}, {m['cores']} CPUs ({m['cpu']}), "
          f"Python {m['python']}, {m['iperf3']}; load average at start "
          f"{m['loadavg'][0]:.1f}, at end {result['loadavg_end'][0]:.1f}")
    vm = result["parts"].get("vm", {})
    if vm.get("rate"):
        print(f"VM: {vm.get('vm_kernel')} ({vm.get('accel')}, {vm.get('cpus')} vCPUs), "
              f"{vm['rate']} datagrams/s (iperf3 -b 0 sends "
              f"{vm.get('calibration', {}).get('flat_out', '?')}/s there; tried "
              + ", ".join(f"{c['rate']}/s: sent {c['sent_rate']}/s, lost {c['lost']}"
                          for c in vm.get("calibration", {}).get("tried", [])) + ")")
    print("outage = max(lost ÷ rate, receive silence) per cut, ms; p99 of 30 is the max; "
          "moved = traffic on the other path, ms after the cut (after the mend for failback); "
          "queueing = a stream's median one-way delay over its smallest, ms (p50 over the "
          "streams): the measurement's own noise\n")
    print("| scenario | system | where | cuts | rate/s | outage p50 | p99 | max | moved p50 "
          "| queueing | target | met? |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        system = LABELS.get(r["system"], r["system"])
        met = "" if r["met"] is None else ("met" if r["met"] else "MISSED")
        moved = fmt(r["moved_p50"])
        if r["never_moved"] and r["scenario"] in SCENARIOS.values():
            moved = "never" if r["moved_p50"] is None else f"{moved} ({r['never_moved']} never)"
        print(f"| {r['scenario']} | {system} | {r['where']} | {r['cuts']} | {r['sent_rate']:.0f} "
              f"| {fmt(r['p50'])} | {fmt(r['p99'])} | {fmt(r['max'])} | {moved} "
              f"| {fmt(r['queueing_ms'])} | {r['target'] or 'baseline'} | {met} |")
    print()
    for label, value, note in ratios(rows):
        print(f"ratio {label}: {fmt(value)}x ({note})")
    for where, part in result["parts"].items():
        for name, system in part.get("systems", {}).items():
            if "cpu_pct" not in system:
                continue
            probes = "2 members x 1 ARP target, under TCG" if where == "vm" else \
                "2 members x 2 targets"
            cpu = (f"{LABELS[name]} ({where}) CPU {system['cpu_pct']:.2f} % of one core over a "
                   f"quiet {result['cpu_seconds']:.0f} s (user {system.get('cpu_user_pct', 0):.2f}"
                   f", system {system.get('cpu_system_pct', 0):.2f}), {probes}")
            if name == "nodenetd-route":
                floor = result.get("loop_floor_pct")
                if floor is not None:
                    cpu += (f"; a bare asyncio loop waking every 10 ms uses {floor:.2f} % here "
                            f"(same run)")
                print(f"target {'met' if system['cpu_pct'] < 5 else 'MISSED'}: {cpu} (< 5 %)")
            else:
                print(cpu)
            if system.get("spurious_switches"):
                print(f"{LABELS[name]} ({where}): {system['spurious_switches']} switches of the "
                      f"active member in that quiet time, with no cut: false failovers")
    gray = [find(rows, ours, "gray failure") for ours in OURS]
    arp = find(rows, "bond-arp", "gray failure")
    for ours in gray:
        if ours and arp:
            x = ratio(arp["p99"], ours["p99"])
            print(f"target {'met' if x >= 5 else 'MISSED'}: {LABELS[ours['system']]} gray "
                  f"failure p99 >= 5x better than the bond ARP monitor ({fmt(x)}x)")
    for r in rows:
        if r["met"] is not None:
            print(f"target {'met' if r['met'] else 'MISSED'}: {LABELS[r['system']]} "
                  f"({r['where']}) {r['scenario']} {r['target']} (p99 {fmt(r['p99'])} ms)")
    for where, part in result["parts"].items():
        for key in ("skipped", "error"):
            if key in part:
                print(f"{where}: {key}: {part[key]}")
        for name, system in part.get("systems", {}).items():
            for key in ("skipped", "error"):
                if key in system:
                    print(f"{where} {name}: {key}: {system[key]}")
    print(f"\nwall time {result['wall_s']:.0f} s")


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM behaves like Ctrl-C: every finally (namespaces, daemon, VM) still runs."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=30, help="cuts per scenario (default 30)")
    parser.add_argument("--only", choices=("host", "vm"), help="run only one half")
    parser.add_argument("--json", type=Path, help="also write every sample here")
    parser.add_argument("--controls", type=int, default=5,
                        help="no-cut control streams per system (default 5)")
    parser.add_argument("--cpu-seconds", type=float, default=30.0,
                        help="quiet window for each daemon's CPU figure (default 30 s)")
    parser.add_argument("--systems", help="comma-separated subset of "
                        + ", ".join(HOST_SYSTEMS + VM_SYSTEMS))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/failover needs root (network namespaces)", file=sys.stderr)
        return 2
    chosen = set(args.systems.split(",")) if args.systems else set(HOST_SYSTEMS + VM_SYSTEMS)
    started = time.monotonic()
    prompt_bench()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    result: dict = {"machine": machine(), "cuts": args.cuts, "cpu_seconds": args.cpu_seconds,
                    "parts": {}}
    if args.only in (None, "host"):
        result["loop_floor_pct"] = loop_floor(args.cpu_seconds, INTERVAL)
        host: dict = {"rate": HOST_RATE, "systems": {}}
        result["parts"]["host"] = host
        for system in HOST_SYSTEMS:
            if system in chosen:
                say(f"host: {LABELS[system]}: {args.cuts} cuts per scenario")
                host["systems"][system] = measure_host(system, args.cuts, args.controls,
                                                       args.cpu_seconds)
    if args.only in (None, "vm"):
        systems = [s for s in VM_SYSTEMS if s in chosen]
        if systems:
            plan = {"systems": systems, "cuts": args.cuts, "controls": args.controls,
                    "rates": VM_RATES, "pacing_us": 1000, "pre": 0.5, "hold": 1.0,
                    "tail": 1.5, "preempt_delay": PREEMPT_DELAY, "interval": INTERVAL,
                    "scenarios": list(SCENARIOS), "cpu_seconds": args.cpu_seconds}
            timeout = 900 + args.cuts * len(systems) * 2 * 20
            plan["deadline_s"] = timeout - 600  # the guest stops starting cuts by then
            result["parts"]["vm"] = run_vm(plan, timeout)
    result["rows"] = build_rows(result["parts"])
    result["loadavg_end"] = os.getloadavg()
    result["wall_s"] = time.monotonic() - started
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    say("interrupted; namespaces, daemons and the VM are cleaned up")
    sys.exit(130)
