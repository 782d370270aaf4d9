"""Offload features over ethtool netlink, one dump for all devices, one set per device."""

from __future__ import annotations

from typing import Any

from nodenetd.config.model import Wanted
from nodenetd.errors import Absent, KernelError, Unsupported
from nodenetd.tuning.kind import Batch, SettingKind
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession


class FeaturesKind(SettingKind):
    name = "features"

    def _state(self, session: KernelSession, target: Target):
        dump = session.ethtool_state(self.name)
        state = dump.get(target.ifindex)
        if state is None:
            raise Unsupported(str(target), "features", "device reports no offload features")
        return state

    def current(self, session: KernelSession, target: Target, key: str) -> bool:
        state = self._state(session, target)
        if key not in state.known:
            raise Absent(str(target), f"features.{key}", "the device has no such feature")
        return state.is_on(key)

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> bool:
        if current != wanted.value and self._state(session, target).is_fixed(key):
            raise Unsupported(
                str(target), f"features.{key}",
                f"fixed {'on' if current else 'off'} by the driver",
            )
        return bool(wanted.value)

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        return session.ethtool.set_features_many(
            [(target.ifindex, target.device, values) for target, values in batch]
        )
