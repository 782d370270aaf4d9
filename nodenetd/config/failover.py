"""The node config's ``failover:`` section: typed failover groups, and the checks a schema
cannot make.

The schema (``node.schema.json#/$defs/group``) checks shapes, names and ranges. What needs
the whole section or real parsing is checked here, and every problem is one
:class:`~nodenetd.errors.ConfigIssue` at the line it is about:

- group names are unique, and an interface belongs to at most one group (two groups
  steering one NIC would fight);
- a bond group names its ``bond`` and takes no route keys; a route group has ``routes``, a
  gateway of each family it routes, and takes no bond keys;
- probes have exactly one kind (``icmp``, ``icmp6``, ``arp``, ``ns``) whose address family
  fits, and ``quorum: N`` can be met by the member's probes;
- damping values are consistent (reuse below suppress, a ceiling above suppress) and bond
  options are ones the bond adapter can send (``primary`` names a member, not both
  ``miimon`` and ``arp_interval``).

Group-level ``interval``/``timeout``/``rise``/``fall``/``combine``/``up_delay``/``down_delay``
are defaults that each member may override (probe ``interval``/``timeout`` per probe).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from nodenetd.config.model import InterfaceRule, Origin, Selector, SysctlValue, Wanted
from nodenetd.config.yamlload import YDict, YList, format_path, locate
from nodenetd.errors import ConfigIssue, SourcePosition
from nodenetd.health.damping import DampingConfig
from nodenetd.health.probes import ProbeKind, ProbeSpec, ProbeSpecError
from nodenetd.health.targets import ANY, DEFAULT_FALL, DEFAULT_RISE, Combine
from nodenetd.kernel.bond import BondOptions

__all__ = [
    "DEFAULT_METRIC",
    "DEFAULT_PROBE_INTERVAL",
    "FailoverConfig",
    "FailoverGroup",
    "FailoverMember",
    "build_failover",
    "check_failover",
    "tuning_rules",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Gateway = ipaddress.IPv4Address | ipaddress.IPv6Address

# Seconds. 100 ms x fall 3 finds a gray failure in ~0.4 s for ~0.2 % of a core per member
# and target pair, and sends 10 probes a second to each target, which no router's control
# plane policing minds; groups that need 50 ms ask for 0.01 (and pay ~10x the CPU).
DEFAULT_PROBE_INTERVAL = 0.1
DEFAULT_METRIC = 50  # below the 100/1024 that DHCP clients and the kernel give their routes
DEFAULT_TABLE_BASE = 1000
DEFAULT_RULE_PRIORITY = 1000  # before the main table's rule (32766)
DEFAULT_NOTIFY_COUNT = 3
DEFAULT_NOTIFY_INTERVAL = 0.2
MAIN_TABLE = 254
_OPTION_ALIASES = {"num_grat_arp": "num_peer_notif"}  # bonding.rst: one setting, two names
_IPV4_DEFAULT = ipaddress.IPv4Network("0.0.0.0/0")
_IPV6_DEFAULT = ipaddress.IPv6Network("::/0")


@dataclass(frozen=True)
class FailoverMember:
    interface: str
    priority: int = 0
    probes: tuple[ProbeSpec, ...] = ()
    combine: Combine = ANY
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    up_delay: float = 0.0
    down_delay: float = 0.0
    gateway: ipaddress.IPv4Address | None = None  # route groups
    gateway6: ipaddress.IPv6Address | None = None
    table: int | None = None  # route groups: the member's policy table

    def gateway_for(self, version: int) -> Gateway | None:
        return self.gateway if version == 4 else self.gateway6


@dataclass(frozen=True)
class FailoverGroup:
    """One failover group as configured; ``position`` is its line in the node config."""

    name: str
    type: Literal["bond", "route"]
    members: tuple[FailoverMember, ...]
    failback: Literal["preempt", "sticky"] = "preempt"
    preempt_delay: float = 10.0
    damping: DampingConfig | None = field(default_factory=DampingConfig)
    notify_count: int = DEFAULT_NOTIFY_COUNT
    notify_interval: float = DEFAULT_NOTIFY_INTERVAL
    bond: str | None = None  # bond groups
    bond_options: BondOptions = field(default_factory=BondOptions)
    routes: tuple[Network, ...] = ()  # route groups
    metric: int = DEFAULT_METRIC
    table: int = MAIN_TABLE
    rule_priority: int = DEFAULT_RULE_PRIORITY
    position: SourcePosition | None = field(default=None, compare=False)

    def member(self, interface: str) -> FailoverMember:
        for member in self.members:
            if member.interface == interface:
                return member
        raise KeyError(interface)

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(m.interface for m in self.members)

    def __str__(self) -> str:
        where = f" ({self.position})" if self.position else ""
        return f"failover group {self.name}{where}"


@dataclass(frozen=True)
class FailoverConfig:
    groups: tuple[FailoverGroup, ...] = ()

    def group(self, name: str) -> FailoverGroup | None:
        return next((g for g in self.groups if g.name == name), None)


# --------------------------------------------------------------------------- building


def build_failover(doc: YDict) -> FailoverConfig:
    """The typed section of a node config that :func:`check_failover` found valid."""
    section = doc.get("failover") or {}
    groups = section.get("groups") or YList(doc.pos)
    return FailoverConfig(tuple(
        _group(raw, index, groups.item_pos[index]) for index, raw in enumerate(groups)))


def _group(raw: YDict, index: int, position: SourcePosition) -> FailoverGroup:
    defaults = {key: raw[key] for key in _MEMBER_DEFAULTS if key in raw}
    members = tuple(_member(m, defaults, position, raw)
                    for position, m in enumerate(raw["members"]))
    kind = raw["type"]
    table = raw.get("table", "main")
    notify = raw.get("notify") or {}
    return FailoverGroup(
        name=raw["name"],
        type=kind,
        members=members,
        failback=raw.get("failback", "preempt"),
        preempt_delay=float(raw.get("preempt_delay", 10.0)),
        damping=_damping(raw.get("damping")),
        notify_count=int(notify.get("count", DEFAULT_NOTIFY_COUNT)),
        notify_interval=float(notify.get("interval", DEFAULT_NOTIFY_INTERVAL)),
        bond=raw.get("bond"),
        bond_options=_bond_options(raw.get("options") or {}),
        routes=_routes(raw.get("routes") or (), members),
        metric=int(raw.get("metric", DEFAULT_METRIC)),
        table=MAIN_TABLE if table == "main" else int(table),
        rule_priority=int(raw.get("rule_priority", DEFAULT_RULE_PRIORITY)),
        position=position,
    )


_MEMBER_DEFAULTS = ("interval", "timeout", "rise", "fall", "combine", "up_delay", "down_delay")


def _member(raw: YDict, defaults: dict[str, Any], position: int,
            group: YDict) -> FailoverMember:
    merged = {**defaults, **{k: raw[k] for k in _MEMBER_DEFAULTS if k in raw}}
    base = int(group.get("table_base", DEFAULT_TABLE_BASE))
    return FailoverMember(
        interface=raw["interface"],
        priority=int(raw.get("priority", 0)),
        probes=tuple(_probe(p, merged) for p in raw.get("probes") or ()),
        combine=Combine.parse(merged.get("combine", "any")),
        rise=int(merged.get("rise", DEFAULT_RISE)),
        fall=int(merged.get("fall", DEFAULT_FALL)),
        up_delay=float(merged.get("up_delay", 0.0)),
        down_delay=float(merged.get("down_delay", 0.0)),
        gateway=_address(raw.get("gateway")),  # type: ignore[arg-type]
        gateway6=_address(raw.get("gateway6")),  # type: ignore[arg-type]
        table=int(raw["table"]) if "table" in raw else (
            base + position if group["type"] == "route" else None),
    )


def _probe(raw: dict[str, Any], defaults: dict[str, Any]) -> ProbeSpec:
    (kind,) = [k for k in raw if k in _KINDS]
    interval = float(raw.get("interval", defaults.get("interval", DEFAULT_PROBE_INTERVAL)))
    timeout = raw.get("timeout", defaults.get("timeout"))
    return ProbeSpec(ProbeKind(kind), str(raw[kind]), interval=interval,
                     timeout=None if timeout is None else float(timeout),
                     source=raw.get("source"))


_KINDS = tuple(kind.value for kind in ProbeKind)


def _damping(raw: Any) -> DampingConfig | None:
    if raw is False:
        return None
    return DampingConfig(**{k: float(v) for k, v in (raw or {}).items()})


def _bond_options(raw: dict[str, Any]) -> BondOptions:
    options = {_OPTION_ALIASES.get(k, k): (tuple(v) if isinstance(v, list) else v)
               for k, v in raw.items()}
    return BondOptions(**options)


def _address(text: str | None) -> Gateway | None:
    return None if text is None else ipaddress.ip_address(text)


def _routes(raw: Any, members: tuple[FailoverMember, ...]) -> tuple[Network, ...]:
    """``default`` becomes the default route of each family some member has a gateway for."""
    routes: list[Network] = []
    for text in raw:
        if text == "default":
            if any(m.gateway for m in members):
                routes.append(_IPV4_DEFAULT)
            if any(m.gateway6 for m in members):
                routes.append(_IPV6_DEFAULT)
        else:
            routes.append(ipaddress.ip_network(text, strict=True))
    return tuple(dict.fromkeys(routes))


# --------------------------------------------------------------------------- checking


_BOND_ONLY = ("bond", "options")
_ROUTE_ONLY = ("routes", "metric", "table", "table_base", "rule_priority")
_ROUTE_MEMBER_ONLY = ("gateway", "gateway6", "table")


class _Checker:
    def __init__(self, doc: YDict) -> None:
        self.doc = doc
        self.issues: list[ConfigIssue] = []

    def issue(self, path: tuple[str | int, ...], message: str, expected: str | None = None,
              *, key: bool = False) -> None:
        self.issues.append(ConfigIssue(locate(self.doc, path, key=key), format_path(path),
                                       message, expected=expected))

    def attempt(self, path: tuple[str | int, ...], build: Callable[[], object],
                expected: str | None = None) -> None:
        try:
            build()
        except (ValueError, TypeError) as exc:
            self.issue(path, str(exc), expected)


def check_failover(doc: YDict) -> list[ConfigIssue]:
    """Semantic issues of a node config's ``failover`` section (after the schema passed)."""
    section = doc.get("failover")
    if not isinstance(section, YDict) or not isinstance(section.get("groups"), YList):
        return []
    checker = _Checker(doc)
    names: dict[str, int] = {}
    owners: dict[str, str] = {}
    for index, group in enumerate(section["groups"]):
        path = ("failover", "groups", index)
        if not isinstance(group, YDict) or not isinstance(group.get("members"), YList):
            continue
        name = group.get("name")
        if name in names:
            checker.issue((*path, "name"), f"group name '{name}' is used twice",
                          f"a name unique among groups (group {names[name]} has it)")
        names.setdefault(name, index)
        _check_group(checker, group, path, owners)
    return checker.issues


