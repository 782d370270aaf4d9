"""Journal originals -> apply in order -> read back -> commit, or roll back everything.

The transaction never leaves a node half-configured: any failure (a refused value, a
read-back that does not match) undoes every change it made, in reverse order, and reads
the undo back too. A driver that cannot take a setting at all (Unsupported) is skipped
with its reason unless the run is strict.

Kinds that follow others on the same target (queue steering and the qdisc follow channels:
``SettingKind.follows``): when this transaction changes what they follow on a target, their
settings there are written in a second round, re-planned after the first (for the queues
the channel change left), journaled before they are written: one transaction. Their
settings in sync before are journaled too, since a channel change can destroy them. Undo and
restore put followers back last, in apply order, once the queues they belong to exist again.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING, Any

from nodenetd.errors import ApplyFailed, Gone, KernelError, Unsupported
from nodenetd.tuning.journal import Journal, Original
from nodenetd.tuning.kinds import KINDS, order_of
from nodenetd.tuning.plan import Change, Skip, Target
from nodenetd.tuning.session import KernelSession

if TYPE_CHECKING:
    from nodenetd.tuning.desired import Desired

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


def restore_order(items: Iterable[Expected]) -> list[Write]:
    """Writes that put values back: newest kind first, except kinds that follow others
    (queue steering follows channels), which go last and in apply order: their queues
    exist again only once the channels are back, and a kind that follows another follower
    (steering follows qdisc: mqprio resets XPS) comes after it."""
    writes = group_writes(items)
    return ([w for w in reversed(writes) if not KINDS[w[0]].follows]
            + [w for w in writes if KINDS[w[0]].follows])


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
    outcome = write_all(session, restore_order(items), stop_on_failure=False)
    # A queue the undone channel change removes again has nothing left to undo.
    errors = [str(exc) for (kind, _, _), exc in outcome.failed
              if not (isinstance(exc, Gone) and KINDS[kind].follows)]
    errors += [text for _, text in mismatches(session, expected_of(outcome.done))]
    return errors


class Transaction:
    """``desired``: the desired state the changes were planned from; with it, settings that
    follow a kind the transaction changes on the same target are re-planned after it."""

    def __init__(self, session: KernelSession, journal: Journal, *, strict: bool = False,
                 desired: Desired | None = None):
        self.session = session
        self.journal = journal
        self.strict = strict
        self.desired = desired

    def run(self, changes: Sequence[Change]) -> ApplyResult:
        result = ApplyResult()
        if not changes:
            return result
        replan = self._to_replan(changes)
        # A channel change re-creates queues (and some drivers reset the steering of those
        # that stay): the originals of follower settings in sync now are journaled too.
        keep = self._followers_in_sync(replan, changes) if replan else []
        fresh = set(self.journal.begin([*changes, *keep], os.getpid()))
        by_key = {(c.kind, c.target, c.key): c for c in changes}
        outcome = write_all(self.session, group_writes(
            (c.kind, c.target, c.key, c.desired) for c in changes
            if (c.kind, c.target) not in replan))
        if replan and not outcome.failed:
            later = self._replan(replan)
            fresh |= set(self.journal.extend(later))
            by_key.update({(c.kind, c.target, c.key): c for c in later})
            more = write_all(self.session, group_writes(
                (c.kind, c.target, c.key, c.desired) for c in later))
            outcome.done += more.done
            outcome.unsupported += more.unsupported
            outcome.failed += more.failed
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

    def _to_replan(self, changes: Sequence[Change]) -> set[tuple[str, Target]]:
        """(kind, target) pairs to re-plan: kinds that follow a kind these changes touch on
        the same target (steering after channels). Needs the desired state."""
        if self.desired is None:
            return set()
        touched = {(c.kind, c.target) for c in changes}
        followers = [name for name, kind in KINDS.items() if kind.follows]
        pairs = set()
        for name in followers:
            for kind, target in touched:
                if kind in KINDS[name].follows and target.device in self.desired.interfaces:
                    pairs.add((name, target))
        return pairs

    def _followers_in_sync(self, pairs: set[tuple[str, Target]],
                           changes: Sequence[Change]) -> list[Change]:
        """The follower settings of these targets that are in sync before any write, as
        changes to themselves: journaled, never written by this transaction."""
        planned = {c.id for c in changes}
        return [Change(i.kind, i.target, i.key, i.why, i.value, i.value)
                for i in self._plan_followers(pairs).in_sync
                if (i.kind, i.target) in pairs and i.id not in planned]

    def _plan_followers(self, pairs: set[tuple[str, Target]]):
        from nodenetd.tuning.planner import plan  # the planner imports the kinds we use

        assert self.desired is not None
        devices = {target.device for _, target in pairs if target.device}
        sub = self.desired.only(devices=devices, node=False, kinds={n for n, _ in pairs})
        return plan(sub, self.session)

    def _replan(self, pairs: set[tuple[str, Target]]) -> list[Change]:
        """The follower settings of these targets as the kernel has them now, after the
        kinds they follow were written (new queues included, removed ones gone)."""
        for name in {name for name, _ in pairs}:
            KINDS[name].refresh(self.session)
        replanned = self._plan_followers(pairs)
        devices = {target.device for _, target in pairs if target.device}
        later = [c for c in replanned.changes if (c.kind, c.target) in pairs]
        for skip in replanned.skipped:
            log.info("re-planned %s %s.%s skipped: %s", skip.target, skip.kind, skip.key,
                     skip.reason)
        log.info("re-planned %d queue setting(s) of %s after their queue counts changed",
                 len(later), ", ".join(sorted(devices)))
        return later

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
