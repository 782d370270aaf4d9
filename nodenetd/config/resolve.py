"""Inheritance: fold the node's profiles, their ``extends`` chains and the overrides into one
:class:`~nodenetd.config.model.ResolvedProfile`.

Merge order
-----------

1. The node config's ``profiles`` are taken in their listed order.
2. Each is expanded depth-first: first its ``extends`` parents in their listed order, each
   expanded the same way, recursively; then the profile itself.
3. A profile already included earlier is not included again: its first occurrence keeps
   its place. (A diamond ``app extends [web, db]``, both extending ``base``, yields
   ``base, web, db, app``.)
4. The settings failover groups need (``config.failover.tuning_rules``: bond options,
   member priorities, ``ignore_routes_with_linkdown``), as a layer named ``failover``.
5. The node config's ``overrides`` come last, as a profile named ``overrides`` whose
   origins point into the node config file.

Within that order:

- **sysctls**: a later value replaces an earlier one, per key;
- **interface rules**: concatenated in order; when several rules match one interface, the
  later rule wins per setting key (applied when selectors are bound, not here).

``ResolvedProfile.names`` is the profile order of step 3 (``overrides`` is not a profile
and is not listed). A cycle in ``extends`` (``a -> b -> a``) is an error naming the cycle
at the ``extends`` entry that closes it; an unknown name is an error at the line that
names it, with the directories searched and the closest known name. All such problems,
and those of every broken profile file reached, are reported together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nodenetd.config.failover import FAILOVER_PROFILE, tuning_rules
from nodenetd.config.model import NodeConfig, Profile, ResolvedProfile, Wanted
from nodenetd.errors import ConfigError, ConfigIssue, SourcePosition

if TYPE_CHECKING:
    from nodenetd.config.loader import ProfileLibrary

__all__ = ["linearize", "resolve", "resolve_profiles"]


@dataclass(frozen=True)
class _Ref:
    """A profile as referenced: by name (where it was written) or already loaded."""

    target: str | Profile
    position: SourcePosition | None = None
    key_path: str = ""

    @property
    def name(self) -> str:
        return self.target if isinstance(self.target, str) else self.target.name


def _refs_from(owner: Profile | NodeConfig, key: str, names: Sequence[str]) -> list[_Ref]:
    """References with the positions of a ``key: [names]`` (or ``key: name``) entry."""
    refs = []
    for index, name in enumerate(names):
        key_path = f"{key}[{index}]"
        position = owner.positions.get(key_path)
        if position is None:  # written as a single string
            key_path = key
            position = owner.positions.get(key)
        refs.append(_Ref(name, position, key_path))
    return refs


def _linearize(roots: Sequence[_Ref], library: ProfileLibrary) -> list[Profile]:
    order: list[Profile] = []
    done: set[str] = set()
    stack: list[str] = []
    issues: list[ConfigIssue] = []
    reported_cycles: set[frozenset[str]] = set()

    def visit(ref: _Ref) -> None:
        name = ref.name
        if name in stack:
            cycle = [*stack[stack.index(name) :], name]
            if frozenset(cycle) not in reported_cycles:
                reported_cycles.add(frozenset(cycle))
                issues.append(
                    ConfigIssue(
                        ref.position,
                        ref.key_path,
                        "extends cycle: " + " -> ".join(cycle),
                        expected="profiles that do not extend themselves, directly or "
                        "through others",
                        hint=f"remove '{name}' from the extends of '{stack[-1]}'",
                    )
                )
            return
        if name in done:
            return
        done.add(name)
        if isinstance(ref.target, Profile):
            profile = ref.target
        else:
            try:
                profile = library.load(name, referenced_at=ref.position, key_path=ref.key_path)
            except ConfigError as exc:
                issues.extend(exc.issues)
                return
        stack.append(name)
        for parent in _refs_from(profile, "extends", profile.extends):
            visit(parent)
        stack.pop()
        order.append(profile)

    for root in roots:
        visit(root)
    if issues:
        raise ConfigError(issues)
    return order


def linearize(profiles: Sequence[str | Profile], library: ProfileLibrary) -> list[Profile]:
    """The profiles to merge, in merge order (see the module docstring); raises
    ConfigError for unknown names, cycles and invalid profile files."""
    return _linearize([_Ref(p) for p in profiles], library)


def _merge(names: tuple[str, ...], layers: Sequence[Profile]) -> ResolvedProfile:
    sysctls: dict[str, Wanted] = {}
    rules = []
    for layer in layers:
        sysctls.update(layer.sysctls)
        rules.extend(layer.rules)
    return ResolvedProfile(names=names, sysctls=sysctls, rules=rules)


def resolve_profiles(profiles: Sequence[str | Profile], library: ProfileLibrary) -> ResolvedProfile:
    """Merge ``profiles`` (names looked up in ``library``, or loaded profiles) with their
    ``extends`` chains; raises ConfigError with every problem found."""
    order = linearize(profiles, library)
    return _merge(tuple(p.name for p in order), order)


def resolve(node: NodeConfig, library: ProfileLibrary) -> ResolvedProfile:
    """The node's effective configuration: its profiles in merge order, then overrides.

    Unknown profile names point at the node config's ``profiles`` line. Raises ConfigError.
    """
    order = _linearize(_refs_from(node, "profiles", node.profiles), library)
    failover = Profile(FAILOVER_PROFILE, node.path or "", "settings of failover groups",
                       rules=tuning_rules(node.failover))
    layers = [*order, failover, *([node.overrides] if node.overrides else [])]
    return _merge(tuple(p.name for p in order), layers)
