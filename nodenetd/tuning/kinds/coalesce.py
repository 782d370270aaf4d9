"""Interrupt coalescing (``ethtool -C``): adaptive modes, usecs and frame counts."""

from __future__ import annotations

from nodenetd.errors import KernelError, Unsupported
from nodenetd.tuning.kind import Batch, SettingKind, each
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession


class CoalesceKind(SettingKind):
    name = "coalesce"

    def current(self, session: KernelSession, target: Target, key: str) -> int | bool:
        params = session.ethtool_state(self.name).get(target.ifindex)
        if params is None:
            raise Unsupported(str(target), "coalesce", "the driver does not support coalescing")
        if key not in params:
            raise Unsupported(str(target), f"coalesce.{key}", "the driver does not report it")
        return params[key]

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        setter = session.ethtool.set_coalesce
        return each(batch, lambda target, values: setter(target.ifindex, target.device, values))
