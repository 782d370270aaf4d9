"""Sysctls through /proc/sys, which always shows the caller's network namespace."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import cached_property

from nodenetd.errors import Unsupported
from nodenetd.kernel.netlink import kernel_error

# Where /proc/sys is. A pod (ansible/kubernetes) gets /proc/sys read-only from its runtime and
# the node's /proc/sys/net as a hostPath mount, named by this variable.
PROC_SYS_ENV = "NODENETD_PROC_SYS"
PROC_SYS = os.environ.get(PROC_SYS_ENV) or "/proc/sys"
_MISSING = "no such key in this kernel or network namespace"


@dataclass(frozen=True)
class SysctlKey:
    """A sysctl as path segments, so interface names containing dots stay one segment.

    ``display`` follows sysctl(8): segments joined by dots, dots inside a segment shown as '/'.
    """

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, dotted: str) -> SysctlKey:
        return cls(tuple(dotted.split(".")))

    @classmethod
    def for_interface(cls, template: str, ifname: str) -> SysctlKey:
        """Fill the IF placeholder: an ifname with dots (eth0.100) stays one path segment."""
        return cls(tuple(ifname if part == "IF" else part for part in template.split(".")))

    @property
    def display(self) -> str:
        return ".".join(part.replace(".", "/") for part in self.parts)

    @cached_property
    def path(self) -> str:
        # A plain string: thousands of per-interface keys make pathlib's parsing show up.
        return "/".join((PROC_SYS, *self.parts))

    def __str__(self) -> str:
        return self.display


def normalize(text: str) -> str:
    """Kernel output uses tabs between fields and a trailing newline; compare on single spaces."""
    return " ".join(text.split())


def read(key: SysctlKey) -> str:
    """The current value, whitespace-normalised. Missing key -> Unsupported."""
    try:
        fd = os.open(key.path, os.O_RDONLY)
        try:
            return normalize(os.read(fd, 65536).decode())
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        raise Unsupported(key.display, "sysctl", _MISSING, errno.ENOENT) from exc
    except OSError as exc:
        raise kernel_error(exc, key.display, "sysctl", "read failed") from exc


def require_writable(key: SysctlKey) -> None:
    """Unsupported when the key cannot be written here: outside the initial network
    namespace the kernel shows many global ``net.core`` keys read-only (mode 0444), and even
    root gets EACCES."""
    try:
        mode = os.stat(key.path).st_mode
    except FileNotFoundError as exc:
        raise Unsupported(key.display, "sysctl", _MISSING, errno.ENOENT) from exc
    except OSError as exc:
        raise kernel_error(exc, key.display, "sysctl", "stat failed") from exc
    if not mode & 0o222:
        raise Unsupported(key.display, "sysctl",
                          "read-only in this network namespace (a global key: set it in the "
                          "initial namespace)", errno.EACCES)


def write(key: SysctlKey, value: str) -> None:
    """Write one value; the kernel parses it exactly as ``sysctl -w`` would hand it over."""
    try:
        fd = os.open(key.path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except FileNotFoundError as exc:
        raise Unsupported(key.display, "sysctl", _MISSING, errno.ENOENT) from exc
    except OSError as exc:
        raise kernel_error(exc, key.display, "sysctl", f"write {value!r} failed") from exc
