"""Sysctls: exact values, floors (only raise) and ceilings (only lower), field by field."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from nodenetd.config.model import SysctlValue, Wanted
from nodenetd.errors import KernelError
from nodenetd.kernel import sysctl as procfs
from nodenetd.kernel.sysctl import SysctlKey
from nodenetd.tuning.constraints import clamp_fields
from nodenetd.tuning.kind import Batch, SettingKind, each
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession

log = logging.getLogger("nodenetd.tuning")


@lru_cache(maxsize=65536)
def _key(device: str | None, key: str) -> SysctlKey:
    if device is None:
        return SysctlKey.parse(key)
    return SysctlKey.for_interface(key, device)


def sysctl_key(target: Target, key: str) -> SysctlKey:
    """Global keys are literal; per-interface keys carry the IF placeholder."""
    return _key(target.device, key)


def _field(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def fields_of(text: str) -> tuple[int | str, ...]:
    return tuple(_field(part) for part in text.split())


def resolve_value(wanted: SysctlValue, current: str, key: str = "") -> str:
    """The text to write: exact fields as given, or each field raised/lowered to the bound,
    each within the key's type range (see ``tuning.constraints``)."""
    fields, note = clamp_fields(key, wanted.fields)
    if note:
        log.warning("%s", note)
        wanted = SysctlValue(wanted.op, fields)
    if wanted.op == "=":
        return " ".join(str(f) for f in wanted.fields)
    now = fields_of(current)
    if len(now) != len(wanted.fields):
        # A bound with a different field count cannot be merged; ask for the bound itself
        # and let the kernel accept or refuse it.
        return " ".join(str(f) for f in wanted.fields)
    pick = max if wanted.op == ">=" else min
    return " ".join(str(pick(int(n), int(w))) for n, w in zip(now, wanted.fields, strict=True))


class SysctlKind(SettingKind):
    name = "sysctl"
    multi_key = False

    def current(self, session: KernelSession, target: Target, key: str) -> str:
        values = session.cached(self.name, dict)
        path = sysctl_key(target, key)
        if path not in values:
            value = procfs.read(path)
            if target.device is None:  # global keys may be read-only in a namespace
                procfs.require_writable(path)
            values[path] = value
        return values[path]

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> str:
        return resolve_value(wanted.value, current, key if target.device is None else "")

    def in_sync(self, current: Any, desired: Any) -> bool:
        return fields_of(str(current)) == fields_of(str(desired))

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        def write(target: Target, values: Mapping[str, Any]) -> None:
            for key, value in values.items():
                procfs.write(sysctl_key(target, key), str(value))

        return each(batch, write)

    def display_key(self, target: Target, key: str) -> str:
        return sysctl_key(target, key).display
