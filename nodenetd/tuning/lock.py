"""One mutator at a time: an flock on the state directory's lock file, held for the run."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from nodenetd.errors import LockBusy
from nodenetd.tuning.atomic import create_state_file


class MutationLock:
    """Non-blocking: the loser gets LockBusy naming the holder instead of waiting silently."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def __enter__(self) -> MutationLock:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = create_state_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise LockBusy(str(self.path), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv[:3])}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
