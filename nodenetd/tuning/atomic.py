"""State files: durable replacement (temp file, fsync, rename, fsync the directory), and
ownership that follows the state directory.

The service runs as a dynamic, unprivileged user that owns the state directory; root's
nodenetctl may write there too while the service is stopped. Files root creates are handed
to the directory's owner, so the service can still read and lock them at its next start."""

from __future__ import annotations

import os
from pathlib import Path


def create_state_file(path: Path, flags: int = os.O_RDWR, mode: int = 0o600) -> int:
    """Open ``path``, creating it owned like its directory; returns the fd."""
    fd = os.open(path, flags | os.O_CREAT, mode)
    if os.geteuid() == 0:
        owner = os.stat(path.parent)
        if (owner.st_uid, owner.st_gid) != (0, 0):
            os.fchown(fd, owner.st_uid, owner.st_gid)
    return fd


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """After this returns, ``path`` holds ``data`` or its old content, even across a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = create_state_file(tmp, os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
