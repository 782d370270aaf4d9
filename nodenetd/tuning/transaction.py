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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
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
    """One write per kind and target (or per key, for kinds without multi-key writes),
    ordered by kind so each kind's writes form one batch."""
    groups: dict[tuple, dict[str, Any]] = {}
    for kind, target, key, value in items:
        slot = (kind, target) if KINDS[kind].multi_key else (kind, target, key)
        groups.setdefault(slot, {})[key] = value
    ordered = sorted(groups.items(), key=lambda g: (order_of(g[0][0], g[0][1].device),
                                                    g[0][1].device or ""))
    return [(slot[0], slot[1], values) for slot, values in ordered]


@dataclass
class WriteOutcome:
    done: list[Write] = field(default_factory=list)
    unsupported: list[tuple[Write, Unsupported]] = field(default_factory=list)
    failed: list[tuple[Write, KernelError]] = field(default_factory=list)


def _failpoint_stop_after() -> int | None:
    """NODENETD_FAILPOINT_STOP_AFTER_WRITES=N freezes the process (SIGSTOP) after N writes,
    so crash tests can kill -9 it at a known point in the middle of an apply."""
    value = os.environ.get("NODENETD_FAILPOINT_STOP_AFTER_WRITES")
    return int(value) if value else None


def _batches(writes: Sequence[Write], stop_after: int | None) -> Iterable[list[Write]]:
    """Consecutive writes of one kind form a batch (one pipelined kernel round); the
    failpoint splits a batch where it must stop."""
    count = 0
    for _, group in groupby(writes, key=lambda w: w[0]):
        batch = list(group)
        if stop_after is not None and count <= stop_after < count + len(batch):
            cut = stop_after - count
            if cut:
                yield batch[:cut]
            os.kill(os.getpid(), signal.SIGSTOP)
            batch = batch[cut:]
        count += len(batch)
        yield batch


def write_all(session: KernelSession, writes: Sequence[Write], *,
              stop_on_failure: bool = True) -> WriteOutcome:
    """Perform writes kind by kind. A refusal stops before the next kind unless told not to;
    what each write did is in the outcome."""
    outcome = WriteOutcome()
    for batch in _batches(writes, _failpoint_stop_after()):
        kind = batch[0][0]
        errors = KINDS[kind].apply(session, [(target, values) for _, target, values in batch])
        for write, error in zip(batch, errors, strict=True):
            if error is None:
                outcome.done.append(write)
            elif isinstance(error, Unsupported):
                outcome.unsupported.append((write, error))
            else:
                outcome.failed.append((write, error))
        if outcome.failed and stop_on_failure:
            break
    return outcome


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


def expected_of(writes: Iterable[Write]) -> list[Expected]:
    return [(kind, target, key, value) for kind, target, values in writes
            for key, value in values.items()]


def undo(session: KernelSession, before: dict[str, Original]) -> list[str]:
    """Put back pre-transaction values, newest kind first; return what could not be undone.
    A setting the device cannot take was never changed, so Unsupported is not a failure."""
    items = [(o.kind, o.target, o.key, o.value) for o in before.values()]
    outcome = write_all(session, list(reversed(group_writes(items))), stop_on_failure=False)
    errors = [str(exc) for _, exc in outcome.failed]
    errors += [text for _, text in mismatches(session, expected_of(outcome.done))]
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
        by_key = {(c.kind, c.target, c.key): c for c in changes}
        outcome = write_all(self.session, group_writes(
            (c.kind, c.target, c.key, c.desired) for c in changes))
        failures = [f"{target} {kind}.{','.join(values)}: {exc.reason}"
                    for (kind, target, values), exc in outcome.failed]
        if self.strict:
            failures += [f"{target} {kind}.{','.join(values)}: {exc.reason} (strict)"
                         for (kind, target, values), exc in outcome.unsupported]
        if not failures:
            problems = mismatches(self.session, expected_of(outcome.done))
            failures = [f"verify: {text}" for _, text in problems]
        if failures:
            self._roll_back(failures, fresh)
        result.applied = [by_key[(k, t, key)] for k, t, key, _ in expected_of(outcome.done)]
        for (kind, target, values), exc in outcome.unsupported:
            log.warning("skipped %s %s.%s: %s", target, kind, ",".join(values), exc.reason)
            result.skipped += [Skip(kind, target, key, by_key[(kind, target, key)].why, value,
                                    exc.reason) for key, value in values.items()]
        self.journal.finish(forget=fresh & self._unchanged(result.skipped))
        return result

    def _unchanged(self, skipped: list[Skip]) -> set[str]:
        """Skipped settings whose value the kernel really left alone: their originals are
        not worth keeping. One that changed anyway stays journaled, so restore covers it."""
        before = self.journal.pending.before if self.journal.pending else {}
        items = [(s.kind, s.target, s.key, before[s.id].value) for s in skipped if s.id in before]
        changed = {(kind, target, key) for (kind, target, key, _), _ in
                   mismatches(self.session, items)}
        return {s.id for s in skipped if (s.kind, s.target, s.key) not in changed}

    def _roll_back(self, failed: list[str], fresh: set[str]) -> None:
        pending = self.journal.pending
        assert pending is not None
        log.error("apply failed, rolling back %d setting(s): %s", len(pending.before), failed)
        errors = undo(self.session, pending.before)
        labels = [f"{o.device or '(node)'} {o.kind}.{o.key} -> {o.value!r}"
                  for o in pending.before.values()]
        if errors:
            # Keep the pending record: 'nodenetctl restore' or the next apply finishes the undo.
            self.journal.save()
            raise ApplyFailed(failed, labels, errors)
        self.journal.finish(forget=fresh)
        raise ApplyFailed(failed, labels)


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
