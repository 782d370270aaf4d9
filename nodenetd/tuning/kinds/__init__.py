"""Setting kinds, in the order a transaction applies them.

Global sysctls first (independent of any device); then per interface: a bond's options and
its members' priorities (the failover group's; nothing below depends on them), queue counts before
ring sizes and offloads that depend on them, coalescing, offload features, link attributes
(an MTU change can reset the device), the qdisc tree (an mq has one child per TX queue,
so it follows channels too), per-interface sysctls, and queue steering and IRQ
affinity last: they belong to queues, which channels create and remove, and a driver may
reset them when it reopens its rings (mlx5 sets XPS whenever it opens its channels). They
follow channels (``SettingKind.follows``): re-planned within the transaction after a channel
change, and restored after channels are.
"""

from __future__ import annotations

from nodenetd.tuning.kind import SettingKind
from nodenetd.tuning.kinds.bond import BondKind, BondSlaveKind
from nodenetd.tuning.kinds.channels import ChannelsKind
from nodenetd.tuning.kinds.coalesce import CoalesceKind
from nodenetd.tuning.kinds.features import FeaturesKind
from nodenetd.tuning.kinds.link import LinkKind
from nodenetd.tuning.kinds.qdisc import QdiscKind
from nodenetd.tuning.kinds.rings import RingsKind
from nodenetd.tuning.kinds.steering import IrqAffinityKind, SteeringKind
from nodenetd.tuning.kinds.sysctl import SysctlKind

KINDS: dict[str, SettingKind] = {
    kind.name: kind
    for kind in (
        SysctlKind(),
        BondKind(),
        BondSlaveKind(),
        ChannelsKind(),
        RingsKind(),
        CoalesceKind(),
        FeaturesKind(),
        LinkKind(),
        QdiscKind(),
        SteeringKind(),
        IrqAffinityKind(),
    )
}

APPLY_ORDER: tuple[str, ...] = (
    "bond", "bond_slave", "channels", "rings", "coalesce", "features", "link", "qdisc",
    "sysctl", "steering", "irq_affinity")


def order_of(kind: str, device: str | None) -> int:
    """Global sysctls go first; per-interface kinds follow APPLY_ORDER."""
    if kind == "sysctl" and device is None:
        return -1
    return APPLY_ORDER.index(kind)
