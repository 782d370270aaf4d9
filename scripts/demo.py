"""The main job on an embedded lab: build namespaces with veth 'NICs', then run
validate, plan, apply, status and restore with the built-in kubernetes-node profile plus
node overrides for the lab's NICs, printing each step, and remove the lab."""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path

from tests.lab.netns import Netns

NODE_CONFIG = """\
# Lab node config: the built-in kubernetes-node profile, plus overrides for the lab NICs.
profiles: [kubernetes-node]
state_dir: {state_dir}
overrides:
  sysctls:
    net.ipv4.tcp_slow_start_after_idle: 0
  interfaces:
    - name: lab-nics
      match:
        name: ["lab*"]
      mtu: 9000
      txqueuelen: 5000
      features:
        gro: true
        tso: false
      channels:
        rx: 2
        tx: 2
      sysctls:
        net.ipv4.conf.IF.rp_filter: 2
        net.ipv6.conf.IF.accept_ra: 0
"""


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def main() -> int:
    node = Netns.create("demo-node")
    switch = Netns.create("demo-switch")
    failures = 0
    try:
        with tempfile.TemporaryDirectory(prefix="nodenetd-demo-") as tmp:
            config = Path(tmp) / "nodenetd.yaml"
            config.write_text(NODE_CONFIG.format(state_dir=Path(tmp) / "state"))
            step(f"lab: namespace {node.name} with NICs lab0, lab1 (veth, 4 queues) "
                 f"cabled to {switch.name}")
            for i in range(2):
                node.veth(f"lab{i}", f"port{i}", peer_ns=switch, queues=4)
            print(textwrap.indent(config.read_text(), "    "))
            for title, args in (
                ("check the config and its profiles", ["validate", str(config)]),
                ("what would change", ["plan", "--config", str(config)]),
                ("apply as one transaction", ["apply", "--config", str(config)]),
                ("managed interfaces and the journal", ["status", "--config", str(config)]),
                ("plan again: nothing left to change", ["plan", "--config", str(config)]),
                ("put every original back", ["restore", "--config", str(config)]),
                ("status after restore", ["status", "--config", str(config)]),
            ):
                step(f"{title}: nodenetctl {' '.join(args)}")
                proc = node.nodenetctl(*args)
                print(proc.stdout, end="")
                print(proc.stderr, end="", file=sys.stderr)
                if proc.returncode != 0:
                    print(f"!! exit status {proc.returncode}")
                    failures += 1
    finally:
        step("removing the lab")
        node.delete()
        switch.delete()
    print("\ndemo " + ("FAILED" if failures else "finished: every step succeeded"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
