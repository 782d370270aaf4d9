"""The textfile for node_exporter's textfile collector: the same exposition as /metrics,
without ``process_*`` (node_exporter has its own, and the textfile collector refuses a
metric it already exports), rewritten every ``interval`` seconds.

Each write is atomic (temp file in the same directory, fsync, rename, fsync the directory):
node_exporter reads ``*.prom`` and never sees a half-written file (the temp name ends in
``.tmp``). The file is removed on a clean stop, so a stopped nodenetd leaves no stale values
behind; alert on ``node_textfile_mtime_seconds`` for one that died.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from nodenetd.config.metrics import TextfileSettings
from nodenetd.tuning.atomic import create_state_file

__all__ = ["TextfileWriter", "write_textfile"]

log = logging.getLogger("nodenetd.metrics")


def write_textfile(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, world-readable whatever the umask (the
    service runs with UMask=0077; node_exporter reads as its own user)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = create_state_file(tmp, os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class TextfileWriter:
    def __init__(self, settings: TextfileSettings, scrape: Callable[[], bytes]) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self._scrape = scrape
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: str | None = None
        self.writes = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nodenetd-metrics-textfile",
                                        daemon=True)
        self._thread.start()

    def write_once(self) -> bool:
        try:
            write_textfile(self.path, self._scrape())
        except OSError as exc:
            message = str(exc)
            if message != self._failing:
                log.error("metrics: cannot write the textfile %s: %s", self.path, exc)
                self._failing = message
            return False
        if self._failing is not None:
            log.info("metrics: writing the textfile %s again", self.path)
            self._failing = None
        self.writes += 1
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.write_once()
            self._stop.wait(self.settings.interval)

    def close(self, *, remove: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if remove:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("metrics: cannot remove the textfile %s: %s", self.path, exc)
