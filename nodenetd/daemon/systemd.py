"""The daemon's side of ``Type=notify``: sd_notify(3) messages and the watchdog.

Every message is a no-op (returns False) when ``NOTIFY_SOCKET`` is unset, so the daemon runs
the same under systemd, in a terminal and in tests. Messages go through systemd-python
(``systemd.daemon.notify``, the ``systemd`` extra); without it, through a few lines of
socket code speaking the same datagram protocol, so a missing extra never leaves a
``Type=notify`` unit hanging in "activating" until its start timeout.

The watchdog is pinged by a task on the event loop that owns the state (:func:`watchdog_loop`),
not by a thread: when that loop is stuck, the pings stop and systemd restarts the service
after ``WatchdogSec``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping

try:
    from systemd import daemon as _sd_daemon
except ImportError:  # the optional `systemd` extra is not installed
    _sd_daemon = None

__all__ = ["Notifier", "monotonic_usec", "watchdog_interval", "watchdog_loop"]

log = logging.getLogger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd's MONOTONIC_USEC= refers to."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    # A newline would end the STATUS= assignment and start another (READY=1, MAINPID=...).
    return " ".join(text.splitlines())


class Notifier:
    """Typed sd_notify messages. Each returns True when the message was sent; a socket that
    cannot be reached is logged, never raised: the daemon's work matters more than its
    report."""

    def ready(self, status: str | None = None) -> bool:
        """Startup or a reload finished: READY=1, with an optional STATUS= line."""
        return self._send("READY=1", status)

    def status(self, text: str) -> bool:
        """A free-form line for ``systemctl status``: STATUS=..."""
        return self._send(None, text)

    def reloading(self, status: str | None = None) -> bool:
        """A reload starts; end it with :meth:`ready`. MONOTONIC_USEC= ties the message to
        the reload request (systemd >= 253, Type=notify-reload); older versions ignore it."""
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}", status)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown begins: STOPPING=1."""
        return self._send("STOPPING=1", status)

    def watchdog(self) -> bool:
        """Keep-alive: WATCHDOG=1."""
        return self._send("WATCHDOG=1", None)

    def _send(self, state: str | None, status: str | None) -> bool:
        if not os.environ.get("NOTIFY_SOCKET"):
            return False
        lines = [state] if state else []
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        message = "\n".join(lines)
        try:
            if _sd_daemon is not None:
                return bool(_sd_daemon.notify(message))
            return _notify_socket(message)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", message.split("\n", 1)[0], exc)
            return False


def _notify_socket(message: str) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET ('@' = abstract)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings: half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises; None when the watchdog is off or WATCHDOG_PID names another process."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


async def watchdog_loop(notifier: Notifier, interval: float) -> None:
    """Ping every ``interval`` seconds until cancelled. Run it as a task on the loop whose
    liveness it vouches for: a blocked loop runs no task, so the pings stop with it."""
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
