"""The one contract every setting kind implements: read, plan, apply, verify, restore.

A kind turns wanted values into concrete desired values against what the kernel has now
(``resolve``), reads the current value from a per-run dump (``current``), and writes a
batch of targets at once (``apply``), pipelined where the kernel API allows. Verify and
restore are built from these by the transaction, so no kind can get them wrong on its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from nodenetd.config.model import Wanted
from nodenetd.errors import KernelError
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession

Batch = Sequence[tuple[Target, Mapping[str, Any]]]
Results = list[KernelError | None]


def each(batch: Batch, write: Callable[[Target, Mapping[str, Any]], None]) -> Results:
    """Apply a batch one target at a time, for kernel APIs with no pipelined form."""
    results: list[KernelError | None] = []
    for target, values in batch:
        try:
            write(target, values)
            results.append(None)
        except KernelError as exc:
            results.append(exc)
    return results


class SettingKind(ABC):
    name: ClassVar[str]
    # Whether one kernel call sets several keys of a target (a features mask, a link
    # message). Sysctls are one file each, so each key is its own write and its own result.
    multi_key: ClassVar[bool] = True

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
    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        """Write each target's keys; one result per target, in order (None: done)."""

    def refresh(self, session: KernelSession) -> None:
        """Forget cached state so the next ``current`` reads the kernel again."""
        session.invalidate(self.name)
