"""Sysctls through /proc/sys, which always shows the caller's network namespace."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from nodenetd.kernel.netlink_errors import kernel_error

PROC_SYS = Path("/proc/sys")
_MISSING = "no such key in this kernel/namespace"


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

    @property
    def path(self) -> Path:
        return PROC_SYS.joinpath(*self.parts)

    def __str__(self) -> str:
        return self.display


def normalize(text: str) -> str:
    """Kernel output uses tabs between fields and a trailing newline; compare on single spaces."""
    return " ".join(text.split())


def read(key: SysctlKey) -> str:
    """The current value, whitespace-normalised. Missing key -> Unsupported."""
    try:
        return normalize(key.path.read_text())
    except FileNotFoundError as exc:
        raise kernel_error(key.display, "sysctl", errno.ENOENT, _MISSING) from exc
    except OSError as exc:
        raise kernel_error(key.display, "sysctl", exc.errno, "read failed") from exc


def write(key: SysctlKey, value: str) -> None:
    """Write one value; the kernel parses it exactly as ``sysctl -w`` would hand it over."""
    try:
        with open(key.path, "w") as handle:
            handle.write(value)
    except FileNotFoundError as exc:
        raise kernel_error(key.display, "sysctl", errno.ENOENT, _MISSING) from exc
    except OSError as exc:
        raise kernel_error(key.display, "sysctl", exc.errno, f"write {value!r} failed") from exc
