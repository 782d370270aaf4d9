"""The control socket between nodenetctl and nodenetd.

A Unix stream socket, mode 0600 and root-only: the peer's credentials (SO_PEERCRED) are
checked on every connection. One request per connection, one JSON line each way::

    -> {"command": "plan", "args": {"detailed": true, "config": null}}
    <- {"exit_code": 2, "text": "...", "data": {...}, "error": ""}

A malformed request (not JSON, not an object, unknown command, over MAX_REQUEST bytes, none
within the read timeout) gets an error Reply with EXIT_USAGE; a non-root peer gets one with
EXIT_NOPERM; neither ever takes the daemon down. Commands run one at a time: the server
awaits the controller for one request before it starts the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import time
from typing import Any

from nodenetd.cli.commands import error_reply
from nodenetd.daemon.api import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_NOPERM,
    EXIT_USAGE,
    Controller,
    Reply,
)
from nodenetd.errors import NodenetdError

log = logging.getLogger("nodenetd.control")

DEFAULT_SOCKET = "/run/nodenetd/control.sock"
SOCKET_ENV = "NODENETD_SOCKET"  # overrides the default for nodenetctl (and the tests)
MAX_REQUEST = 64 * 1024  # bytes of one request line
MAX_REPLY = 256 * 1024 * 1024  # a sanity bound for the client; status of 10k NICs is far less
REQUEST_TIMEOUT = 10.0  # seconds a connected client has to send its request line

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlError(NodenetdError):
    """The control socket failed: refused, timed out, malformed. Carries nodenetctl's exit
    code for it."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        self.exit_code = exit_code
        super().__init__(message)


class DaemonUnavailable(ControlError):
    """Nothing listens on the control socket (no file, or a stale one): nodenetd is not
    running, and nodenetctl may work standalone."""

    def __init__(self, path: str, reason: str):
        self.path = path
        super().__init__(f"nodenetd is not running: nothing listens on {path} ({reason})")


class ControlTimeout(ControlError):
    """nodenetd accepted the request but did not answer in time."""


# -- server ------------------------------------------------------------------------------------


class ControlServer(asyncio.AbstractServer):
    """The listening control socket. ``close()`` also removes the socket file (if it is
    still the one this server bound); ``wait_closed()`` also waits for a command already
    running. Requests still waiting their turn when it closes are answered "stopping"."""

    def __init__(self, server: asyncio.AbstractServer, path: str, ident: tuple[int, int],
                 turn: asyncio.Lock):
        self._server = server
        self.path = path
        self._ident = ident
        self._turn = turn
        self.closing = False

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(getattr(self._server, "sockets", ()) or ())

    def close(self) -> None:
        self.closing = True
        self._server.close()
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                os.unlink(self.path)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()
        async with self._turn:  # the command in progress, if any, has finished
            pass


async def serve(path: str, controller: Controller, *,
                request_timeout: float = REQUEST_TIMEOUT) -> ControlServer:
    """Listen on ``path`` and answer each request with ``controller.handle``, one at a time.

    Creates the parent directory (0700) if missing and removes a stale socket file, but
    refuses (ControlError) when another process listens there or the path is not a socket.
    """
    _prepare(path)
    turn = asyncio.Lock()
    holder: list[ControlServer] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _connection(reader, writer, controller, turn, holder[0], request_timeout)

    server = await asyncio.start_unix_server(on_connect, path=path, limit=MAX_REQUEST)
    try:
        os.chmod(path, 0o600)
        st = os.lstat(path)
    except OSError:
        server.close()
        raise
    control = ControlServer(server, path, (st.st_dev, st.st_ino), turn)
    holder.append(control)
    log.info("control socket listening on %s", path)
    return control


