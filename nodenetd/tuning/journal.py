"""The journal of originals: the value every managed setting had before nodenetd first
changed it, plus the transaction in flight. It is on disk before the first write, so a
crash at any point can be undone (``nodenetctl restore`` or the next apply).

It is a write-ahead log (``journal.log``, one JSON record per line), so recording one new
interface's originals costs a few appended lines and one fsync, not a rewrite of every
original on the node: the daemon tunes interfaces as they appear, and a Kubernetes node
has thousands of them over a day. When the log has grown well past what it describes, it
is compacted: rewritten atomically (temp file, fsync, rename, fsync the directory).

Records: ``{"t": "header", "version": 1}`` first, then ``origs`` (originals, as
``[id, kind, device, ifindex, key, value, recorded_at]`` rows: one record per transaction,
encoded in one call), ``drop`` (forget originals), ``begin`` (a transaction starts: the values
it may change had just before) and ``end``. A crash can only tear the last line; replay
ignores a torn tail.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodenetd.errors import JournalError
from nodenetd.tuning.atomic import write_atomic
from nodenetd.tuning.plan import Change, Target

FORMAT_VERSION = 1
JOURNAL_NAME = "journal.log"
_COMPACT_SLACK = 1000  # settings' worth of records beyond the live ones before compacting


def _weight(record: dict[str, Any]) -> int:
    """How many settings a record speaks of: the log's growth, for deciding to compact."""
    if record["t"] == "origs":
        return len(record["rows"])
    if record["t"] == "drop":
        return len(record["ids"])
    if record["t"] == "begin":
        return len(record["before"])
    return 1


@dataclass(frozen=True)
class Original:
    kind: str
    device: str | None
    ifindex: int | None
    key: str
    value: Any
    recorded_at: float

    @property
    def target(self) -> Target:
        return Target(self.device, self.ifindex)


@dataclass
class Pending:
    """A transaction that started writing and has not committed or rolled back yet:
    the values its settings had just before it (what a rollback returns to)."""

    started_at: float
    pid: int
    before: dict[str, Original]


def _origs_record(originals: Iterable[tuple[str, Original]]) -> dict[str, Any]:
    return {"t": "origs", "rows": [[key, o.kind, o.device, o.ifindex, o.key, o.value,
                                    o.recorded_at] for key, o in originals]}