def _check_group(checker: _Checker, group: YDict, path: tuple[str | int, ...],
                 owners: dict[str, str]) -> None:
    kind = group.get("type")
    name = group.get("name")
    wrong = _ROUTE_ONLY if kind == "bond" else _BOND_ONLY
    for key in wrong:
        if key in group:
            other = "route" if kind == "bond" else "bond"
            checker.issue((*path, key), f"'{key}' belongs to {other} groups", key=True,
                          expected=f"the keys of a {kind} group")
    if kind == "bond" and "bond" not in group:
        checker.issue(path, "a bond group needs 'bond': the bond interface", "bond: NAME")
    if kind == "route" and "routes" not in group:
        checker.issue(path, "a route group needs 'routes'", "routes: [default] or prefixes")
    interfaces = []
    for m_index, member in enumerate(group["members"]):
        m_path = (*path, "members", m_index)
        if not isinstance(member, YDict):
            continue
        interface = member.get("interface")
        interfaces.append(interface)
        if interface == group.get("bond"):
            checker.issue((*m_path, "interface"), "the bond cannot be its own member")
        elif interface in owners:
            checker.issue((*m_path, "interface"), f"{interface} is already a member of group "
                          f"{owners[interface]}", "each interface in at most one group")
        else:
            owners[interface] = name
        if kind == "bond":
            for key in _ROUTE_MEMBER_ONLY:
                if key in member:
                    checker.issue((*m_path, key), f"'{key}' belongs to route group members",
                                  key=True)
        _check_member(checker, group, member, m_path)
    if kind == "route" and isinstance(group.get("routes"), YList):
        _check_routes(checker, group, path)
    if isinstance(group.get("options"), YDict):
        _check_bond_options(checker, group["options"], interfaces, (*path, "options"))
    if isinstance(group.get("damping"), YDict):
        checker.attempt((*path, "damping"), lambda: _damping(group["damping"]))
    if kind == "route":
        _check_tables(checker, group, path)


