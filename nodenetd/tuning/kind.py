"""The one contract every setting kind implements: read, plan, apply, verify, restore.

A kind turns wanted values into concrete desired values against what the kernel has now
(``resolve``), reads the current value from a per-run dump (``current``), and writes all
of one target's keys in one kernel call (``apply``). Verify and restore are built from
these by the transaction, so no kind can get them wrong on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from nodenetd.config.model import Wanted
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession


class SettingKind(ABC):
    name: ClassVar[str]

    @abstractmethod
    def current(self, session: KernelSession, target: Target, key: str) -> Any:
        """The value now, from the cached dump; raises Unsupported if the target lacks it."""

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> Any:
        """The concrete value to reach ('max' -> the device maximum, floors -> a number).
        Raises Unsupported when the device cannot take it."""
        return wanted.value

    def in_sync(self, current: Any, desired: Any) -> bool:
        return current == desired

    @abstractmethod
    def apply(self, session: KernelSession, target: Target, values: Mapping[str, Any]) -> None:
        """Write every key of one target, in as few kernel calls as the API allows."""

    def refresh(self, session: KernelSession) -> None:
        """Forget cached state so the next ``current`` reads the kernel again."""
        session.invalidate(self.name)
