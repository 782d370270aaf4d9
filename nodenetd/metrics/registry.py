"""One scrape: take the snapshot, run every collector on it, each failing alone, and write
the exposition.

A collector that raises contributes nothing (never half a family) and reports
``nodenetd_collector_success{collector="..."} 0``; the rest of the scrape is served as usual,
never an HTTP 500. ``snapshot`` is a pseudo-collector: 0 when the event loop could not hand
over a fresh snapshot in time and the scrape reports an older one (or none yet). A failure is
logged when it starts and when its message changes, and its recovery once, so a broken part
scraped every 15 s does not flood the journal.

Scrapes may run concurrently (one thread per HTTP request, plus the textfile writer): the
collectors keep their own small locks around their kernel sockets and caches; nothing here
touches the event loop's state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from nodenetd.metrics.exposition import Family, labels, render
from nodenetd.metrics.snapshot import Snapshot

__all__ = ["Collector", "Registry"]

log = logging.getLogger("nodenetd.metrics")


class Collector(Protocol):
    name: str

    def collect(self, snapshot: Snapshot) -> list[Family]: ...


class Registry:
    def __init__(self, collectors: Sequence[Collector],
                 snapshot: Callable[[], tuple[Snapshot | None, bool]], *,
                 process: Collector | None = None) -> None:
        """``snapshot`` returns (the snapshot or None, whether it is fresh), as
        ``Publisher.fetch`` does."""
        self.collectors = list(collectors)
        self._snapshot = snapshot
        self._process = process
        self._errors: dict[str, str] = {}  # collector -> the failure last logged
        self._errors_lock = threading.Lock()

    def close(self) -> None:
        for collector in [*self.collectors, self._process]:
            close = getattr(collector, "close", None)
            if close is not None:
                close()

    def scrape(self, *, process: bool = True) -> bytes:
        """The exposition of one scrape (``process``: with ``process_*``)."""
        results: list[tuple[str, bool, float]] = []
        families: list[Family] = []
        started = time.perf_counter()
        try:
            snapshot, fresh = self._snapshot()
        except Exception as exc:  # the publisher is not supposed to raise; be safe anyway
            self._failed("snapshot", exc)
            snapshot, fresh = None, False
        results.append(("snapshot", fresh, time.perf_counter() - started))
        if fresh:
            self._recovered("snapshot")
        elif snapshot is not None:
            self._failed("snapshot", TimeoutError("the event loop did not answer in time; "
                                                  "reporting an older snapshot"))
        collectors: list[Any] = list(self.collectors)
        if process and self._process is not None:
            collectors.append(self._process)
        for collector in collectors:
            begin = time.perf_counter()
            ok = False
            try:
                if snapshot is None and collector is not self._process:
                    raise RuntimeError("no snapshot from the event loop yet")
                found = collector.collect(snapshot)
                families.extend(found)
                ok = True
                self._recovered(collector.name)
            except Exception as exc:
                self._failed(collector.name, exc)
            results.append((collector.name, ok, time.perf_counter() - begin))
        success = Family("nodenetd_collector_success", "gauge",
                         "1 when the collector's part of this scrape succeeded, 0 when it "
                         "failed and its series are missing (see the log).")
        duration = Family("nodenetd_collector_duration_seconds", "gauge",
                          "Time the collector took in this scrape.")
        for name, ok, seconds in results:
            key = labels(collector=name)
            success.add(key, ok)
            duration.add(key, seconds)
        try:
            return render([*families, success, duration])
        except Exception as exc:  # a collector produced something unrenderable
            self._failed("render", exc)
            return render([success, duration])

    def _failed(self, name: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._errors_lock:
            if self._errors.get(name) == message:
                return
            self._errors[name] = message
        log.warning("metrics: collector %s failed: %s", name, message,
                    exc_info=not isinstance(exc, (OSError, TimeoutError)))

    def _recovered(self, name: str) -> None:
        if name not in self._errors:
            return
        with self._errors_lock:
            if self._errors.pop(name, None) is not None:
                log.info("metrics: collector %s works again", name)