def _check_member(checker: _Checker, group: YDict, member: YDict,
                  path: tuple[str | int, ...]) -> None:
    defaults = {key: group[key] for key in _MEMBER_DEFAULTS if key in group}
    merged = {**defaults, **{k: member[k] for k in _MEMBER_DEFAULTS if k in member}}
    probes = member.get("probes") or []
    valid = 0
    for p_index, probe in enumerate(probes):
        p_path = (*path, "probes", p_index)
        if not isinstance(probe, dict):
            continue
        kinds = [k for k in probe if k in _KINDS]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            checker.issue(p_path, f"a probe names exactly one target kind (found {found})",
                          "one of icmp, icmp6, arp, ns, e.g. {icmp: 192.0.2.1}")
            continue
        try:
            _probe(probe, merged)
            valid += 1
        except ProbeSpecError as exc:
            checker.issue((*p_path, kinds[0]), str(exc))
    combine = merged.get("combine")
    if isinstance(combine, dict) and isinstance(combine.get("quorum"), int):
        where = (*path, "combine") if "combine" in member else (*path[:-2], "combine")
        if combine["quorum"] > len(probes):
            checker.issue(where, f"quorum {combine['quorum']} cannot be met by "
                          f"{len(probes)} probe(s) of {member.get('interface')}",
                          f"at most {len(probes)}")
    for key, version in (("gateway", 4), ("gateway6", 6)):
        text = member.get(key)
        if text is None:
            continue
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            checker.issue((*path, key), f"'{text}' is not an IP address",
                          f"an IPv{version} address")
            continue
        if address.version != version:
            checker.issue((*path, key), f"{text} is not an IPv{version} address",
                          f"an IPv{version} address" + (" (use gateway6)" if version == 4
                                                         else " (use gateway)"))
        elif address.is_multicast or address.is_unspecified:
            checker.issue((*path, key), f"{text} cannot be a next hop", "a unicast address")


