"""What a plan is made of: changes to make, settings skipped with a reason, settings in sync."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodenetd.config.model import Origin


@dataclass(frozen=True)
class Target:
    """What a setting belongs to: an interface (name and ifindex), or the node (None)."""

    device: str | None = None
    ifindex: int | None = None

    def __str__(self) -> str:
        return self.device or "(node)"


def setting_id(kind: str, target: Target, key: str) -> str:
    """Stable identity of a setting, used as the journal key."""
    return f"{kind}/{target.device or '-'}/{key}"


@dataclass(frozen=True)
class Item:
    kind: str  # setting kind: sysctl, link, features, channels, rings, coalesce
    target: Target
    key: str  # the setting within the kind: "mtu", "rx-gro", "net.ipv4.tcp_rmem"
    why: Origin

    @property
    def id(self) -> str:
        return setting_id(self.kind, self.target, self.key)

    @property
    def label(self) -> str:
        return f"{self.target} {self.kind}.{self.key}" if self.target.device else self.key


@dataclass(frozen=True)
class Change(Item):
    current: Any
    desired: Any


@dataclass(frozen=True)
class Skip(Item):
    desired: Any
    reason: str


@dataclass(frozen=True)
class InSync(Item):
    value: Any


@dataclass(frozen=True)
class PlanWarning:
    """Something the plan must tell that is neither a change nor a skip: a daemon that
    manages the same thing (irqbalance), a setting without effect unless another is set."""

    target: Target
    kind: str
    message: str


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    in_sync: list[InSync] = field(default_factory=list)
    owned: list[Skip] = field(default_factory=list)  # left to their owners (kube-proxy...)
    observed: list[Change] = field(default_factory=list)  # differ, but observe-only
    managed: dict[str, list[str]] = field(default_factory=dict)  # device -> rule labels
    warnings: list[PlanWarning] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes
