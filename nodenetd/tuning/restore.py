"""Put back every original in the journal, also after a crash, then forget what was restored."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nodenetd.errors import Gone
from nodenetd.kernel.links import Link
from nodenetd.tuning.journal import Journal, Original
from nodenetd.tuning.kinds import KINDS
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession
from nodenetd.tuning.transaction import expected_of, mismatches, restore_order, write_all

log = logging.getLogger("nodenetd.restore")


@dataclass
class RestoreReport:
    restored: list[Original] = field(default_factory=list)
    gone: list[Original] = field(default_factory=list)  # interface no longer exists
    failed: list[str] = field(default_factory=list)


def current_target(original: Original, by_index: dict[int, Link]) -> Target | None:
    """Where an original belongs now: the same ifindex, even if the interface was renamed.
    None when the interface is gone (a new link with the old name is someone else's)."""
    if original.device is None:
        return Target()
    link = by_index.get(original.ifindex) if original.ifindex is not None else None
    return Target(link.name, link.index) if link else None


def restore(session: KernelSession, journal: Journal,
            only: set[str] | None = None) -> RestoreReport:
    """Restore every original, or only the journal ids in ``only`` (settings a reloaded
    config no longer manages)."""
    report = RestoreReport()
    by_index = {link.index: link for link in session.links().values()}
    placed: list[tuple[Original, Target]] = []
    for key, original in sorted(journal.originals.items()):
        if only is not None and key not in only:
            continue
        target = current_target(original, by_index)
        if target is None:
            report.gone.append(original)
        else:
            placed.append((original, target))
    items = [(o.kind, t, o.key, o.value) for o, t in placed]
    outcome = write_all(session, restore_order(items), stop_on_failure=False)
    vanished = set()  # a queue or interrupt that no longer exists: its original died with it
    for (kind, target, values), exc in [*outcome.unsupported, *outcome.failed]:
        if isinstance(exc, Gone) and KINDS[kind].follows:
            vanished |= {(kind, target, key) for key in values}
            continue
        report.failed.append(f"{target} {kind}.{','.join(values)}: {exc.reason}")
    for original, target in placed:
        if (original.kind, target, original.key) in vanished:
            report.gone.append(original)
    problems = mismatches(session, expected_of(outcome.done))
    report.failed.extend(text for _, text in problems)
    not_restored = {(kind, target, key) for (kind, target, key, _), _ in problems}
    done = {(kind, target, key) for kind, target, key, _ in expected_of(outcome.done)}
    for original, target in placed:
        key = (original.kind, target, original.key)
        if key in done and key not in not_restored:
            report.restored.append(original)
    finished = {id(o) for o in report.restored} | {id(o) for o in report.gone}
    if not report.failed:
        journal.pending = None
    journal.drop([k for k, o in journal.originals.items() if id(o) in finished])
    for original in report.gone:
        log.info("dropped %s %s.%s: the interface (or queue) is gone", original.device,
                 original.kind, original.key)
    return report
