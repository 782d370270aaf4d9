"""Fixtures for the kernel lab lane: a cabled pair of namespaces and netem impairment on it.

Gray failures (a path that is slow or lossy but not down) and QoS are tested by impairing a
veth with netem and measuring the effect. The fixtures build that declaratively and always
undo it, even when the test fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.lab.netns import Netns
from tests.lab.node import Node


@dataclass(frozen=True)
class Wire:
    """Two namespaces joined by one veth pair, each end addressed in 192.0.2.0/24 (TEST-NET-1)."""

    left: Netns
    right: Netns
    left_dev: str = "w0"
    right_dev: str = "w1"
    left_addr: str = "192.0.2.1"
    right_addr: str = "192.0.2.2"


@pytest.fixture
def wire(make_netns) -> Wire:
    """A fresh cabled pair; both namespaces are removed at teardown by ``make_netns``."""
    w = Wire(make_netns("left"), make_netns("right"))
    w.left.veth(w.left_dev, w.right_dev, peer_ns=w.right)
    w.left.run("ip", "addr", "add", f"{w.left_addr}/24", "dev", w.left_dev)
    w.right.run("ip", "addr", "add", f"{w.right_addr}/24", "dev", w.right_dev)
    return w


@dataclass
class Netem:
    """Adds netem impairments to interfaces and removes every one of them at teardown."""

    applied: list[tuple[Netns, str]] = field(default_factory=list)

    def apply(
        self,
        ns: Netns,
        dev: str,
        *,
        delay_ms: float = 0,
        jitter_ms: float = 0,
        loss_pct: float = 0,
        rate: str | None = None,
    ) -> None:
        """Replace DEV's root qdisc with netem (egress only: impair both ends for both ways)."""
        argv = ["tc", "qdisc", "replace", "dev", dev, "root", "netem"]
        if delay_ms or jitter_ms:
            argv += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
        if loss_pct:
            argv += ["loss", f"{loss_pct}%"]
        if rate:
            argv += ["rate", rate]
        ns.run(*argv)
        if (ns, dev) not in self.applied:
            self.applied.append((ns, dev))

    def clear(self, ns: Netns, dev: str) -> None:
        """Back to the default root qdisc; a namespace already gone is not an error."""
        ns.run("tc", "qdisc", "del", "dev", dev, "root", check=False)
        if (ns, dev) in self.applied:
            self.applied.remove((ns, dev))

    def qdisc(self, ns: Netns, dev: str) -> dict:
        """The root qdisc as ``tc -j qdisc show`` reports it (the witness)."""
        return next(q for q in ns.json("tc", "-j", "qdisc", "show", "dev", dev) if q.get("root"))


@pytest.fixture
def netem() -> Iterator[Netem]:
    impair = Netem()
    yield impair
    for ns, dev in reversed(list(impair.applied)):
        impair.clear(ns, dev)


@pytest.fixture
def node(make_netns, tmp_path) -> Node:
    """A lab node whose nodenetctl runs in-process (forked into the namespace)."""
    return Node(make_netns("node"), make_netns("switch"), tmp_path, in_process=True)
