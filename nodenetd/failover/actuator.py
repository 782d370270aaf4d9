"""What a failover group does to the kernel: the one contract the bond and route actuators
share, so the group runtime (``group.py``) drives either without knowing which.

An actuator is *convergent*: ``converge(active, ranking)`` makes the kernel reflect the
group's choice (the active member, and the order in which the others should take over if the
kernel's own fast path acts first) and writes only what differs, so calling it again after
any kernel event is cheap and flaps nothing. The kernel keeps the fast path (bond miimon,
``ignore_routes_with_linkdown`` plus route metrics); the actuator only steers.

Calls are synchronous netlink requests of a few hundred microseconds, made on the event loop
on purpose: a failover is the one moment where a thread hop (and the GIL hand-over behind
it) would add latency for nothing, and nothing else should interleave with it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nodenetd.kernel.links import Link

__all__ = ["Actuator", "MemberLink", "NotifyTarget"]


@dataclass(frozen=True, slots=True)
class MemberLink:
    """A member's link as the group should judge it: present, carrier, operstate."""

    present: bool
    carrier: bool
    operstate: str  # links.OPERSTATES name
    downs: int | None = None  # IFLA_CARRIER_DOWN_COUNT: every carrier loss, coalesced or not

    @classmethod
    def of(cls, link: Link | None, carrier: bool | None = None) -> MemberLink:
        """The member's link; ``carrier`` overrides what the link says (a bond's view)."""
        if link is None:
            return cls(False, False, "NOTPRESENT")
        up = link.carrier and link.admin_up if carrier is None else carrier
        return cls(True, up, link.operstate, link.carrier_down_count)

    def hidden_downs(self, previous: MemberLink | None) -> int:
        """Carrier losses between ``previous`` and this observation that neither showed."""
        if previous is None or previous.downs is None or self.downs is None:
            return 0
        seen = 1 if previous.carrier and not self.carrier else 0
        return max(0, self.downs - previous.downs - seen)


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where peer notifications go after a switch: the device and the MAC to announce."""

    interface: str
    mac: str | None = None  # None: the interface's own


class Actuator(ABC):
    """Drives one group's kernel objects. Raises nodenetd's KernelError subclasses."""

    kind: str

    @abstractmethod
    def prepare(self, links: Mapping[str, Link]) -> str | None:
        """Create or adopt what the group needs; the member the kernel uses now (None if it
        cannot tell), so the group starts from the kernel's choice instead of switching."""

    @abstractmethod
    def member_links(self, links: Mapping[str, Link]) -> dict[str, MemberLink]:
        """Every member's link as this group type must judge it (a bond member also needs
        the bond's own view of it)."""

    @abstractmethod
    def converge(self, links: Mapping[str, Link], active: str | None,
                 ranking: Sequence[str]) -> bool:
        """Make the kernel reflect ``active`` and the fallback ``ranking`` (best first);
        True if anything was written."""

    @abstractmethod
    def notify_target(self, active: str) -> NotifyTarget:
        """The device whose addresses are announced after switching to ``active``."""

    @abstractmethod
    def release(self, *, restore: bool) -> None:
        """The daemon stops or the group is removed: ``restore`` undoes what the group owns
        (its routes and rules); otherwise the kernel keeps the last choice."""

    def close(self) -> None:  # noqa: B027 - optional: actuators without sockets
        """Close sockets."""
