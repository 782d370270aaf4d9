"""bench/apply_scale: nodenetd against the per-process way (one ethtool/ip/sysctl process per
setting, as shell scripts and tuned do it), measured in the same run on the same interfaces.

N veths in a namespace; a profile sets 4 offload features, txqueuelen, MTU, 2
per-interface sysctls and a root qdisc (tbf) on each. Reports cold apply, no-op plan and
restore times, peak RSS, and the baseline ratio. Targets (issue 2): cold apply of 1000 within
2 s and >= 20x faster than the baseline; no-op plan of 1000 within 0.5 s (issue 6: with a
qdisc on each veth).

A second table times the qdisc alone against ``tc`` run once per interface (``tc qdisc
replace``; for the htb tree also ``tc class add`` and ``tc filter add`` per class and filter,
``tc qdisc/class/filter show`` to verify, ``tc qdisc del`` to restore): a tbf, and an htb
with 2 classes and 4 DSCP filters.

    .venv/bin/python -m bench.apply_scale [--sizes 100,500,1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pyroute2

from tests.lab.netns import REPO, Netns, run

FEATURES = {"rx-gro": "on", "tx-generic-segmentation": "off",
            "tx-tcp-segmentation": "off", "rx-udp-gro-forwarding": "on"}
MTU, TXQLEN = 9000, 5000
IF_SYSCTLS = {"net.ipv4.conf.{}.rp_filter": "2", "net.ipv6.conf.{}.accept_ra": "0"}
ORIGINALS = {"rx-gro": "off", "tx-generic-segmentation": "on",
             "tx-tcp-segmentation": "on", "rx-udp-gro-forwarding": "off"}

TBF = "tbf rate 1gbit burst 128kb latency 10ms"
PROFILE = f"""\
interfaces:
  - match: {{name: ["b*"]}}
    mtu: {MTU}
    txqueuelen: {TXQLEN}
    features: {json.dumps({k: v == "on" for k, v in FEATURES.items()})}
    sysctls:
      net.ipv4.conf.IF.rp_filter: 2
      net.ipv6.conf.IF.accept_ra: 0
    qdisc: {{tbf: {{rate: 1gbit, burst: 128kb, latency: 10ms}}}}
"""
SETTINGS = 9  # per interface

QDISC_PROFILES = {
    "tbf": """\
interfaces:
  - match: {name: ["b*"]}
    qdisc: {tbf: {rate: 1gbit, burst: 128kb, latency: 10ms}}
""",
    "htb": """\
interfaces:
  - match: {name: ["b*"]}
    qdisc:
      htb:
        rate: 1gbit
        default: bulk
        classes:
          voice: {share: 20%, dscp: [ef]}
          bulk: {share: 80%, dscp: [af11]}