def _check_routes(checker: _Checker, group: YDict, path: tuple[str | int, ...]) -> None:
    families = set()
    for r_index, text in enumerate(group["routes"]):
        if text == "default":
            families.update({4, 6})
            continue
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            checker.issue((*path, "routes", r_index), f"'{text}' is not a prefix: {exc}",
                          "default, or a prefix such as 10.0.0.0/8 or 2001:db8::/32")
            continue
        families.add(network.version)
        missing = [m.get("interface") for m in group["members"]
                   if isinstance(m, YDict) and m.get("gateway6" if network.version == 6
                                                     else "gateway") is None]
        if missing:
            key = "gateway6" if network.version == 6 else "gateway"
            checker.issue((*path, "routes", r_index),
                          f"{text} needs a {key} on every member; missing on "
                          f"{', '.join(map(str, missing))}", f"{key}: ADDRESS on each member")
    for m_index, member in enumerate(group["members"]):
        if isinstance(member, YDict) and "gateway" not in member and "gateway6" not in member:
            checker.issue((*path, "members", m_index), f"route group member "
                          f"{member.get('interface')} has no gateway",
                          "gateway: IPv4 and/or gateway6: IPv6 next hop")


def _check_tables(checker: _Checker, group: YDict, path: tuple[str | int, ...]) -> None:
    base = group.get("table_base", DEFAULT_TABLE_BASE)
    main = group.get("table", "main")
    seen: dict[int, int] = {}
    for m_index, member in enumerate(group["members"]):
        if not isinstance(member, YDict):
            continue
        table = member.get("table", base + m_index if isinstance(base, int) else None)
        if not isinstance(table, int):
            continue
        where = (*path, "members", m_index) + (("table",) if "table" in member else ())
        if table in (253, 254, 255, 0) or table == main or (main == "main" and table == 254):
            checker.issue(where, f"table {table} is reserved (or the group's own routes)",
                          "a table of its own for each member")
        elif table in seen:
            checker.issue(where, f"table {table} is also member {seen[table]}'s",
                          "a table of its own for each member")
        seen.setdefault(table, m_index)


