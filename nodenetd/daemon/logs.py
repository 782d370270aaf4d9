"""Logging: the journal with structured fields under systemd, stderr with levels otherwise.

Exactly one handler sits on the root logger, so every record is written once: journaled
records are not also printed to stderr (which systemd would journal a second time).

Under systemd each change is one journal entry whose fields can be queried::

    journalctl -t nodenetd INTERFACE=eth0 SETTING=link.mtu
    journalctl -t nodenetd REASON=drift -o verbose

systemd-python's JournalHandler sends ``record.__dict__`` as fields, names unchanged: it does
not upper-case them, and journald silently drops names that are not upper case. So
:func:`log_change` passes INTERFACE, SETTING, OLD, NEW and REASON already in upper case, and
the handler here forwards only valid field names instead of every LogRecord attribute.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

try:
    from systemd import journal as _journal
except ImportError:  # the optional `systemd` extra is not installed: stderr only
    _journal = None

__all__ = ["JOURNAL_SOCKET", "SYSLOG_IDENTIFIER", "journal_wanted", "log_change",
           "log_fields", "setup_logging", "stderr_is_journal"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"  # where libsystemd's sd_journal_send() writes
SYSLOG_IDENTIFIER = "nodenetd"
HANDLER_NAME = "nodenetd"  # marks the handler setup_logging installs, so a second call replaces it

# journald accepts upper-case letters, digits and '_', not leading digit, not leading '_'
# (those are its own trusted fields), at most 64 characters.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def journal_wanted(environ: Mapping[str, str] | None = None, stderr_fd: int = 2,
                   socket_path: str = JOURNAL_SOCKET) -> bool:
    """Whether we run under systemd with a journal: stderr is the stream systemd connected
    to the journal (JOURNAL_STREAM), or we are a service (INVOCATION_ID) and the journal
    socket exists."""
    env = os.environ if environ is None else environ
    if stderr_is_journal(env, stderr_fd):
        return True
    return bool(env.get("INVOCATION_ID")) and os.path.exists(socket_path)


def stderr_is_journal(environ: Mapping[str, str] | None = None, stderr_fd: int = 2) -> bool:
    """JOURNAL_STREAM=<dev>:<inode> names the journal stream; is stderr that stream?"""
    env = os.environ if environ is None else environ
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stderr_fd)
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):
        return False


def _send_fields(MESSAGE: str, **fields: Any) -> None:
    """JournalHandler's sender: forward only the fields journald keeps."""
    assert _journal is not None
    _journal.send(MESSAGE, **{name: value for name, value in fields.items()
                              if value is not None and _FIELD_NAME.fullmatch(name)})


def _syslog_priority(levelno: int) -> int:
    for limit, priority in ((logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4),
                            (logging.ERROR, 3)):
        if levelno <= limit:
            return priority
    return 2


class _PriorityPrefix(logging.Formatter):
    """"<N>line" on every line: journald takes N as the priority of a line it reads from a
    service's stderr (sd-daemon(3)), and stamps the time itself."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def setup_logging(level: str, *, force_stderr: bool = False) -> None:
    """Install nodenetd's one root handler at ``level`` (debug, info, warning, error).

    The journal (JournalHandler, SYSLOG_IDENTIFIER=nodenetd) when :func:`journal_wanted` and
    systemd-python is installed, unless ``force_stderr``; else stderr, formatted
    "LEVEL logger: message", with a "<N>" priority prefix instead of a timestamp when stderr
    is itself the journal. Calling it again replaces the handler.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    handler: logging.Handler
    if _journal is not None and not force_stderr and journal_wanted():
        handler = _journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER,
                                          sender_function=_send_fields)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if stderr_is_journal():
            handler.setFormatter(_PriorityPrefix("%(levelname)s %(name)s: %(message)s"))
        else:
            handler.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)


def log_change(logger: logging.Logger, level: int, message: str, *,
               interface: str | None = None, setting: str | None = None,
               old: object = None, new: object = None, reason: str | None = None) -> None:
    """Log ``message`` once; in the journal with INTERFACE=, SETTING=, OLD=, NEW=, REASON=
    fields (each omitted when None; values other than str are sent as str())."""
    log_fields(logger, level, message, stacklevel=3, interface=interface, setting=setting,
               old=old, new=new, reason=reason)


def log_fields(logger: logging.Logger, level: int, message: str, *, stacklevel: int = 2,
               **fields: object) -> None:
    """Log ``message`` once with journal fields named after the keywords, upper-cased
    (``group="uplinks"`` becomes GROUP=uplinks); None values are omitted."""
    extra = {name.upper(): value if isinstance(value, str) else str(value)
             for name, value in fields.items() if value is not None}
    logger.log(level, message, extra=extra, stacklevel=stacklevel)