""",
}


def tc_script(n: int, kind: str, mode: str) -> str:
    """The baseline for the qdisc alone: tc once per object, per interface, the same tree
    nodenetd builds (its burst and quantum defaults, the u32 DSCP matches)."""
    lines = []
    for i in range(n):
        dev = f"b{i}"
        if mode == "restore":
            lines.append(f"tc qdisc del dev {dev} root")
        elif mode == "verify":
            lines.append(f"tc qdisc show dev {dev} >/dev/null")
            if kind == "htb":
                lines.append(f"tc class show dev {dev} >/dev/null")
                lines.append(f"tc filter show dev {dev} >/dev/null")
        elif kind == "tbf":
            lines.append(f"tc qdisc replace dev {dev} root {TBF}")
        else:
            lines += [
                f"tc qdisc replace dev {dev} root handle 1: htb default 20",
                f"tc class replace dev {dev} parent 1: classid 1:1 htb rate 1gbit "
                "burst 125000 cburst 125000 quantum 200000",
                f"tc class replace dev {dev} parent 1:1 classid 1:10 htb rate 200mbit "
                "ceil 1gbit burst 25000 cburst 125000 quantum 200000",
                f"tc class replace dev {dev} parent 1:1 classid 1:20 htb rate 800mbit "
                "ceil 1gbit burst 100000 cburst 125000 quantum 200000",
                f"tc filter add dev {dev} parent 1: protocol ip prio 1 u32 "
                "match ip dsfield 0xb8 0xfc flowid 1:10",
                f"tc filter add dev {dev} parent 1: protocol ip prio 1 u32 "
                "match ip dsfield 0x28 0xfc flowid 1:20",
                f"tc filter add dev {dev} parent 1: protocol ipv6 prio 2 u32 "
                "match ip6 priority 0xb8 0xfc flowid 1:10",
                f"tc filter add dev {dev} parent 1: protocol ipv6 prio 2 u32 "
                "match ip6 priority 0x28 0xfc flowid 1:20",
            ]
    return "\n".join(lines) + "\n"



def build_lab(n: int) -> tuple[Netns, Netns]:
    node, peer = Netns.create("bench"), Netns.create("benchp")
    with tempfile.NamedTemporaryFile("w", suffix=".batch", delete=False) as batch:
        for i in range(n):
            batch.write(f"link add name b{i} type veth peer name p{i} netns {peer.name}\n")
            batch.write(f"link set b{i} up\n")
    run(["ip", "-n", node.name, "-batch", batch.name], timeout=600)
    os.unlink(batch.name)
    return node, peer


def per_process_script(n: int, mode: str) -> str:
    """The baseline: one process per setting."""
    lines = []
    for i in range(n):
        dev = f"b{i}"
        if mode == "verify":
            lines += [f"ethtool -k {dev} >/dev/null" for _ in FEATURES]
            lines += [f"ip link show dev {dev} >/dev/null"] * 2
            lines += [f"sysctl -n {key.format(dev)} >/dev/null" for key in IF_SYSCTLS]
            lines.append(f"tc qdisc show dev {dev} >/dev/null")
            continue
        features = FEATURES if mode == "apply" else ORIGINALS
        lines += [f"ethtool -K {dev} {name} {value}" for name, value in features.items()]
        lines.append(f"ip link set dev {dev} mtu {MTU if mode == 'apply' else 1500}")
        lines.append(f"ip link set dev {dev} txqueuelen {TXQLEN if mode == 'apply' else 1000}")
        values = IF_SYSCTLS if mode == "apply" else {k: v for k, v in
                                                      zip(IF_SYSCTLS, ("0", "1"), strict=True)}
        lines += [f"sysctl -qw {key.format(dev)}={value}" for key, value in values.items()]
        lines.append(f"tc qdisc replace dev {dev} root {TBF}" if mode == "apply"
                     else f"tc qdisc del dev {dev} root")
    return "\n".join(lines) + "\n"


def timed_script(ns: Netns, script: str) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as handle:
        handle.write(script)
    started = time.perf_counter()
    ns.run("sh", "-e", handle.name, timeout=3600)
    elapsed = time.perf_counter() - started
    os.unlink(handle.name)
    return elapsed


def worker(ns: Netns, config: Path, phase: str) -> dict:
    argv = ns.python_argv("bench.apply_worker", str(config), phase)
    proc = run(argv, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    return json.loads(proc.stdout)


def startup_seconds(ns: Netns) -> float:
    started = time.perf_counter()
    ns.nodenetctl("--version", check=True)
    return time.perf_counter() - started


def measure(n: int) -> dict:
    node, peer = build_lab(n)
    try:
        with tempfile.TemporaryDirectory(prefix="nodenetd-bench-") as tmp:
            root = Path(tmp)
            (root / "profiles").mkdir()
            (root / "profiles" / "bench.yaml").write_text(PROFILE)
            config = root / "nodenetd.yaml"
            config.write_text(f"profiles: [bench]\nprofile_dirs: [{root / 'profiles'}]\n"
                              f"state_dir: {root / 'state'}\n")
            apply = worker(node, config, "apply")
            assert apply["changes"] == n * SETTINGS, apply
            plan = worker(node, config, "plan")
            assert plan["changes"] == 0 and plan["in_sync"] == n * SETTINGS, plan
            restore = worker(node, config, "restore")
            assert restore["restored"] == n * SETTINGS and restore["failed"] == 0, restore
            base_apply = timed_script(node, per_process_script(n, "apply"))
            base_verify = timed_script(node, per_process_script(n, "verify"))
            base_restore = timed_script(node, per_process_script(n, "restore"))
            qdisc = {kind: measure_qdisc(node, root / kind, n, kind) for kind in QDISC_PROFILES}
            return {
                "qdisc": qdisc,
                "n": n,
                "apply": apply["seconds"],
                "plan": plan["seconds"],
                "restore": restore["seconds"],
                "rss_mib": max(apply["max_rss_kib"], plan["max_rss_kib"],
                               restore["max_rss_kib"]) / 1024,
                "base_apply": base_apply,
                "base_verify": base_verify,
                "base_restore": base_restore,
                "startup": startup_seconds(node),
            }
    finally:
        node.delete()
        peer.delete()


def measure_qdisc(node: Netns, root: Path, n: int, kind: str) -> dict:
    """The qdisc alone: nodenetd's cold apply, no-op plan and restore, then tc per object."""
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "bench.yaml").write_text(QDISC_PROFILES[kind])
    config = root / "nodenetd.yaml"
    config.write_text(f"profiles: [bench]\nprofile_dirs: [{root / 'profiles'}]\n"
                      f"state_dir: {root / 'state'}\n")
    apply = worker(node, config, "apply")
    assert apply["changes"] == n, apply
    plan = worker(node, config, "plan")
    assert plan["changes"] == 0 and plan["in_sync"] == n, plan
    restore = worker(node, config, "restore")
    assert restore["restored"] == n and restore["failed"] == 0, restore
    return {
        "apply": apply["seconds"], "plan": plan["seconds"], "restore": restore["seconds"],
        "base_apply": timed_script(node, tc_script(n, kind, "apply")),
        "base_verify": timed_script(node, tc_script(n, kind, "verify")),
        "base_restore": timed_script(node, tc_script(n, kind, "restore")),
    }


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"kernel {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}, pyroute2 {pyroute2.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500,1000")
    args = parser.parse_args()
    rows = [measure(int(n)) for n in args.sizes.split(",")]
    print(f"\nbench/apply_scale on {machine()}")
    print("times in seconds; x = per-process baseline time / nodenetd time (same run)\n")
    print("| N | cold apply | baseline | x | no-op plan | baseline verify | x "
          "| restore | baseline | x | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['apply']:.3f} | {r['base_apply']:.2f} | "
              f"{r['base_apply'] / r['apply']:.0f}x | {r['plan']:.3f} | {r['base_verify']:.2f} | "
              f"{r['base_verify'] / r['plan']:.0f}x | {r['restore']:.3f} | "
              f"{r['base_restore']:.2f} | {r['base_restore'] / r['restore']:.0f}x | "
              f"{r['rss_mib']:.0f} |")
    print(f"\nnodenetctl start-up (interpreter + imports), not included above: "
          f"{rows[-1]['startup']:.2f} s")
    print("\nthe qdisc alone against tc run once per interface (tbf: 1 process; htb: 8 to "
          "build, 3 to verify, 1 to restore)\n")
    print("| N | qdisc | cold apply | tc | x | no-op plan | tc show | x | restore | tc del "
          "| x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for kind, q in r["qdisc"].items():
            print(f"| {r['n']} | {kind} | {q['apply']:.3f} | {q['base_apply']:.2f} | "
                  f"{q['base_apply'] / q['apply']:.0f}x | {q['plan']:.3f} | "
                  f"{q['base_verify']:.2f} | {q['base_verify'] / q['plan']:.0f}x | "
                  f"{q['restore']:.3f} | {q['base_restore']:.2f} | "
                  f"{q['base_restore'] / q['restore']:.0f}x |")
    largest = rows[-1]
    checks = [
        (f"cold apply of {largest['n']} <= 2 s", largest["apply"] <= 2.0),
        ("cold apply >= 20x the per-process baseline",
         largest["base_apply"] / largest["apply"] >= 20),
        (f"no-op plan of {largest['n']} <= 0.5 s", largest["plan"] <= 0.5),
        *((f"no-op plan of {largest['n']} {kind} qdiscs <= 0.5 s", q["plan"] <= 0.5)
          for kind, q in largest["qdisc"].items()),
    ]
    for label, ok in checks:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
