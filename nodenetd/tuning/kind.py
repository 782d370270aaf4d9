"""The one contract every setting kind implements: read, plan, apply, verify, restore.

A kind turns wanted values into concrete desired values against what the kernel has now
(``resolve``), reads the current value from a per-run dump (``current``), and writes a
batch of targets at once (``apply``), pipelined where the kernel API allows. Verify and
restore are built from these by the transaction, so no kind can get them wrong on its own.

Optional hooks serve kinds whose settings are per queue or per interrupt (queue
steering): ``expand`` turns a profile key into the concrete settings a target has now (one
per RX queue...), so each is journaled and restored on its own; ``follows`` names the kinds
they depend on on the same target (the queue count channels set), which makes the
transaction re-plan them after those kinds changed and restore them after those;
``prepare`` lets a kind look at the rest of the desired state once per plan; and
``warnings`` adds what a plan should say beyond changes and skips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from nodenetd.config.model import Wanted
from nodenetd.errors import KernelError
from nodenetd.tuning.plan import Plan, PlanWarning, Target
from nodenetd.tuning.session import KernelSession

if TYPE_CHECKING:
    from nodenetd.tuning.desired import Desired

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
    # Kinds whose result on the same target this kind's settings depend on (queue steering
    # depends on the queue count channels set): written after them, re-planned in the same
    # transaction when they changed, and restored after them.
    follows: ClassVar[tuple[str, ...]] = ()

    def expand(self, session: KernelSession, target: Target, key: str,
               wanted: Wanted) -> Sequence[str]:
        """The concrete settings a profile key stands for on this target now (default: the
        key itself). Raises Unsupported or Gone when the target has none."""
        return (key,)

    def profile_key(self, key: str) -> str:
        """The profile key a concrete key came from (the inverse of ``expand``)."""
        return key

    def prepare(self, session: KernelSession, desired: Desired) -> None:
        """Called once per plan before the kind's first setting is planned, for kinds whose
        values depend on other desired settings (they cache what they need in the session)."""
        return None

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

    def warnings(self, session: KernelSession, desired: Desired,
                 plan: Plan) -> list[PlanWarning]:
        """What the plan should tell beyond its changes and skips (a conflicting daemon, a
        setting that has no effect without another); called once per plan."""
        return []
