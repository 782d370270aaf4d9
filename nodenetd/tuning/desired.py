"""Bind a resolved profile to the interfaces that exist now: the desired state."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from nodenetd.config.model import InterfaceRule, ResolvedProfile, Wanted
from nodenetd.config.selectors import matches
from nodenetd.kernel.links import Link, LinkFacts
from nodenetd.tuning.plan import Target, setting_id


@dataclass
class BoundInterface:
    """The settings one interface should have, and which rules asked for them."""

    link: Link
    rules: list[str] = field(default_factory=list)
    settings: dict[str, dict[str, Wanted]] = field(default_factory=dict)

    @property
    def target(self) -> Target:
        return Target(self.link.name, self.link.index)


@dataclass
class Desired:
    sysctls: dict[str, Wanted]
    interfaces: dict[str, BoundInterface]

    def only(self, *, devices: set[str] | None = None, node: bool = True,
             kinds: set[str] | None = None) -> Desired:
        """The part of the desired state a narrower run is about."""
        sysctls = self.sysctls if node and (kinds is None or "sysctl" in kinds) else {}
        interfaces = {}
        for name, bound in self.interfaces.items():
            if devices is not None and name not in devices:
                continue
            settings = {k: v for k, v in bound.settings.items() if kinds is None or k in kinds}
            interfaces[name] = BoundInterface(bound.link, bound.rules, settings)
        return Desired(sysctls, interfaces)

    def ids(self) -> set[str]:
        """Journal ids of every setting this desired state manages, as profiles name them
        (per-queue settings are journaled under concrete keys: see ``manages``)."""
        return {setting_id(kind, target, key) for kind, target, key, _ in self.items()}

    def manages(self, kind: str, device: str | None, key: str) -> bool:
        """Whether a journaled setting is one this desired state manages: its key, or the
        profile key a concrete key (``rx-3.rps_cpus``) was expanded from."""
        from nodenetd.tuning.kinds import KINDS  # the kinds import the planner's world

        if device is None:
            return kind == "sysctl" and key in self.sysctls
        bound = self.interfaces.get(device)
        if bound is None or kind not in bound.settings:
            return False
        keys = bound.settings[kind]
        return key in keys or (kind in KINDS and KINDS[kind].profile_key(key) in keys)

    def items(self) -> Iterator[tuple[str, Target, str, Wanted]]:
        """(kind, target, key, wanted) for every setting, global sysctls first."""
        node = Target()
        for key, wanted in self.sysctls.items():
            yield "sysctl", node, key, wanted
        for bound in self.interfaces.values():
            for kind, keys in bound.settings.items():
                for key, wanted in keys.items():
                    yield kind, bound.target, key, wanted


def _selects_loopback(rule: InterfaceRule) -> bool:
    """Loopback is tuned only when a rule names it: a match-everything rule skips 'lo'."""
    return "loopback" in rule.selector.kinds or "lo" in rule.selector.names


def bind_interface(rules: list[InterfaceRule], link: Link) -> BoundInterface | None:
    """Fold every matching rule, in order, into one interface's settings."""
    facts = LinkFacts(link)
    bound = BoundInterface(link)
    for rule in rules:
        if link.loopback and not _selects_loopback(rule):
            continue
        if not matches(rule.selector, facts):
            continue
        bound.rules.append(str(rule.origin) if rule.origin else rule.name)
        for kind, keys in rule.settings.items():
            bound.settings.setdefault(kind, {}).update(keys)
    return bound if bound.rules else None


def bind(resolved: ResolvedProfile, links: Mapping[str, Link]) -> Desired:
    interfaces = {}
    for name, link in sorted(links.items()):
        bound = bind_interface(resolved.rules, link)
        if bound is not None:
            interfaces[name] = bound
    return Desired(dict(resolved.sysctls), interfaces)