def _check_bond_options(checker: _Checker, options: YDict, members: list[Any],
                        path: tuple[str | int, ...]) -> None:
    if "num_grat_arp" in options and "num_peer_notif" in options:
        checker.issue((*path, "num_grat_arp"), "num_grat_arp and num_peer_notif are one "
                      "option", "only one of them", key=True)
        return
    primary = options.get("primary")
    if primary and primary not in members:
        checker.issue((*path, "primary"), f"primary {primary} is not a member",
                      "one of " + ", ".join(map(str, members)))
    if options.get("miimon") and options.get("arp_interval"):
        checker.issue((*path, "arp_interval"), "miimon and arp_interval exclude each other "
                      "(the kernel silently turns the other off)", "only one of them > 0")
    checker.attempt(path, lambda: _bond_options(options))


# --------------------------------------------------------------------------- tuning


FAILOVER_PROFILE = "failover"  # the origin profile of the settings failover groups need


def _literal(name: str) -> str:
    """An interface name as an fnmatch pattern matching only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def tuning_rules(config: FailoverConfig | None) -> list[InterfaceRule]:
    """The settings each group needs, as interface rules planned and journaled like a
    profile's (before the node's overrides, which may still change them explicitly):

    - route group members: ``ignore_routes_with_linkdown = 1`` for each family they route,
      so on carrier loss the kernel skips the dead member's routes at once and the next
      metric's route carries traffic with no userspace round trip;
    - a bond group's bond: its ``options``, with ``primary_reselect: failure`` unless given,
      so the kernel never moves the active member back on its own and undoes the group's
      choice; its members: ``bond_slave.prio`` = priority, so when the kernel fails over on
      carrier before nodenetd hears of it, it picks the member nodenetd would.
    """
    rules: list[InterfaceRule] = []
    for group in (config.groups if config else ()):
        origin = Origin(FAILOVER_PROFILE, f"group {group.name}", group.position)

        def rule(device: str, kind: str, values: dict[str, Any]) -> InterfaceRule:
            return InterfaceRule(
                name=f"failover group {group.name}",  # noqa: B023 - used at once
                selector=Selector(names=(_literal(device),)),
                settings={kind: {k: Wanted(v, origin) for k, v in values.items()}},  # noqa: B023
                origin=origin)  # noqa: B023

        if group.type == "route":
            for member in group.members:
                keys = {f"net.ipv{v}.conf.IF.ignore_routes_with_linkdown": SysctlValue("=", (1,))
                        for v in (4, 6) if member.gateway_for(v) is not None}
                rules.append(rule(member.interface, "sysctl", keys))
            continue
        options = {"primary_reselect": "failure", **{
            k: v for k, v in group.bond_options.given().items() if k != "mode"}}
        rules.append(rule(group.bond or "", "bond", options))
        for member in group.members:
            rules.append(rule(member.interface, "bond_slave", {"prio": member.priority}))
    return rules