class Journal:
    """The state directory's journal. Only the lock holder writes it."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / JOURNAL_NAME
        self.originals: dict[str, Original] = {}
        self.pending: Pending | None = None
        self._records = 0  # settings the log's records speak of (see _weight)
        self._load()
        self._disk_pending = self.pending is not None  # the log ends inside a transaction

    # -- reading ----------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._unreadable(exc) from exc
        lines = text.split("\n")
        complete, tail = lines[:-1], lines[-1]  # a torn tail has no newline: not a record
        try:
            header = json.loads(complete[0]) if complete else {}
            if header.get("t") != "header" or header.get("version") != FORMAT_VERSION:
                raise JournalError(
                    f"{self.path}: not a nodenetd journal of version {FORMAT_VERSION} "
                    f"(first line {complete[0][:80] if complete else tail[:80]!r})"
                )
            for line in complete[1:]:
                record = json.loads(line)
                self._replay(record)
                self._records += _weight(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unreadable(exc) from exc

    def _replay(self, record: dict[str, Any]) -> None:
        kind = record["t"]
        if kind == "origs":
            for key, *fields in record["rows"]:
                self.originals[key] = Original(*fields)
        elif kind == "drop":
            for key in record["ids"]:
                self.originals.pop(key, None)
        elif kind == "begin":
            # Every pending setting has an original (begin records both first), which holds
            # the rest of its identity; the begin record keeps just the value.
            before = {k: dataclasses.replace(self.originals[k], value=v)
                      for k, v in record["before"].items()}
            self.pending = Pending(record["at"], record["pid"], before)
        elif kind == "end":
            self.pending = None
        else:
            raise ValueError(f"unknown record type {kind!r}")

    def _unreadable(self, exc: Exception) -> JournalError:
        return JournalError(
            f"{self.path}: unreadable journal ({exc}); it holds the originals of tuned "
            "settings, so nothing is applied until it is repaired or moved aside"
        )

    # -- writing ----------------------------------------------------------------------------

    def _append(self, records: list[dict[str, Any]]) -> None:
        """Append records durably; compact instead when the log has grown too long."""
        growth = sum(_weight(r) for r in records)
        if self._records + growth > 2 * len(self.originals) + _COMPACT_SLACK:
            self.save()
            return
        self._disk_pending = (self._disk_pending if records[-1]["t"] not in ("begin", "end")
                              else records[-1]["t"] == "begin")
        try:
            if not self.path.exists():
                self.save()
                return
            data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
            with open(self.path, "r+b") as handle:
                handle.seek(0, os.SEEK_END)
                end = handle.tell()
                if end:  # drop a torn tail left by a crash before appending after it
                    handle.seek(max(0, end - 1))
                    if handle.read(1) != b"\n":
                        start = self._tail_start(handle)
                        handle.truncate(start)
                        handle.seek(start)
                handle.write(data.encode())
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write journal: {exc}") from exc
        self._records += growth

    @staticmethod
    def _tail_start(handle) -> int:
        handle.seek(0)
        content = handle.read()
        return content.rfind(b"\n") + 1

    def save(self) -> None:
        """Rewrite the whole journal atomically from memory (compaction)."""
        records: list[dict[str, Any]] = [{"t": "header", "version": FORMAT_VERSION}]
        if self.originals:
            records.append(_origs_record(sorted(self.originals.items())))
        if self.pending is not None:
            records.append(self._begin_record(self.pending))
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, data.encode())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write journal: {exc}") from exc
        self._records = sum(_weight(r) for r in records[1:])
        self._disk_pending = self.pending is not None

    @staticmethod
    def _begin_record(pending: Pending) -> dict[str, Any]:
        return {"t": "begin", "pid": pending.pid, "at": pending.started_at,
                "before": {k: o.value for k, o in pending.before.items()}}

    def begin(self, changes: Iterable[Change], pid: int) -> list[str]:
        """Record originals (never overwriting an older one) and the pre-transaction values,
        durably. Returns the ids whose original this transaction recorded first."""
        now = time.time()
        fresh = []
        before = {}
        for change in changes:
            record = Original(change.kind, change.target.device, change.target.ifindex,
                              change.key, change.current, now)
            before[change.id] = record
            if change.id not in self.originals:
                self.originals[change.id] = record
                fresh.append(change.id)
        self.pending = Pending(now, pid, before)
        records = [_origs_record((k, self.originals[k]) for k in fresh)] if fresh else []
        self._append([*records, self._begin_record(self.pending)])
        return fresh

    def extend(self, changes: Iterable[Change]) -> list[str]:
        """Add settings to the transaction in flight (queue steering re-planned after a
        channel change): their originals and pre-transaction values, durably, before they
        are written. A setting already in the transaction keeps its earlier value. Returns
        the ids whose original was recorded first now."""
        assert self.pending is not None, "extend() outside a transaction"
        now = time.time()
        fresh = []
        for change in changes:
            record = Original(change.kind, change.target.device, change.target.ifindex,
                              change.key, change.current, now)
            self.pending.before.setdefault(change.id, record)
            if change.id not in self.originals:
                self.originals[change.id] = record
                fresh.append(change.id)
        records = [_origs_record((k, self.originals[k]) for k in fresh)] if fresh else []
        self._append([*records, self._begin_record(self.pending)])
        return fresh

    def finish(self, forget: Iterable[str] = ()) -> None:
        """Close the transaction; ``forget`` drops originals of settings it left unchanged."""
        dropped = [key for key in forget if self.originals.pop(key, None) is not None]
        self.pending = None
        self._append(([{"t": "drop", "ids": dropped}] if dropped else []) + [{"t": "end"}])

    def drop(self, ids: Iterable[str]) -> None:
        dropped = [key for key in ids if self.originals.pop(key, None) is not None]
        records: list[dict[str, Any]] = [{"t": "drop", "ids": dropped}] if dropped else []
        if self.pending is None and self._disk_pending:  # a restore closed the transaction
            records.append({"t": "end"})
        if records:
            self._append(records)
