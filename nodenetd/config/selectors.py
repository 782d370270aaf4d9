"""Does a rule's selector match an interface?

Every non-empty selector field must match (AND); within a field any entry may (OR).
Names, excludes, drivers and udev values are ``fnmatch`` globs matched case-sensitively
(``fnmatchcase``: no dependence on the platform); MAC globs are case-insensitive.

Facts are checked cheapest first (name, exclude, kind, MAC), and the costly ones, the
driver (sysfs/ethtool) and udev properties (the udev database), are asked for only when
the selector names them and everything cheaper already matched.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Protocol

from nodenetd.config.model import Selector

__all__ = ["InterfaceFacts", "matches"]


class InterfaceFacts(Protocol):
    """What a selector may ask about an interface."""

    @property
    def name(self) -> str: ...

    @property
    def kinds(self) -> frozenset[str]:
        """vocabulary.INTERFACE_KINDS it is, e.g. {"veth"} or {"physical", "bond-member"}."""
        ...

    @property
    def mac(self) -> str | None: ...

    def driver(self) -> str | None:
        """The kernel driver name; costly, called only when a selector needs it."""
        ...

    def udev_properties(self) -> Mapping[str, str]:
        """udev properties (ID_PATH, ID_NET_DRIVER...); costly, called only when needed."""
        ...


def _any_glob(value: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatchcase(value, glob) for glob in globs)


def matches(selector: Selector, facts: InterfaceFacts) -> bool:
    """True when every field ``selector`` sets matches ``facts``. An empty selector
    matches every interface."""
    if selector.names and not _any_glob(facts.name, selector.names):
        return False
    if selector.exclude and _any_glob(facts.name, selector.exclude):
        return False
    if selector.kinds and not facts.kinds.intersection(selector.kinds):
        return False
    if selector.macs:
        mac = facts.mac
        if mac is None or not _any_glob(mac.lower(), tuple(g.lower() for g in selector.macs)):
            return False
    if selector.needs_driver:
        driver = facts.driver()
        if driver is None or not _any_glob(driver, selector.drivers):
            return False
    if selector.needs_udev:
        properties = facts.udev_properties()
        for key, glob in selector.udev:
            value = properties.get(key)
            if value is None or not fnmatchcase(value, glob):
                return False
    return True
