"""The control socket: a real Unix socket in a temp dir, a fake controller that records calls.

One JSON line in, one JSON line out; malformed requests get exit 64 and the server keeps
serving; commands never overlap; nothing listening means DaemonUnavailable; only root is
served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nodenetd.daemon import control
from nodenetd.daemon.api import (
    EXIT_FAILED,
    EXIT_LOCKED,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_USAGE,
    Reply,
)
from nodenetd.errors import LockBusy

NOBODY = 65534


class FakeController:
    """Answers every command with a Reply naming it; records calls and how many overlapped."""

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.active = 0
        self.most_active = 0
        self.raises: dict[str, BaseException] = {}

    async def handle(self, command: str, args: dict[str, Any]) -> Reply:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            self.calls.append((command, args))
            if command in self.raises:
                raise self.raises[command]
            await asyncio.sleep(self.delay)
            return Reply(EXIT_OK, f"did {command}", {"command": command, "args": args})
        finally:
            self.active -= 1


class Loop:
    """An event loop in a background thread, as the daemon's; the tests are its clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close_server(self, server: control.ControlServer) -> None:
        """Close on the loop's own thread: asyncio servers are not thread-safe."""

        async def close() -> None:
            server.close()

        self.run(close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    return str(tmp_path / "run" / "control.sock")


@pytest.fixture
def fake() -> FakeController:
    return FakeController()


@pytest.fixture
def server(loop: Loop, sock_path: str, fake: FakeController) -> Iterator[control.ControlServer]:
    srv = loop.run(control.serve(sock_path, fake))
    yield srv

    loop.close_server(srv)
    loop.run(srv.wait_closed())


def raw_exchange(path: str, payload: bytes, *, timeout: float = 5) -> dict[str, Any]:
    """Send raw bytes, return the decoded reply line: what a broken client would see."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def still_serving(path: str) -> None:
    reply = control.call(path, "status", {}, timeout=5)
    assert (reply.exit_code, reply.text) == (EXIT_OK, "did status")


# -- round trip --------------------------------------------------------------------------------


def test_request_round_trips_command_args_and_reply(server, sock_path, fake):
    args = {"detailed_exitcode": True, "config": "/etc/x.yaml"}

    reply = control.call(sock_path, "plan", args, timeout=5)

    assert reply == Reply(EXIT_OK, "did plan", {"command": "plan", "args": args})
    assert fake.calls == [("plan", args)]


def test_socket_is_root_only_in_a_private_new_directory(server, sock_path):
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode) == 0o700


def test_every_reply_field_survives_the_wire(loop, tmp_path):
    class Rich:
        async def handle(self, command, args):
            return Reply(3, "text\nwith lines", {"nested": [1, {"a": None}], "ü": "ß"},
                         error="invalid configuration:\nx.yaml:3: bad")

    path = str(tmp_path / "c.sock")
    srv = loop.run(control.serve(path, Rich()))
    try:
        assert control.call(path, "status", {}, timeout=5) == Reply(
            3, "text\nwith lines", {"nested": [1, {"a": None}], "ü": "ß"},
            error="invalid configuration:\nx.yaml:3: bad")
    finally:
        loop.close_server(srv)


# -- malformed requests: exit 64, and the server keeps serving ---------------------------------


@pytest.mark.parametrize("payload, says", [
    (b"this is not json\n", "not JSON"),
    (b"\xff\xfe\n", "not JSON"),
    (b"[1, 2]\n", "expected a JSON object"),
    (b'{"command": "status", "args": [1]}\n', "args must be an object"),
    (b'{"command": "status", "extra": 1}\n', "unknown field"),
    (b'{"args": {}}\n', "unknown command None"),
])
def test_malformed_request_gets_exit_64(server, sock_path, fake, payload, says):
    reply = raw_exchange(sock_path, payload)

    assert reply["exit_code"] == EXIT_USAGE
    assert says in reply["error"]
    assert fake.calls == []
    still_serving(sock_path)


def test_unknown_command_gets_exit_64_naming_the_known_ones(server, sock_path, fake):
    reply = control.call(sock_path, "frobnicate", {}, timeout=5)

    assert reply.exit_code == EXIT_USAGE
    assert "unknown command 'frobnicate'" in reply.error and "reload" in reply.error
    assert fake.calls == []
    still_serving(sock_path)


@pytest.mark.parametrize("newline", [b"", b"\n"])
def test_oversize_request_gets_exit_64(server, sock_path, fake, newline):
    huge = b'{"command": "status", "args": {"pad": "' + b"x" * (control.MAX_REQUEST + 10)
    reply = raw_exchange(sock_path, huge + b'"}}' + newline)

    assert reply["exit_code"] == EXIT_USAGE
    assert f"longer than {control.MAX_REQUEST} bytes" in reply["error"]
    assert fake.calls == []
    still_serving(sock_path)


def test_request_just_under_the_cap_is_served(server, sock_path, fake):
    head = b'{"command": "status", "args": {"pad": "'
    pad = b"x" * (control.MAX_REQUEST - len(head) - len(b'"}}'))
    reply = raw_exchange(sock_path, head + pad + b'"}}\n')

    assert reply["exit_code"] == EXIT_OK
    assert len(fake.calls[0][1]["pad"]) == len(pad)


def test_last_line_without_newline_is_accepted_at_eof(server, sock_path, fake):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        sock.sendall(b'{"command": "status"}')
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["exit_code"] == EXIT_OK
    assert fake.calls == [("status", {})]


def test_silent_client_is_answered_after_the_request_timeout(loop, tmp_path, fake):
    path = str(tmp_path / "c.sock")
    srv = loop.run(control.serve(path, fake, request_timeout=0.2))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["exit_code"] == EXIT_USAGE
        assert "no request line within 0.2 s" in reply["error"]
        still_serving(path)
    finally:
        loop.close_server(srv)


def test_client_that_connects_and_leaves_is_no_problem(server, sock_path, fake):
    for _ in range(3):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(sock_path)
    still_serving(sock_path)
    assert fake.calls == [("status", {})]


# -- controller failures never take the server down -------------------------------------------


def test_controller_crash_is_exit_1_and_the_server_keeps_serving(server, sock_path, fake):
    fake.raises["apply"] = RuntimeError("boom")

    reply = control.call(sock_path, "apply", {}, timeout=5)

    assert reply.exit_code == EXIT_FAILED
    assert "internal error in apply" in reply.error and "boom" in reply.error
    still_serving(sock_path)


def test_expected_error_from_the_controller_keeps_its_exit_code(server, sock_path, fake):
    fake.raises["apply"] = LockBusy("/var/lib/nodenetd/lock", "pid 1: nodenetctl apply")

    reply = control.call(sock_path, "apply", {}, timeout=5)

    assert reply.exit_code == EXIT_LOCKED
    assert "pid 1: nodenetctl apply" in reply.error


# -- one command at a time ---------------------------------------------------------------------


def test_concurrent_clients_are_served_one_command_at_a_time(loop, sock_path):
    fake = FakeController(delay=0.05)
    srv = loop.run(control.serve(sock_path, fake))
    try:
        commands = ["apply", "plan", "status", "restore", "reload", "apply", "status", "plan"]
        started = time.monotonic()
        with ThreadPoolExecutor(len(commands)) as pool:
            replies = list(pool.map(
                lambda cmd: control.call(sock_path, cmd, {}, timeout=10), commands))
        elapsed = time.monotonic() - started
    finally:
        loop.close_server(srv)

    assert [r.text for r in replies] == [f"did {c}" for c in commands]
    assert sorted(c for c, _ in fake.calls) == sorted(commands)
    assert fake.most_active == 1
    assert elapsed >= 0.05 * len(commands)  # serialised, not merely lucky


def test_client_timeout_is_a_clear_error_and_the_command_still_completes(loop, sock_path):
    fake = FakeController(delay=0.6)
    srv = loop.run(control.serve(sock_path, fake))
    try:
        with pytest.raises(control.ControlTimeout, match=r"did not answer apply within 0\.2 s"):
            control.call(sock_path, "apply", {}, timeout=0.2)
        fake.delay = 0
        still_serving(sock_path)  # waits its turn behind the slow apply
        assert [c for c, _ in fake.calls] == ["apply", "status"]
    finally:
        loop.close_server(srv)


def test_close_finishes_the_running_command_and_refuses_the_queued(loop, sock_path):
    fake = FakeController(delay=0.3)
    srv = loop.run(control.serve(sock_path, fake))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(control.call, sock_path, "apply", {}, timeout=5)
        while not fake.calls:
            time.sleep(0.01)
        second = pool.submit(control.call, sock_path, "status", {}, timeout=5)
        time.sleep(0.1)  # status is queued behind apply
        loop.loop.call_soon_threadsafe(srv.close)
        loop.run(srv.wait_closed())
        assert first.done() or first.result(timeout=5)
        assert first.result().text == "did apply"
        assert second.result().exit_code == EXIT_FAILED
        assert "stopping" in second.result().error
    assert [c for c, _ in fake.calls] == ["apply"]
    assert not os.path.exists(sock_path)


# -- nothing listening -------------------------------------------------------------------------


def test_no_socket_is_daemon_unavailable(tmp_path):
    with pytest.raises(control.DaemonUnavailable, match="not running"):
        control.call(str(tmp_path / "missing" / "control.sock"), "status", {}, timeout=1)


def stale_socket(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)  # bound, never listening, then closed: the file stays behind


def test_stale_socket_is_daemon_unavailable(tmp_path):
    path = str(tmp_path / "control.sock")
    stale_socket(path)

    with pytest.raises(control.DaemonUnavailable, match="stale socket"):
        control.call(path, "status", {}, timeout=1)


def test_serve_replaces_a_stale_socket(loop, tmp_path, fake):
    path = str(tmp_path / "control.sock")
    stale_socket(path)

    srv = loop.run(control.serve(path, fake))
    try:
        still_serving(path)
    finally:
        loop.close_server(srv)
    assert not os.path.exists(path)


def test_serve_refuses_a_socket_someone_listens_on(server, loop, sock_path, fake):
    with pytest.raises(control.ControlError, match="already listens"):
        loop.run(control.serve(sock_path, fake))
    still_serving(sock_path)


def test_serve_refuses_to_delete_a_file_that_is_not_a_socket(loop, tmp_path, fake):
    path = tmp_path / "control.sock"
    path.write_text("precious")

    with pytest.raises(control.ControlError, match="not a socket"):
        loop.run(control.serve(str(path), fake))
    assert path.read_text() == "precious"


def test_close_leaves_a_successors_socket_alone(loop, tmp_path, fake):
    path = str(tmp_path / "control.sock")
    old = loop.run(control.serve(path, fake))
    os.unlink(path)  # e.g. removed by hand; a new daemon binds the path
    new = loop.run(control.serve(path, fake))
    loop.close_server(old)
    try:
        still_serving(path)
    finally:
        loop.close_server(new)


def test_socket_path_precedence(monkeypatch):
    monkeypatch.delenv(control.SOCKET_ENV, raising=False)
    assert control.socket_path(None) == control.DEFAULT_SOCKET == "/run/nodenetd/control.sock"
    monkeypatch.setenv(control.SOCKET_ENV, "/tmp/env.sock")
    assert control.socket_path(None) == "/tmp/env.sock"
    assert control.socket_path("/tmp/opt.sock") == "/tmp/opt.sock"


# -- root only ---------------------------------------------------------------------------------


def call_as(uid: int, path: str, command: str) -> dict[str, Any]:
    """control.call in a forked child running as ``uid``; its Reply or error as a dict."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                result = {"reply": control.call(path, command, {}, timeout=5).to_json()}
            except control.ControlError as exc:
                result = {"raised": type(exc).__name__, "message": str(exc),
                          "exit_code": exc.exit_code}
            os.write(write_end, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    return json.loads(out)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory another uid can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="nnd-ctl-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch uid")


@needs_root
def test_non_root_peer_is_refused_by_its_credentials(loop, world_dir, fake):
    path = str(world_dir / "control.sock")
    srv = loop.run(control.serve(path, fake))
    try:
        os.chmod(path, 0o666)  # get past the file mode: the SO_PEERCRED check must refuse

        result = call_as(NOBODY, path, "apply")

        assert result["reply"]["exit_code"] == EXIT_NOPERM
        assert "root only" in result["reply"]["error"]
        assert f"uid {NOBODY}" in result["reply"]["error"]
        assert fake.calls == []
        still_serving(path)  # root still is
    finally:
        loop.close_server(srv)


@needs_root
def test_non_root_client_is_stopped_by_the_socket_mode(loop, world_dir, fake):
    path = str(world_dir / "control.sock")
    srv = loop.run(control.serve(path, fake))
    try:
        result = call_as(NOBODY, path, "apply")

        assert result["raised"] == "ControlError"
        assert result["exit_code"] == EXIT_NOPERM
        assert "run nodenetctl as root" in result["message"]
        assert fake.calls == []
    finally:
        loop.close_server(srv)
