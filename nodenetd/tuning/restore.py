"""Put back every original in the journal, also after a crash, then forget what was restored."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nodenetd.errors import KernelError
from nodenetd.kernel.links import Link
from nodenetd.tuning.journal import Journal, Original
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession
from nodenetd.tuning.transaction import group_writes, mismatches, write_all

log = logging.getLogger("nodenetd.restore")


@dataclass
class RestoreReport:
    restored: list[Original] = field(default_factory=list)
    gone: list[Original] = field(default_factory=list)  # interface no longer exists
    failed: list[str] = field(default_factory=list)


def current_target(original: Original, links: dict[str, Link]) -> Target | None:
    """Where an original belongs now: the same ifindex, even if the interface was renamed.
    None when the interface is gone (a new link with the old name is someone else's)."""
    if original.device is None:
        return Target()
    by_index = {link.index: link for link in links.values()}
    link = by_index.get(original.ifindex) if original.ifindex is not None else None
    if link is None:
        link = links.get(original.device) if original.ifindex is None else None
    return Target(link.name, link.index) if link else None


def restore(session: KernelSession, journal: Journal) -> RestoreReport:
    report = RestoreReport()
    links = session.links()
    placed: list[tuple[Original, Target]] = []
    for original in journal.originals.values():
        target = current_target(original, links)
        if target is None:
            report.gone.append(original)
        else:
            placed.append((original, target))
    items = [(o.kind, t, o.key, o.value) for o, t in placed]
    failed_targets: set[tuple[str, Target]] = set()

    def unsupported(write, exc) -> None:
        failed_targets.add((write[0], write[1]))
        report.failed.append(str(exc))

    for write in reversed(group_writes(items)):
        try:
            write_all(session, [write], unsupported)
        except KernelError as exc:  # keep restoring the rest; report each failure
            failed_targets.add((write[0], write[1]))
            report.failed.append(str(exc))
    ok_items = [i for i in items if (i[0], i[1]) not in failed_targets]
    problems = mismatches(session, ok_items)
    report.failed.extend(text for _, text in problems)
    bad = {(kind, target, key) for (kind, target, key, _), _ in problems}
    for original, target in placed:
        if (original.kind, target) not in failed_targets and (
            original.kind, target, original.key) not in bad:
            report.restored.append(original)
    done = [k for k, o in journal.originals.items() if o in report.restored or o in report.gone]
    journal.pending = None if not report.failed else journal.pending
    journal.drop(done)
    for original in report.gone:
        log.info("dropped %s %s.%s: interface is gone", original.device, original.kind,
                 original.key)
    return report
