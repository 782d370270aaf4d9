"""Journal originals -> apply in order -> read back -> commit, or roll back everything.

The transaction never leaves a node half-configured: any failure (a refused value, a
read-back that does not match) undoes every change it made, in reverse order, and reads
the undo back too. A driver that cannot take a setting at all (Unsupported) is skipped
with its reason unless the run is strict.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nodenetd.errors import ApplyFailed, KernelError, Unsupported
from nodenetd.tuning.journal import Journal, Original
from nodenetd.tuning.kinds import KINDS, order_of
from nodenetd.tuning.plan import Change, Skip, Target
from nodenetd.tuning.session import KernelSession

log = logging.getLogger("nodenetd.transaction")

Write = tuple[str, Target, dict[str, Any]]  # (kind, target, {key: value})
Expected = tuple[str, Target, str, Any]  # (kind, target, key, value)


@dataclass
class ApplyResult:
    applied: list[Change] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def group_writes(items: Iterable[Expected]) -> list[Write]:
    """Batch (kind, target, key, value) into one write per kind and target, in apply order."""
    groups: dict[tuple[str, Target], dict[str, Any]] = {}
    for kind, target, key, value in items:
        groups.setdefault((kind, target), {})[key] = value
    ordered = sorted(groups.items(), key=lambda g: (order_of(g[0][0], g[0][1].device),
                                                    g[0][1].device or ""))
    return [(kind, target, values) for (kind, target), values in ordered]


def _failpoint_stop_after() -> int | None:
    """NODENETD_FAILPOINT_STOP_AFTER_WRITES=N freezes the process (SIGSTOP) after N writes,
    so crash tests can kill -9 it at a known point in the middle of an apply."""
    value = os.environ.get("NODENETD_FAILPOINT_STOP_AFTER_WRITES")
    return int(value) if value else None


def write_all(session: KernelSession, writes: Sequence[Write],
              on_unsupported: Callable[[Write, Unsupported], None] | None = None) -> list[Write]:
    """Perform writes in order; return those done. Unsupported goes to ``on_unsupported``
    when given (skip and continue), every other KernelError propagates."""
    done: list[Write] = []
    stop_after = _failpoint_stop_after()
    for write in writes:
        if stop_after is not None and len(done) == stop_after:
            os.kill(os.getpid(), signal.SIGSTOP)
        kind, target, values = write
        try:
            KINDS[kind].apply(session, target, values)
        except Unsupported as exc:
            if on_unsupported is None:
                raise
            on_unsupported(write, exc)
            continue
        done.append(write)
    return done


def mismatches(session: KernelSession, expected: Iterable[Expected]) -> list[tuple[Expected, str]]:
    """Read back every expected value after one fresh dump per kind; each mismatch with why."""
    expected = list(expected)
    for kind in {kind for kind, *_ in expected}:
        KINDS[kind].refresh(session)
    problems = []
    for item in expected:
        kind, target, key, value = item
        try:
            now = KINDS[kind].current(session, target, key)
        except KernelError as exc:
            problems.append((item, f"{target} {kind}.{key}: cannot read back: {exc.reason}"))
            continue
        if not KINDS[kind].in_sync(now, value):
            problems.append((item, f"{target} {kind}.{key}: wrote {value!r}, kernel has {now!r}"))
    return problems


def undo(session: KernelSession, before: dict[str, Original]) -> list[str]:
    """Put back pre-transaction values, newest kind first; return what could not be undone."""
    items = [(o.kind, o.target, o.key, o.value) for o in before.values()]
    writes = list(reversed(group_writes(items)))
    errors = []
    skipped: set[tuple[str, Target]] = set()
    for write in writes:
        try:
            # A setting the device cannot take was never changed: nothing to undo there.
            write_all(session, [write], lambda w, _exc: skipped.add((w[0], w[1])))
        except KernelError as exc:
            errors.append(str(exc))
    if not errors:
        kept = [i for i in items if (i[0], i[1]) not in skipped]
        errors = [text for _, text in mismatches(session, kept)]
    return errors


class Transaction:
    def __init__(self, session: KernelSession, journal: Journal, *, strict: bool = False):
        self.session = session
        self.journal = journal
        self.strict = strict

    def run(self, changes: Sequence[Change]) -> ApplyResult:
        result = ApplyResult()
        if not changes:
            return result
        fresh = set(self.journal.begin(changes, os.getpid()))
        by_id = {(c.kind, c.target, c.key): c for c in changes}
        writes = group_writes((c.kind, c.target, c.key, c.desired) for c in changes)

        def skip(write: Write, exc: Unsupported) -> None:
            kind, target, values = write
            for key in values:
                change = by_id[(kind, target, key)]
                result.skipped.append(Skip(kind, target, key, change.why, change.desired,
                                           exc.reason))
                self.journal.pending.before.pop(change.id, None)
            log.warning("skipped %s %s %s: %s", target, kind, ",".join(values), exc.reason)

        try:
            done = write_all(self.session, writes, None if self.strict else skip)
            applied = [by_id[(k, t, key)] for k, t, values in done for key in values]
            problems = mismatches(self.session, ((c.kind, c.target, c.key, c.desired)
                                                 for c in applied))
            if problems:
                raise ApplyFailed(failed=[f"verify: {text}" for _, text in problems])
        except (KernelError, ApplyFailed) as exc:
            self._roll_back(exc, fresh)
        skipped_ids = {s.id for s in result.skipped}
        self.journal.finish(forget=fresh & skipped_ids)
        result.applied = applied
        return result

    def _roll_back(self, cause: Exception, fresh: set[str]) -> None:
        pending = self.journal.pending
        assert pending is not None
        failed = cause.failed if isinstance(cause, ApplyFailed) else [str(cause)]
        log.error("apply failed, rolling back %d setting(s): %s", len(pending.before), failed)
        errors = undo(self.session, pending.before)
        labels = [f"{o.device or '(node)'} {o.kind}.{o.key} -> {o.value!r}"
                  for o in pending.before.values()]
        if errors:
            # Keep the pending record: 'nodenetctl restore' or the next apply finishes the undo.
            self.journal.save()
            raise ApplyFailed(failed, labels, errors) from cause
        self.journal.finish(forget=fresh)
        raise ApplyFailed(failed, labels) from cause


def recover(session: KernelSession, journal: Journal) -> list[str]:
    """Undo a transaction a crash interrupted. Returns problems (empty: recovered)."""
    if journal.pending is None:
        return []
    links = session.links()
    before = {k: o for k, o in journal.pending.before.items()
              if o.device is None or o.device in links}
    log.warning("recovering an interrupted apply (pid %d): restoring %d setting(s)",
                journal.pending.pid, len(before))
    errors = undo(session, before)
    if not errors:
        journal.finish()
    return errors
