"""bench/failover's kernel-lab half: the bond systems, inside the VM (only its kernel has
bonding).

bench/failover boots the kernel-lab VM (tests/kernel_lab/run.py's virtme-ng command line,
sharing this checkout) with this module as the guest's only program. OUT, shared read-write
with the host, holds plan.json (what to run) and receives results.json and progress.log.

Systems: the kernel's active-backup bond with miimon=100; the same bond with its ARP monitor
(arp_interval 100 ms, arp_missed_max 2, arp_ip_target the router; no miimon); nodenetd's
bond group (the kernel's miimon 10 for carrier, nodenetd's 10 ms ARP probes per member for
gray failures). eth0 is the preferred member everywhere (the bond's primary; priority 100).

The datagram rate is the highest of plan["rates"] that the emulated guest sustains: a short
calibration stream per rate, kept if iperf3 sends at least 97 % of it, nothing is lost and
the receiver sees no silence over 20 ms (outages are still reported in ms: lost ÷ rate).

    python -m bench.failover_vm OUT
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.failover_lab import (
    BOND_GROUP,
    Campaign,
    Cut,
    Daemon,
    Lab,
    LabError,
    Traffic,
    bond_address,
    bond_lab,
    bond_state,
    evaluate,
    gap_threshold_ms,
    idle_script,
    kernel_bond,
    prompt_bench,
    sample_dict,
    say,
    wait_until,
    workdir,
)

MODULES = ["bonding max_bonds=0", "veth", "bridge", "sch_netem", "af_packet"]
SYSTEMS = {
    "bond-miimon": ["miimon", "100"],
    "bond-arp": ["arp_interval", "100", "arp_ip_target", "192.0.2.1", "arp_missed_max", "2"],
    "nodenetd-bond": None,
    "nodenetd-bond-100ms": None,
}
INTERVALS = {"nodenetd-bond-100ms": 0.1}  # else the plan's
SCENARIOS = {"carrier": "carrier", "gray": "gray"}


def load_modules() -> dict[str, str]:
    failed = {}
    for spec in MODULES:
        proc = subprocess.run(["modprobe", *spec.split()], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            failed[spec.split()[0]] = (proc.stderr or proc.stdout).strip()
    return failed


def kernel_settled(lab: Lab) -> bool:
    active, members = bond_state(lab["node"])
    return active == "eth0" and set(members.values()) == {"UP"} and len(members) == 2


def calibrate(lab: Lab, rates: list[int], pacing_us: int, root: Path) -> tuple[int, dict]:
    """The highest of ``rates`` the guest sustains (at most half of what it can send flat
    out, then verified on a control stream), and what was tried."""
    probe = Traffic(lab["node"], lab["server"], lab["router"], ["s0:out"], rates[-1], root,
                    pacing_us=pacing_us, startup_timeout=60, paths=["p0", "p1"])
    probe.start()
    try:
        flat_out = probe.capacity()
    finally:
        probe.close()
    say(f"calibration: iperf3 -b 0 sends {flat_out:.0f} datagrams/s here")
    tried: dict = {"flat_out": round(flat_out), "tried": []}
    candidates = [r for r in sorted(rates, reverse=True) if r <= flat_out / 2] or [rates[-1]]
    for rate in candidates:
        traffic = Traffic(lab["node"], lab["server"], lab["router"], ["s0:out"], rate, root,
                          pacing_us=pacing_us, startup_timeout=60, paths=["p0", "p1"],
                          timed=True)
        traffic.start()
        try:
            raw = traffic.stream(3.0, idle_script(0.5, 2.0))
        finally:
            traffic.close()
        sample = evaluate(raw, rate, "p0", gap_threshold_ms(rate, pacing_us))[0]
        ok = sample.rate >= 0.95 * rate and sample.lost == 0
        tried["tried"].append({"rate": rate, "sent_rate": round(sample.rate),
                               "lost": sample.lost, "iperf_lost": sample.iperf_lost, "ok": ok})
        say(f"calibration: {rate}/s -> sent {sample.rate:.0f}/s, lost {sample.lost}: "
            f"{'ok' if ok else 'too fast'}")
        if ok:
            return rate, tried
    return candidates[-1], tried


def measure(system: str, plan: dict, rate: int, root: Path, out: Path, results: dict) -> dict:
    lab = bond_lab()
    daemon = traffic = None
    result: dict = {"scenarios": {}, "controls": [], "notes": []}
    results["systems"][system] = result  # written after every scenario: a kill keeps them
    deadline = STARTED + plan["deadline_s"]
    try:
        if SYSTEMS[system] is not None:
            kernel_bond(lab, SYSTEMS[system])

            def settle() -> None:
                wait_until("the bond back on eth0 with both members up",
                           lambda: kernel_settled(lab), 60)
                time.sleep(0.2)

        else:
            daemon = Daemon(lab["node"], root / system)
            daemon.write(BOND_GROUP, preempt_delay=plan["preempt_delay"],
                         interval=INTERVALS.get(system, plan["interval"]))
            ok, said = daemon.check(timeout=900)
            if not ok:
                result["skipped"] = f"nodenetd rejects the bond group config: {said}"
                return result
            started = time.monotonic()
            daemon.start(timeout=900)
            result["ready_s"] = round(time.monotonic() - started, 1)
            wait_until("bond0", lambda: lab["node"].run("ip", "link", "show", "bond0",
                                                        check=False).returncode == 0, 60)
            bond_address(lab)

            def settle() -> None:
                wait_until("nodenetd's bond group settled on eth0",
                           lambda: daemon.settled("bond0", "eth0") and kernel_settled(lab),
                           plan["preempt_delay"] + 120, interval=0.1)
                time.sleep(0.2)

        if daemon is not None:
            time.sleep(5)  # past start-up work
            result |= daemon.quiet_minute("bond0", plan["cpu_seconds"])
            say(f"{system}: CPU {result['cpu_pct']:.1f} % of one core, "
                f"{result['spurious_switches']} switches in a quiet {plan['cpu_seconds']:.0f} s")
        settle()
        pacing = plan["pacing_us"]
        traffic = Traffic(lab["node"], lab["server"], lab["router"], ["s0:out"], rate, root,
                          pacing_us=pacing, startup_timeout=60, paths=["p0", "p1"],
                          timed=True)
        traffic.start()
        tail = plan["preempt_delay"] + 1.5 if daemon else plan["tail"]
        for scenario in plan["scenarios"]:
            campaign = Campaign(traffic, Cut(scenario, lab["router"], "p0"), "p0", settle,
                                pre=plan["pre"], hold=plan["hold"], tail=tail,
                                threshold_ms=gap_threshold_ms(rate, pacing),
                                max_failures=plan["cuts"], deadline=deadline)
            runs = campaign.run(plan["cuts"], f"vm {system} {scenario}")
            result.setdefault("rejected", {})[scenario] = campaign.rejected
            if campaign.truncated:
                result.setdefault("truncated", []).append(scenario)
            result["scenarios"][scenario] = [[sample_dict(s) for s in run] for run in runs]
            write(out, results)
            say(f"done: {system} {scenario}")
        campaign = Campaign(traffic, Cut("carrier", lab["router"], "p0"), "p0", settle,
                            pre=plan["pre"], hold=plan["hold"], tail=tail,
                            threshold_ms=gap_threshold_ms(rate, pacing))
        if time.monotonic() > deadline:
            raise LabError("out of time before the control streams")
        result["controls"] = [sample_dict(s)
                              for s in campaign.controls(plan["controls"], f"vm {system}")]
        if daemon is not None:
            result["status_end"] = daemon.status(timeout=300)
    except Exception as exc:  # one system failing does not lose the others' results
        result["error"] = f"{type(exc).__name__}: {exc}"
        say(f"{system}: {result['error']}")
    finally:
        if traffic is not None:
            traffic.close()
        if daemon is not None:
            daemon.stop()
            result["log_tail"] = daemon.tail(60)
        lab.delete()
    return result


STARTED = time.monotonic()


def main(argv: list[str]) -> int:
    os.chdir(Path(__file__).resolve().parents[1])
    sys.stderr = sys.stdout  # the host shows the guest's stdout live
    prompt_bench()
    out = Path(argv[1])
    plan = json.loads((out / "plan.json").read_text())
    started = time.monotonic()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    say(f"guest up: kernel {os.uname().release}, {os.cpu_count()} cpus, uptime {uptime:.1f}s")
    results: dict = {"kernel": os.uname().release, "cpus": os.cpu_count(),
                     "modules_failed": load_modules(), "systems": {}}
    tmp = workdir()
    root = Path(tmp.name)
    try:
        lab = bond_lab()
        try:
            kernel_bond(lab, SYSTEMS["bond-miimon"])
            wait_until("the calibration bond", lambda: kernel_settled(lab), 60)
            rate, tried = calibrate(lab, plan["rates"], plan["pacing_us"], root)
        finally:
            lab.delete()
        results |= {"rate": rate, "calibration": tried}
        for system in plan["systems"]:
            say(f"{system}: {plan['cuts']} cuts per scenario at {rate} datagrams/s")
            measure(system, plan, rate, root, out, results)
            write(out, results)
    except Exception:
        results["error"] = traceback.format_exc()
        say(results["error"])
    finally:
        results["seconds"] = round(time.monotonic() - started, 1)
        write(out, results)
        tmp.cleanup()
    return 0 if "error" not in results else 1


def write(out: Path, results: dict) -> None:
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results))
    os.replace(tmp, out / "results.json")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
