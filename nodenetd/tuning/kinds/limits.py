"""Channels and rings share one shape: a current count and a device maximum per key,
where a profile may ask for a number or for ``max``."""

from __future__ import annotations

from typing import Any

from nodenetd.config.model import Wanted
from nodenetd.errors import KernelError, Unsupported
from nodenetd.tuning.kind import Batch, SettingKind, each
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession


class LimitsKind(SettingKind):
    """Base for kinds read as ``Limits`` (current + maximum per key)."""

    what: str  # "channels" or "ring entries", for messages

    def _limits(self, session: KernelSession, target: Target):
        limits = session.ethtool_state(self.name).get(target.ifindex)
        if limits is None:
            raise Unsupported(str(target), self.name, f"the driver does not report {self.what}")
        return limits

    def current(self, session: KernelSession, target: Target, key: str) -> int:
        limits = self._limits(session, target)
        if not limits.maximum.get(key):
            raise Unsupported(
                str(target), f"{self.name}.{key}", f"the device has no {key} {self.what}"
            )
        return limits.current.get(key, 0)

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> int:
        maximum = self._limits(session, target).maximum[key]
        if wanted.value == "max":
            return maximum
        if wanted.value > maximum:
            raise Unsupported(
                str(target), f"{self.name}.{key}",
                f"{wanted.value} is above the device maximum {maximum}",
            )
        return int(wanted.value)

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        setter = getattr(session.ethtool, f"set_{self.name}")
        return each(batch, lambda target, values: setter(target.ifindex, target.device, values))
