"""The journal of originals: the value every managed setting had before nodenetd first
changed it, plus the transaction in flight. It is on disk before the first write, so a
crash at any point can be undone (``nodenetctl restore`` or the next apply)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodenetd.errors import JournalError
from nodenetd.tuning.atomic import write_atomic
from nodenetd.tuning.plan import Change, Target

FORMAT_VERSION = 1


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

    def to_json(self) -> dict[str, Any]:
        # dataclasses.asdict deep-copies every value: measurably slow at 10k entries.
        return {"kind": self.kind, "device": self.device, "ifindex": self.ifindex,
                "key": self.key, "value": self.value, "recorded_at": self.recorded_at}


@dataclass
class Pending:
    """A transaction that started writing and has not committed or rolled back yet:
    the values its settings had just before it (what a rollback returns to)."""

    started_at: float
    pid: int
    before: dict[str, Original]


class Journal:
    """journal.json in the state directory. Only the lock holder writes it."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "journal.json"
        self.originals: dict[str, Original] = {}
        self.pending: Pending | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise JournalError(
                    f"{self.path}: unknown journal version {data.get('version')!r} "
                    f"(this nodenetd writes {FORMAT_VERSION})"
                )
            self.originals = {k: Original(**v) for k, v in data["originals"].items()}
            if data.get("pending"):
                p = data["pending"]
                # Every pending setting has an original (begin records both), which holds
                # the rest of its identity; the pending record keeps just the value.
                before = {k: dataclasses.replace(self.originals[k], value=v)
                          for k, v in p["before"].items()}
                self.pending = Pending(p["started_at"], p["pid"], before)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise JournalError(
                f"{self.path}: unreadable journal ({exc}); it holds the originals of tuned "
                "settings, so nothing is applied until it is repaired or moved aside"
            ) from exc

    def save(self) -> None:
        data = {
            "version": FORMAT_VERSION,
            "originals": {k: v.to_json() for k, v in sorted(self.originals.items())},
            "pending": None,
        }
        if self.pending is not None:
            data["pending"] = {
                "started_at": self.pending.started_at,
                "pid": self.pending.pid,
                "before": {k: v.value for k, v in self.pending.before.items()},
            }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode())
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write journal: {exc}") from exc

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
        self.save()
        return fresh

    def finish(self, forget: Iterable[str] = ()) -> None:
        """Close the transaction; ``forget`` drops originals of settings it left unchanged."""
        for key in forget:
            self.originals.pop(key, None)
        self.pending = None
        self.save()

    def drop(self, ids: Iterable[str]) -> None:
        for key in ids:
            self.originals.pop(key, None)
        self.save()
