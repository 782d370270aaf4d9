"""bench/apply_scale: nodenetd against the per-process way (one ethtool/ip/sysctl process per
setting, as shell scripts and tuned do it), measured in the same run on the same interfaces.

N veths in a namespace; a profile sets 4 offload features, txqueuelen, MTU and 2
per-interface sysctls on each. Reports cold apply, no-op plan and restore times, peak RSS,
and the baseline ratio. Targets (issue 2): cold apply of 1000 within 2 s and >= 20x faster
than the baseline; no-op plan of 1000 within 0.5 s.

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

PROFILE = f"""\
interfaces:
  - match: {{name: ["b*"]}}
    mtu: {MTU}
    txqueuelen: {TXQLEN}
    features: {json.dumps({k: v == "on" for k, v in FEATURES.items()})}
    sysctls:
      net.ipv4.conf.IF.rp_filter: 2
      net.ipv6.conf.IF.accept_ra: 0
"""


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
            continue
        features = FEATURES if mode == "apply" else ORIGINALS
        lines += [f"ethtool -K {dev} {name} {value}" for name, value in features.items()]
        lines.append(f"ip link set dev {dev} mtu {MTU if mode == 'apply' else 1500}")
        lines.append(f"ip link set dev {dev} txqueuelen {TXQLEN if mode == 'apply' else 1000}")
        values = IF_SYSCTLS if mode == "apply" else {k: v for k, v in
                                                      zip(IF_SYSCTLS, ("0", "1"), strict=True)}
        lines += [f"sysctl -qw {key.format(dev)}={value}" for key, value in values.items()]
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
            assert apply["changes"] == n * 8, apply
            plan = worker(node, config, "plan")
            assert plan["changes"] == 0 and plan["in_sync"] == n * 8, plan
            restore = worker(node, config, "restore")
            assert restore["restored"] == n * 8 and restore["failed"] == 0, restore
            base_apply = timed_script(node, per_process_script(n, "apply"))
            base_verify = timed_script(node, per_process_script(n, "verify"))
            base_restore = timed_script(node, per_process_script(n, "restore"))
            return {
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
    largest = rows[-1]
    checks = [
        (f"cold apply of {largest['n']} <= 2 s", largest["apply"] <= 2.0),
        ("cold apply >= 20x the per-process baseline",
         largest["base_apply"] / largest["apply"] >= 20),
        (f"no-op plan of {largest['n']} <= 0.5 s", largest["plan"] <= 0.5),
    ]
    for label, ok in checks:
        print(f"target {'met' if ok else 'MISSED'}: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
