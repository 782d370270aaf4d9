"""The route actuator: keep a group's routes on its best uplink, with the kernel's fast path.

For each prefix the group owns (the default route and/or given prefixes, per family) it keeps,
in the group's table (main by default), all tagged with protocol ``RTPROT_NODENETD``:

- the **active slot**: ``PREFIX via GW dev ACTIVE metric M``. Switching the active member is
  one NLM_F_REPLACE of this route (same key: dst, table, metric), an atomic swap in the FIB:
  make-before-break, no moment without a route, nothing lost on failback;
- **standby routes**: ``PREFIX via GW_i dev MEMBER_i metric M+1+rank`` for every present
  member, usable ones first in priority order. With ``ignore_routes_with_linkdown`` on the
  members (the group's tuning, see ``config.failover.tuning_rules``), carrier loss on the
  active member makes the kernel skip its routes at once and the best standby carries the
  traffic before nodenetd has even read the event; nodenetd then moves the slot, which
  changes nothing for the traffic.

Per member, policy routing keeps that member's own traffic (its probes, bound to it with
SO_BINDTODEVICE) on its own path whatever the main table says: a table of its own
(``table_base`` + position, or the member's ``table``) with the group's prefixes via its
gateway, and a rule ``oif MEMBER lookup TABLE`` at ``rule_priority`` for each family.

Only routes and rules with nodenetd's protocol, in the group's tables and for the group's
prefixes, are ever changed or deleted; an administrator's routes are left alone (one with a
lower metric than the group's would take precedence: ``prepare`` warns about it). Routes go
when their member's link is gone or administratively down (the kernel flushes them itself)
and come back when it returns. ``release(restore=True)`` removes everything the group owns.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable, Mapping, Sequence

from nodenetd.config.failover import FailoverGroup, FailoverMember
from nodenetd.errors import KernelError
from nodenetd.failover.actuator import Actuator, MemberLink, NotifyTarget
from nodenetd.kernel.links import Link
from nodenetd.kernel.routes import RTPROT_NODENETD, Route, Routing, Rule

__all__ = ["RouteActuator"]

log = logging.getLogger("nodenetd.failover")

_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
RouteKey = tuple


class RouteActuator(Actuator):
    kind = "route"

    def __init__(self, group: FailoverGroup, routing: Routing | None = None) -> None:
        self.group = group
        self._routing = routing or Routing()
        self._prefixes = set(group.routes)
        self._tables = {group.table, *(m.table for m in group.members if m.table)}

    # -- the contract ---------------------------------------------------------------------

    def prepare(self, links: Mapping[str, Link]) -> str | None:
        self._warn_about_shadowing_routes()
        self._converge_rules()
        by_index = {link.index: name for name, link in links.items()}
        for route in self._owned():
            if route.table == self.group.table and route.metric == self.group.metric:
                name = by_index.get(route.oif or 0)
                if name in self.group.interfaces:
                    return name  # the slot a previous run left: continue from it
        return None

    def member_links(self, links: Mapping[str, Link]) -> dict[str, MemberLink]:
        return {name: MemberLink.of(links.get(name)) for name in self.group.interfaces}

    def converge(self, links: Mapping[str, Link], active: str | None,
                 ranking: Sequence[str]) -> bool:
        wrote = self._converge_rules()
        desired = {route.key: route for route in self._desired(links, active, ranking)}
        current = {route.key: route for route in self._owned()}
        replaces = [route for key, route in desired.items()
                    if key not in current or not _same_path(current[key], route)]
        # The active slot first: a failover's one route swap goes out before the standbys
        # are re-ranked.
        replaces.sort(key=lambda r: (r.table != self.group.table or r.metric != self.group.metric))
        deletes = [route for key, route in current.items() if key not in desired]
        if not replaces and not deletes:
            return wrote
        errors = [e for e in self._routing.apply(replaces, deletes, missing_ok=True) if e]
        for route in replaces:
            log.debug("failover group %s: route %s", self.group.name, route)
        if errors:
            raise errors[0]
        return True

    def notify_target(self, active: str) -> NotifyTarget:
        return NotifyTarget(active)

    def release(self, *, restore: bool) -> None:
        if not restore:
            return
        owned = self._owned()
        errors = [e for e in self._routing.apply((), owned, missing_ok=True) if e]
        for rule in self._owned_rules():
            self._routing.delete_rule(rule, missing_ok=True)
        log.info("failover group %s: removed %d route(s) and its rules", self.group.name,
                 len(owned))
        if errors:
            raise errors[0]

    def close(self) -> None:
        self._routing.close()

    # -- desired state --------------------------------------------------------------------

    def _desired(self, links: Mapping[str, Link], active: str | None,
                 ranking: Sequence[str]) -> Iterable[Route]:
        group = self.group
        for prefix in group.routes:
            version = prefix.version
            candidates = [name for name in ranking
                          if name in links and links[name].admin_up
                          and group.member(name).gateway_for(version) is not None]
            if not candidates:
                continue
            slot = active if active in candidates else candidates[0]
            yield self._route(prefix, group.member(slot), links, group.table, group.metric)
            for rank, name in enumerate(candidates):
                member = group.member(name)
                yield self._route(prefix, member, links, group.table, group.metric + 1 + rank)
                if member.table is not None:
                    yield self._route(prefix, member, links, member.table, group.metric)

    @staticmethod
    def _route(prefix, member: FailoverMember, links: Mapping[str, Link], table: int,
               metric: int) -> Route:
        return Route(dst=prefix, gateway=member.gateway_for(prefix.version),
                     oif=links[member.interface].index, table=table, metric=metric)

    def _desired_rules(self) -> list[Rule]:
        return [Rule(family=_FAMILY[version], priority=self.group.rule_priority,
                     table=member.table, oif=member.interface)
                for member in self.group.members if member.table is not None
                for version in (4, 6) if member.gateway_for(version) is not None]

    # -- current state --------------------------------------------------------------------

    def _owned(self) -> list[Route]:
        routes = []
        for table in sorted(self._tables):
            routes += [route for route in self._routing.routes(table=table,
                                                               protocol=RTPROT_NODENETD)
                       if route.dst in self._prefixes]
        return routes

    def _owned_rules(self) -> list[Rule]:
        tables = {m.table for m in self.group.members}
        return [rule for rule in self._routing.rules(protocol=RTPROT_NODENETD)
                if rule.table in tables and rule.priority == self.group.rule_priority]

    def _converge_rules(self) -> bool:
        desired = self._desired_rules()
        current = self._owned_rules()
        wrote = False
        for rule in desired:
            if rule not in current:
                self._routing.add_rule(rule)
                wrote = True
        for rule in current:
            if rule not in desired:
                self._routing.delete_rule(rule, missing_ok=True)
                wrote = True
        return wrote

    def _warn_about_shadowing_routes(self) -> None:
        try:
            routes = self._routing.routes(table=self.group.table)
        except KernelError as exc:
            log.warning("failover group %s: cannot read table %s: %s", self.group.name,
                        self.group.table, exc)
            return
        for route in routes:
            if (route.dst in self._prefixes and route.protocol != RTPROT_NODENETD
                    and route.metric <= self.group.metric):
                log.warning("failover group %s: %s takes precedence over the group's routes "
                            "(metric %d); remove it or raise its metric above %d",
                            self.group.name, route, self.group.metric, self.group.metric)


def _same_path(current: Route, desired: Route) -> bool:
    return current.gateway == desired.gateway and current.oif == desired.oif
