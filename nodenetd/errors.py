"""The exception hierarchy: every expected failure says where and what; no bare tracebacks."""

from __future__ import annotations

from dataclasses import dataclass, field


class NodenetdError(Exception):
    """Base of every error nodenetd raises on purpose."""


@dataclass
class SourcePosition:
    """Where a YAML node came from, so errors can name file and line."""

    file: str
    line: int  # 1-based
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ConfigIssue:
    """One problem in a profile or node config."""

    position: SourcePosition | None
    key_path: str  # e.g. "interfaces[0].features.gro"
    message: str  # what is wrong
    expected: str | None = None  # what would have been right
    hint: str | None = None  # "did you mean ..."

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position else ""
        text = f"{where}{self.key_path or '<top>'}: {self.message}"
        if self.expected:
            text += f" (expected {self.expected})"
        if self.hint:
            text += f"; {self.hint}"
        return text


class ConfigError(NodenetdError):
    """Invalid profile or node config; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class KernelError(NodenetdError):
    """The kernel did not do what was asked. Subclasses say how it failed."""

    def __init__(self, target: str, setting: str, reason: str, errno: int | None = None):
        self.target = target
        self.setting = setting
        self.reason = reason
        self.errno = errno
        super().__init__(f"{target}: {setting}: {reason}")


class Unsupported(KernelError):
    """The kernel or driver does not have this setting (EOPNOTSUPP, missing key, fixed feature)."""


class Refused(KernelError):
    """The setting exists but the kernel refused the value (EINVAL, ERANGE, EBUSY...)."""


class Gone(KernelError):
    """The interface vanished between observe and apply (ENODEV)."""


class LockBusy(NodenetdError):
    """Another nodenetctl or the daemon holds the mutation lock."""

    def __init__(self, path: str, holder: str):
        self.path = path
        self.holder = holder
        super().__init__(
            f"another nodenetd process is changing this node ({holder}); lock {path}. "
            "Wait for it to finish, or use the daemon's control socket."
        )


class JournalError(NodenetdError):
    """The journal of originals cannot be read or written; nothing is applied without it."""


@dataclass
class ApplyFailed(NodenetdError):
    """A change failed; everything the transaction changed was rolled back (or not, listed)."""

    failed: list[str]
    rolled_back: list[str] = field(default_factory=list)
    rollback_errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = ["apply failed:"] + [f"  {item}" for item in self.failed]
        if self.rolled_back:
            lines.append(f"rolled back {len(self.rolled_back)} change(s):")
            lines += [f"  {item}" for item in self.rolled_back]
        if self.rollback_errors:
            lines.append("ROLLBACK INCOMPLETE; run 'nodenetctl restore':")
            lines += [f"  {item}" for item in self.rollback_errors]
        return "\n".join(lines)


class Absent(Unsupported):
    """The target has no such setting at all (a feature this device does not have). An ethtool
    alias stands for whichever of its features a device has, so its absent members are
    ignored rather than reported."""