def _prepare(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket {path} exists and is not a socket; "
                           "remove it or set another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            log.info("removing stale control socket %s", path)
            os.unlink(path)
            return
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from exc
    raise ControlError(f"another process already listens on the control socket {path} "
                       "(is nodenetd running twice?)")


def peer_credentials(sock: Any) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


async def _connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      controller: Controller, turn: asyncio.Lock, server: ControlServer,
                      request_timeout: float) -> None:
    try:
        reply = await _answer(reader, writer, controller, turn, server, request_timeout)
        if reply is not None:
            writer.write(json.dumps(reply.to_json(), default=str).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, BrokenPipeError) as exc:
        log.info("control client went away before its reply: %s", exc)
    except Exception:  # never let one connection take the daemon down
        log.exception("control connection failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _bad(message: str) -> Reply:
    return Reply(EXIT_USAGE, "", error=f"nodenetd: bad control request: {message}")


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  controller: Controller, turn: asyncio.Lock, server: ControlServer,
                  request_timeout: float) -> Reply | None:
    pid, uid, _gid = peer_credentials(writer.get_extra_info("socket"))
    if uid != 0:
        log.warning("control: refused pid %d uid %d: root only", pid, uid)
        return Reply(EXIT_NOPERM, "", error=f"nodenetd: permission denied: the control socket "
                     f"serves root only (you are uid {uid})")
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), request_timeout)
    except asyncio.IncompleteReadError as exc:  # EOF: accept a last line without newline
        line = exc.partial
        if not line.strip():
            return None  # connected and left without asking anything
    except asyncio.LimitOverrunError:
        log.warning("control: pid %d sent a request over %d bytes", pid, MAX_REQUEST)
        return _bad(f"request longer than {MAX_REQUEST} bytes")
    except TimeoutError:
        log.warning("control: pid %d sent no request within %g s", pid, request_timeout)
        return _bad(f"no request line within {request_timeout:g} s")
    try:
        command, args = parse_request(line)
    except ValueError as exc:
        log.warning("control: pid %d: %s", pid, exc)
        return _bad(str(exc))

    async with turn:  # one command at a time, in arrival order
        if server.closing:
            return Reply(EXIT_FAILED, "", error=f"nodenetd is stopping; {command} not run")
        started = time.monotonic()
        try:
            reply = await controller.handle(command, args)
            if not isinstance(reply, Reply):
                raise TypeError(f"controller returned {type(reply).__name__}, not a Reply")
        except NodenetdError as exc:  # expected failures keep their documented exit codes
            reply = error_reply(exc)
        except Exception as exc:
            log.exception("control: %s from pid %d failed", command, pid)
            reply = Reply(EXIT_FAILED, "", error=f"nodenetd: internal error in {command}: "
                          f"{exc!r}; see the daemon's log")
    log.info("control: %s from pid %d: exit %d in %.3f s", command, pid, reply.exit_code,
             time.monotonic() - started)
    return reply


def parse_request(line: bytes) -> tuple[str, dict[str, Any]]:
    """(command, args) of one request line; ValueError says what is wrong with it."""
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError(f"expected a JSON object, got {type(request).__name__}")
    unknown = set(request) - {"command", "args"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    command = request.get("command")
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r} (known: {', '.join(COMMANDS)})")
    args = request.get("args", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ValueError(f"args must be an object, got {type(args).__name__}")
    return command, args


# -- client ------------------------------------------------------------------------------------


def call(path: str, command: str, args: dict[str, Any], *, timeout: float) -> Reply:
    """Send one request and wait up to ``timeout`` seconds in all for its Reply.

    Raises DaemonUnavailable when nothing listens (no socket file, or a stale one), and
    ControlError when the socket refuses us, times out (ControlTimeout) or answers garbage.
    """
    deadline = time.monotonic() + timeout
    request = json.dumps({"command": command, "args": args}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise DaemonUnavailable(path, "no socket") from exc
        except ConnectionRefusedError as exc:
            raise DaemonUnavailable(path, "stale socket") from exc
        except PermissionError as exc:
            raise ControlError(f"permission denied on nodenetd's control socket {path}: "
                               "run nodenetctl as root", EXIT_NOPERM) from exc
        except TimeoutError as exc:
            raise ControlTimeout(f"nodenetd did not accept a connection on {path} within "
                                 f"{timeout:g} s") from exc
        except BlockingIOError as exc:  # EAGAIN: the listen backlog is full
            raise ControlError(f"nodenetd is overloaded: its control socket {path} accepts "
                               "no more connections; try again") from exc
        except OSError as exc:
            raise ControlError(f"cannot reach nodenetd at {path}: {exc.strerror or exc}") \
                from exc
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered (a refusal) and closed before reading: read its answer
        except TimeoutError as exc:
            raise _timeout(command, timeout) from exc
        raw = _read_line(sock, deadline, command, timeout)
    try:
        return Reply.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise ControlError(f"nodenetd sent a malformed reply to {command}: {exc}") from exc


def _timeout(command: str, timeout: float) -> ControlTimeout:
    return ControlTimeout(f"nodenetd did not answer {command} within {timeout:g} s; it may "
                          "still be working on it: check 'nodenetctl status' or its log "
                          "(journalctl -u nodenetd), or pass a longer --timeout")


def _read_line(sock: socket.socket, deadline: float, command: str, timeout: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(command, timeout)
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError as exc:
            raise _timeout(command, timeout) from exc
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY:
            raise ControlError(f"nodenetd's reply to {command} exceeds {MAX_REPLY} bytes")
    raw = b"".join(chunks)
    if not raw.strip():
        raise ControlError(f"nodenetd closed the connection without answering {command}")
    return raw


def socket_path(option: str | None = None, configured: str | None = None) -> str:
    """The control socket: ``--socket``, else $NODENETD_SOCKET, else the node config's
    ``daemon.control_socket``, else the default."""
    return option or os.environ.get(SOCKET_ENV) or configured or DEFAULT_SOCKET


__all__ = [
    "DEFAULT_SOCKET",
    "MAX_REQUEST",
    "SOCKET_ENV",
    "ControlError",
    "ControlServer",
    "ControlTimeout",
    "DaemonUnavailable",
    "call",
    "parse_request",
    "peer_credentials",
    "serve",
    "socket_path",
]
