"""The failover lab: tests/lab/uplinks.py's node, routers and server, plus nodenetd running in
the node with a route group over both uplinks, and the witnesses failover tests read."""

from __future__ import annotations

import json
import random
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.daemon_lab import Daemon, eventually
from tests.lab.netns import Netns
from tests.lab.node import Node
from tests.lab.uplinks import SERVER_V4, UplinkLab, gateway

PROBES = "[{{icmp: {server}}}, {{arp: {gateway}}}]"


def member_yaml(member: str, priority: int, probes: str | None = None, extra: str = "") -> str:
    """One route-group member with both gateways; default probes: the server (ICMP through
    the member) and the member's router (ARP)."""
    probes = probes or PROBES.format(server=SERVER_V4, gateway=gateway(member))
    return textwrap.dedent(f"""\
        - interface: {member}
          priority: {priority}
          gateway: {gateway(member)}
          gateway6: {gateway(member, 6)}
          probes: {probes}
    """) + (textwrap.indent(textwrap.dedent(extra), "  ") if extra else "")


def group_yaml(*, interval: float = 0.02, preempt_delay: float = 1.0, failback: str = "preempt",
               extra: str = "", members: str | None = None) -> str:
    members = members or member_yaml("a0", 100) + member_yaml("b0", 50)
    return (textwrap.dedent(f"""\
        failover:
          groups:
            - name: uplinks
              type: route
              routes: [default]
              interval: {interval}
              preempt_delay: {preempt_delay}
              failback: {failback}
              notify: {{count: 2, interval: 0.05}}
        """) + textwrap.indent(textwrap.dedent(extra), " " * 6)
        + "      members:\n" + textwrap.indent(members, " " * 8))


@dataclass
class FailoverLab:
    uplinks: UplinkLab
    node: Node
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def ns(self) -> Netns:
        return self.uplinks.node

    def write_config(self, failover: str, daemon: str = "") -> Path:
        self.node.write_profile("none", "description: no tuning of its own\n")
        return self.node.write_config(
            ["none"], f"daemon: {{control_socket: {self.node.root / 'ctl.sock'}{daemon}}}\n"
            + failover)

    def start(self, failover: str | None = None, daemon: str = "") -> Daemon:
        self.write_config(failover or group_yaml(), daemon)
        started = Daemon.start(self.node)
        self.daemons.append(started)
        started.wait_ready()
        return started

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()

    # -- nodenetd's own view -------------------------------------------------------------

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return self.ns.nodenetctl(*args, "--config", str(self.node.config))

    def status(self) -> dict[str, Any]:
        proc = self.ctl("failover", "status", "-o", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["groups"][0]

    def member(self, name: str) -> dict[str, Any]:
        return next(m for m in self.status()["members"] if m["name"] == name)

    def wait_active(self, member: str, timeout: float = 15) -> dict[str, Any]:
        status = eventually(lambda: (s := self.status())["active"] == member
                            and s["active_usable"] and s, timeout)
        assert status, f"{member} never became active: {self.status()}"
        return status

    def wait_usable(self, member: str, usable: bool = True, timeout: float = 15) -> None:
        assert eventually(lambda: self.member(member)["usable"] is usable, timeout), \
            self.status()

    # -- the kernel's view (independent witnesses) ------------------------------------------

    def owned_routes(self, version: int = 4, table: str = "main") -> list[dict[str, Any]]:
        return self.ns.json("ip", "-j", f"-{version}", "route", "show", "table", table,
                            "proto", "177")

    def slot(self, version: int = 4) -> str | None:
        """The device of the group's active-slot route (metric 50) per ``ip route``."""
        slot = [r for r in self.owned_routes(version) if r.get("metric") == 50]
        return slot[0]["dev"] if slot else None

    def ping(self, address: str = SERVER_V4, *, count: int = 3, interval: float = 0.2,
             timeout: float = 60) -> tuple[int, int]:
        """(transmitted, received) of ``ping`` from the node: the traffic witness."""
        family = "-6" if ":" in address else "-4"
        proc = self.ns.run("ping", family, "-q", "-n", "-c", str(count), "-i", str(interval),
                           "-W", "1", address, check=False, timeout=timeout)
        for line in proc.stdout.splitlines():
            if "packets transmitted" in line:
                sent, received = line.split(",")[:2]
                return int(sent.split()[0]), int(received.split()[0])
        raise AssertionError(f"no ping summary: {proc.stdout} {proc.stderr}")

    def log_lines(self, text: str) -> list[str]:
        return [line for line in self.daemons[-1].log.splitlines() if text in line]


def flap(lab: UplinkLab, member: str, *, hz: float, seconds: float) -> int:
    """Toggle the router port facing ``member`` at ``hz`` on average for ``seconds``; returns
    the number of down/up cycles. It ends with the port up.

    Each half period is jittered (+-40 %), as real flaps are: a strictly periodic toggle is
    sampled by the kernel's link-watch (about once a second under load) at the same phase
    every time, and would look like a stable link from notifications alone."""
    argv = lab.routers[member].exec_argv("ip", "-batch", "-")
    rng = random.Random(0)
    cycles = 0
    with subprocess.Popen(argv, stdin=subprocess.PIPE, text=True) as batch:
        assert batch.stdin is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for state in ("down", "up"):
                batch.stdin.write(f"link set r{member} {state}\n")
                batch.stdin.flush()
                time.sleep(0.5 / hz * rng.uniform(0.6, 1.4))
            cycles += 1
        batch.stdin.close()
    return cycles
