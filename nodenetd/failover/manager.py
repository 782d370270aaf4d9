"""Every failover group of the node, as the daemon sees them: start, events, reload, stop,
and the ``nodenetctl failover`` commands.

A group whose kernel objects cannot be set up yet (its bond's members do not exist, a
member has no address yet for its gateway) is logged and retried at the next link event that
concerns it, so a group defined before its NICs appear starts as soon as they do.

Reload keeps a group whose configuration is unchanged exactly as it is (health, damping
history, manual overrides, probes): only changed, new and removed groups are touched, and a
changed group starts from the kernel's current choice, so a reload moves no traffic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from nodenetd.config.failover import FailoverConfig, FailoverGroup
from nodenetd.daemon.api import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Reply
from nodenetd.errors import NodenetdError
from nodenetd.failover.actuator import Actuator
from nodenetd.failover.group import GroupRuntime
from nodenetd.health.policy import SwitchRefused
from nodenetd.kernel.links import Link

__all__ = ["Failover", "make_actuator"]

log = logging.getLogger("nodenetd.failover")

ACTIONS = ("status", "switch", "hold", "release")


def make_actuator(group: FailoverGroup) -> Actuator:
    if group.type == "bond":
        from nodenetd.failover.bond_group import BondActuator

        return BondActuator(group)
    from nodenetd.failover.route_group import RouteActuator

    return RouteActuator(group)


class Failover:
    """The node's failover groups on the daemon's loop."""

    def __init__(self, config: FailoverConfig | None, *,
                 links: Callable[[], Mapping[str, Link]], loop: asyncio.AbstractEventLoop,
                 actuator_factory: Callable[[FailoverGroup], Actuator] = make_actuator) -> None:
        self._links = links
        self._loop = loop
        self._factory = actuator_factory
        self.config = config or FailoverConfig()
        self.groups: dict[str, GroupRuntime] = {}
        self.waiting: dict[str, tuple[FailoverGroup, str]] = {}  # name -> (config, why)
        self._kernel_event_scheduled = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for group in self.config.groups:
            self._start(group)

    def _start(self, group: FailoverGroup) -> None:
        actuator = self._factory(group)
        runtime = GroupRuntime(group, actuator, links=self._links, loop=self._loop)
        try:
            runtime.start()
        except NodenetdError as exc:
            runtime.close()
            if self.waiting.get(group.name, (None, ""))[1] != str(exc):
                log.error("%s cannot start yet (retried when its interfaces change): %s",
                          group, exc)
            self.waiting[group.name] = (group, str(exc))
            return
        self.waiting.pop(group.name, None)
        self.groups[group.name] = runtime

    def close(self, *, restore: bool = False) -> None:
        for runtime in self.groups.values():
            runtime.close(restore=restore)
        self.groups.clear()

    def reload(self, config: FailoverConfig | None) -> list[str]:
        """Apply a new failover section; returns what changed, one line per group."""
        new = config or FailoverConfig()
        wanted = {g.name: g for g in new.groups}
        changes = []
        for name in [*self.groups, *self.waiting]:
            current = self.groups.get(name)
            old = current.config if current else self.waiting[name][0]
            if wanted.get(name) == old:
                continue
            if current is not None:
                current.close(restore=name not in wanted)
                del self.groups[name]
            self.waiting.pop(name, None)
            changes.append(f"{'changed' if name in wanted else 'removed'} group {name}")
        self.config = new
        for name, group in wanted.items():
            if name not in self.groups and name not in self.waiting:
                if not any(line.endswith(f"group {name}") for line in changes):
                    changes.append(f"added group {name}")
                self._start(group)
        return changes

    # -- events -------------------------------------------------------------------------------

    def on_link_change(self, names: set[str], at: float) -> None:
        """Links changed (rtnetlink); ``names`` are their names (old and new on a rename)."""
        for group, _ in list(self.waiting.values()):
            if names & _interfaces(group):
                self._start(group)
        for runtime in self.groups.values():
            if names & _interfaces(runtime.config):
                runtime.on_links(at)
                runtime.on_kernel_event()

    def on_route_event(self) -> None:
        """A route or rule changed: route groups check theirs, once per burst of events."""
        if self._kernel_event_scheduled or not any(
                r.actuator.kind == "route" for r in self.groups.values()):
            return
        self._kernel_event_scheduled = True
        self._loop.call_soon(self._route_check)

    def _route_check(self) -> None:
        self._kernel_event_scheduled = False
        for runtime in self.groups.values():
            if runtime.actuator.kind == "route":
                runtime.on_kernel_event()

    # -- control ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "groups": [runtime.status() for runtime in self.groups.values()],
            "waiting": [{"name": name, "reason": why} for name, (_, why) in
                        self.waiting.items()],
        }

    def control(self, args: Mapping[str, Any]) -> Reply:
        """``nodenetctl failover ACTION [GROUP [MEMBER]] [--for D]``."""
        from nodenetd.cli import render  # the CLI's text rendering, shared

        action = args.get("action")
        if action not in ACTIONS:
            return Reply(EXIT_USAGE, "", error=f"nodenetctl: unknown failover action "
                         f"{action!r} (known: {', '.join(ACTIONS)})")
        if action == "status":
            status = self.status()
            return Reply(EXIT_OK, render.failover_text(status), status)
        name = args.get("group")
        runtime = self.groups.get(name or "")
        if runtime is None:
            known = ", ".join(self.groups) or "none"
            why = f" ({self.waiting[name][1]})" if name in self.waiting else ""
            return Reply(EXIT_FAILED, "", error=f"nodenetctl: no running failover group "
                         f"{name!r}{why}; groups: {known}")
        try:
            if action == "switch":
                decision = runtime.switch(str(args.get("member")), args.get("duration"))
            elif action == "hold":
                decision = runtime.hold()
            else:
                decision = runtime.release_override()
        except SwitchRefused as exc:
            return Reply(EXIT_FAILED, "", error=f"nodenetctl: {exc}")
        status = runtime.status()
        text = f"failover group {name}: {decision}"
        if runtime.kernel_error:
            return Reply(EXIT_FAILED, text, status,
                         error=f"nodenetctl: the kernel refused: {runtime.kernel_error}")
        return Reply(EXIT_OK, text, status)


def _interfaces(group: FailoverGroup) -> set[str]:
    return {*group.interfaces, *([group.bond] if group.bond else [])}
