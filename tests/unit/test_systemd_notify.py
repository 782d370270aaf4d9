"""sd_notify and the watchdog against a real AF_UNIX datagram socket set as NOTIFY_SOCKET,
the way systemd listens for them. Each message test runs through systemd-python and through
the fallback that speaks the protocol without it."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodenetd.daemon import systemd as sd
from nodenetd.daemon.systemd import Notifier, watchdog_interval, watchdog_loop

# SO_TIMESTAMPNS (asm-generic, so x86_64 and arm64; Python has no constant for it): for
# AF_UNIX datagrams the kernel stamps the message when it is sent, so the times below do not
# depend on how promptly the receiving thread gets scheduled.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")


class NotifySocket:
    """A bound datagram socket, as systemd's notify socket; a thread drains it (a datagram
    socket queues only net.unix.max_dgram_qlen messages before senders block) and records
    each message with the wall-clock time it was sent."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data, ancillary, _flags, _address = self.sock.recvmsg(4096, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            sent = time.time()
            for level, kind, payload in ancillary:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    seconds, nanoseconds = _TIMESPEC.unpack(payload[:_TIMESPEC.size])
                    sent = seconds + nanoseconds / 1e9
            self.received.append((sent, data.decode()))

    def messages(self, count: int, timeout: float = 2.0) -> list[str]:
        """The first ``count`` messages, waiting up to ``timeout`` for them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        return [text for _, text in self.received[:count]]

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture(params=["systemd-python", "fallback"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "systemd-python":
        if sd._sd_daemon is None:
            pytest.skip("systemd-python is not installed (pip install -e '.[systemd]')")
    else:
        monkeypatch.setattr(sd, "_sd_daemon", None)
    return request.param


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    # A short directory of its own: sun_path holds 108 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="nn-notify-") as directory:
        path = str(Path(directory) / "notify")
        listener = NotifySocket(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield listener
        finally:
            listener.close()


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.split("\n"))


# -- messages ---------------------------------------------------------------------------------

def test_ready_carries_the_status_line(backend: str, notify_socket: NotifySocket) -> None:
    assert Notifier().ready("3 interfaces managed")
    assert notify_socket.messages(1) == ["READY=1\nSTATUS=3 interfaces managed"]


def test_ready_without_status_is_only_ready(backend: str, notify_socket: NotifySocket) -> None:
    assert Notifier().ready()
    assert notify_socket.messages(1) == ["READY=1"]


def test_status_updates_arrive_in_order(backend: str, notify_socket: NotifySocket) -> None:
    notifier = Notifier()
    notifier.status("applying profiles")
    notifier.status("idle; 2 interfaces managed")
    assert notify_socket.messages(2) == ["STATUS=applying profiles",
                                         "STATUS=idle; 2 interfaces managed"]


def test_a_status_cannot_smuggle_other_assignments(backend: str,
                                                   notify_socket: NotifySocket) -> None:
    # A config error quoted into STATUS= must not become READY=1 or MAINPID= on its own line.
    Notifier().status("reload rejected:\nREADY=1\nMAINPID=1")
    [message] = notify_socket.messages(1)
    assert message == "STATUS=reload rejected: READY=1 MAINPID=1"


def test_reload_is_reloading_with_monotonic_usec_then_ready(backend: str,
                                                           notify_socket: NotifySocket) -> None:
    notifier = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.ready("reloaded")
    reloading, ready = notify_socket.messages(2)
    sent = fields(reloading)
    assert sent.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert sent["RELOADING"] == "1"
    assert before <= int(sent["MONOTONIC_USEC"]) <= after  # CLOCK_MONOTONIC, microseconds
    assert fields(ready) == {"READY": "1", "STATUS": "reloaded"}


def test_stopping(backend: str, notify_socket: NotifySocket) -> None:
    assert Notifier().stopping("restoring originals")
    assert notify_socket.messages(1) == ["STOPPING=1\nSTATUS=restoring originals"]


def test_watchdog(backend: str, notify_socket: NotifySocket) -> None:
    assert Notifier().watchdog()
    assert notify_socket.messages(1) == ["WATCHDOG=1"]


def test_abstract_notify_socket(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY_SOCKET=@name is a socket in the abstract namespace (systemd-nspawn, tests)."""
    name = f"nodenetd-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifySocket("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier().ready()
        assert listener.messages(1) == ["READY=1"]
    finally:
        listener.close()


def test_everything_is_a_no_op_without_notify_socket(backend: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    sent = [notifier.ready("x"), notifier.status("x"), notifier.reloading(),
            notifier.stopping(), notifier.watchdog()]
    assert sent == [False] * 5


def test_an_unreachable_socket_is_reported_not_raised(backend: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert Notifier().watchdog() is False
    assert "sd_notify WATCHDOG=1 failed" in caplog.text


# -- watchdog interval ------------------------------------------------------------------------

@pytest.mark.parametrize(("environ", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),                       # WatchdogSec=30s
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(environ: dict[str, str],
                                                    expected: float | None) -> None:
    if environ.get("WATCHDOG_PID") == "<self>":
        environ = {**environ, "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(environ) == expected


def test_watchdog_interval_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == pytest.approx(0.1)


# -- watchdog loop ----------------------------------------------------------------------------

def watchdog_pings(received: list[tuple[float, str]]) -> list[float]:
    return [at for at, text in received if text == "WATCHDOG=1"]


def test_watchdog_loop_pings_every_half_watchdog_usec(notify_socket: NotifySocket,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # WatchdogSec=0.2s: a ping every 0.1s
    interval = watchdog_interval()
    assert interval == pytest.approx(0.1)

    async def run_for(seconds: float) -> None:
        task = asyncio.create_task(watchdog_loop(Notifier(), interval))
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(run_for(1.0))
    time.sleep(0.1)  # let the receiver catch up
    pings = len(watchdog_pings(notify_socket.received))
    assert 6 <= pings <= 14, f"{pings} pings in 1 s at a 0.1 s interval"


def test_watchdog_loop_goes_silent_while_the_event_loop_is_blocked(
        notify_socket: NotifySocket) -> None:
    interval = 0.05
    blocked: list[float] = []

    async def scenario() -> None:
        pinger = asyncio.create_task(watchdog_loop(Notifier(), interval))
        await asyncio.sleep(0.3)
        blocked.append(time.time())  # wall clock, as the kernel's send stamps
        time.sleep(0.6)  # a stuck handler: nothing else on this loop runs
        blocked.append(time.time())
        await asyncio.sleep(0.3)
        pinger.cancel()

    asyncio.run(scenario())
    time.sleep(0.1)
    pings_at = watchdog_pings(notify_socket.received)
    start, end = blocked
    before = [at for at in pings_at if at < start]
    during = [at for at in pings_at if start < at < end]
    after = [at for at in pings_at if at >= end]
    assert len(before) >= 3 and len(after) >= 3, pings_at  # pinging before and after
    assert during == []  # no ping while the loop was stuck
    gaps = [b - a for a, b in itertools.pairwise(pings_at)]
    assert max(gaps) >= 0.5  # the service manager sees the silence
    assert sorted(gaps)[len(gaps) // 2] < 0.3  # while normally about one per interval
