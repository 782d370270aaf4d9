"""The bond actuator: steer a kernel active-backup bond's active member.

The kernel keeps its carrier fast path (miimon), which acts in one MII round without
userspace. nodenetd adds path health and steers the bond with IFLA_BOND_ACTIVE_SLAVE. The
two must never fight, which takes three things:

- ``primary_reselect: failure`` (the group's tuning, see ``config.failover.tuning_rules``):
  the kernel never moves back to a primary on its own, so a choice nodenetd made stays;
- member priorities (IFLA_BOND_SLAVE_PRIO) mirror the group's, so when the kernel fails over
  on carrier before nodenetd hears of it, it picks the member nodenetd would pick;
- a member counts as linked only while the *bond* also sees it up (MII status ``up``), not
  merely while it has carrier: during the bond's updelay, or when its ARP monitor has failed
  the member, the kernel refuses it as the active slave, and nodenetd must not keep asking.

``prepare`` adopts an existing bond (it must be active-backup) or creates it with the
group's options, enslaves every configured member that exists and is not yet enslaved, and
brings the bond up. Members that appear later are enslaved by ``converge``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from nodenetd.config.failover import FailoverGroup
from nodenetd.errors import Gone
from nodenetd.failover.actuator import Actuator, MemberLink, NotifyTarget
from nodenetd.kernel.bond import BondAdapter, BondOptions, BondStatus, MiiStatus
from nodenetd.kernel.links import Link

__all__ = ["BondActuator"]

log = logging.getLogger("nodenetd.failover")


class BondActuator(Actuator):
    kind = "bond"

    def __init__(self, group: FailoverGroup, adapter: BondAdapter | None = None) -> None:
        self.group = group
        self.bond = group.bond or ""
        self._adapter = adapter or BondAdapter()
        self.created = False

    def prepare(self, links: Mapping[str, Link]) -> str | None:
        if self.bond in links:
            status = self._adapter.adopt(self.bond)
            log.info("failover group %s: adopted bond %s (active %s)", self.group.name,
                     self.bond, status.active_member or "none")
        else:
            options = BondOptions(primary_reselect="failure").merged(
                BondOptions(**{k: v for k, v in self.group.bond_options.given().items()
                               if k not in ("primary", "active_slave")}))
            status = self._adapter.create_active_backup(self.bond, options)
            self.created = True
            log.info("failover group %s: created bond %s", self.group.name, self.bond)
        if self._enslave_present(links, status):
            status = self._adapter.status(self.bond)
        if not status.admin_up:
            self._adapter.set_up(self.bond)
        if self.created and self.group.bond_options.primary:
            self._adapter.set_options(self.bond,
                                      BondOptions(primary=self.group.bond_options.primary))
        return self._adapter.status(self.bond).active_member

    def _enslave_present(self, links: Mapping[str, Link], status: BondStatus) -> bool:
        """Enslave every configured member that exists and that the bond does not hold yet,
        judged by the bond's own member list (``status``): the event view's ``master`` can lag
        behind (events queued before an enslave still show the member free)."""
        enslaved = {member.name for member in status.members}
        wrote = False
        for member in self.group.interfaces:
            if member not in links or member in enslaved:
                continue
            self._adapter.enslave(self.bond, member)
            log.info("failover group %s: enslaved %s to %s", self.group.name, member, self.bond)
            wrote = True
        return wrote

    def _status(self) -> BondStatus | None:
        try:
            return self._adapter.status(self.bond)
        except Gone:
            return None

    def member_links(self, links: Mapping[str, Link]) -> dict[str, MemberLink]:
        status = self._status()
        enslaved = {m.name: m for m in status.members} if status else {}
        states = {}
        for name in self.group.interfaces:
            member = enslaved.get(name)
            link = links.get(name)
            if member is None or link is None:
                # Not (yet) in the bond: it cannot carry the bond's traffic.
                states[name] = MemberLink(link is not None, False, "NOTPRESENT")
                continue
            up = member.carrier and member.admin_up and member.mii_status is MiiStatus.UP
            states[name] = MemberLink.of(link, carrier=up)
        return states

    def converge(self, links: Mapping[str, Link], active: str | None,
                 ranking: Sequence[str]) -> bool:
        if self.bond not in links:
            return False
        status = self._adapter.status(self.bond)
        wrote = self._enslave_present(links, status)
        if wrote:
            status = self._adapter.status(self.bond)
        if active is None or status.active_member == active:
            return wrote
        try:
            member = status.member(active)
        except KeyError:
            return wrote
        if member.mii_status is not MiiStatus.UP:
            return wrote  # the kernel would refuse it; it says so itself once it is up
        self._adapter.set_active(self.bond, active)
        return True

    def notify_target(self, active: str) -> NotifyTarget:
        # The bond's addresses and MAC, sent on the bond: it transmits through the new
        # active member, which is the port the switch must learn the bond's MAC on.
        return NotifyTarget(self.bond)

    def release(self, *, restore: bool) -> None:
        # The bond is the node's connectivity: it stays, with its last active member, on
        # stop and on restore alike. Its options are tuning settings and are restored by
        # the journal like every other setting.
        return None

    def close(self) -> None:
        self._adapter.close()
