"""What the daemon offers nodenetctl over its control socket.

Each command returns a Reply: the same JSON document ``nodenetctl -o json`` prints, the text
``nodenetctl`` prints otherwise, and the exit code nodenetctl exits with, so the CLI behaves
identically whether it works standalone or through the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

COMMANDS = ("status", "plan", "apply", "reload", "restore", "failover")
"""Arguments each command takes (``args`` of a request; missing keys take these defaults).
Every request also carries ``config``: the absolute node config path nodenetctl was given,
or None for the default; the daemon serves its own running config and may refuse another.

- ``status``: {}
- ``plan``: {"detailed_exitcode": false}  (exit EXIT_CHANGES_PENDING when changes pend)
- ``apply``: {"strict": false, "dry_run": false}
- ``reload``: {}
- ``restore``: {"state_dir": null}  (null: the daemon's own state dir)
- ``failover``: {"action": "status" | "switch" | "hold" | "release", "group": null,
  "member": null, "duration": null}  (the daemon's own: failover groups live in it)
"""

# The exit codes of nodenetctl, carried in Reply.exit_code; one table for the CLI and daemon.
EXIT_OK = 0
EXIT_FAILED = 1  # apply failed and was rolled back, restore incomplete, kernel error
EXIT_CHANGES_PENDING = 2  # plan --detailed-exitcode: changes are pending
EXIT_INVALID_CONFIG = 3  # invalid node config or profile; nothing was changed
EXIT_LOCKED = 4  # another nodenetctl or nodenetd holds the lock; nothing was changed
EXIT_USAGE = 64  # bad command line, or a malformed control request (sysexits EX_USAGE)
EXIT_NOPERM = 77  # the control socket serves root only (sysexits EX_NOPERM)


@dataclass
class Reply:
    exit_code: int
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""  # what nodenetctl prints on stderr

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "text": self.text, "data": self.data,
                "error": self.error}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Reply:
        return cls(int(raw["exit_code"]), str(raw.get("text", "")), dict(raw.get("data") or {}),
                   str(raw.get("error", "")))


class Controller(Protocol):
    """The daemon side of the control socket. Runs on the daemon's event loop, which
    serialises commands, so two clients never mutate at once."""

    async def handle(self, command: str, args: dict[str, Any]) -> Reply: ...
