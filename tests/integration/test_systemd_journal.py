"""Structured fields reach a real journal socket, each record exactly once.

libsystemd's sd_journal_send() always writes to /run/systemd/journal/socket (no environment
variable moves it). So the logging process runs in its own mount namespace where a temp
directory is bind-mounted over /run, and this test binds the AF_UNIX datagram socket that
directory holds at systemd/journal/socket: the process writes to the path journald listens
on, and the datagrams arrive here, in journald's native protocol.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]
pytest.importorskip("systemd.journal", reason="needs systemd-python (the systemd extra)")

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import logging
    from nodenetd.daemon.logs import log_change, setup_logging

    setup_logging("info")
    log = logging.getLogger("nodenetd")
    log_change(log, logging.WARNING, "link.mtu: 1500 -> 9000 (drift; profile web)",
               interface="eth0", setting="link.mtu", old=1500, new=9000, reason="drift")
    log.debug("filtered out at info")
    log.error("reload rejected, the running configuration stays in force:\\nnodenetd.yaml:3: bad")
""")


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: FIELD=value lines, or FIELD, a 64-bit little-endian size
    and the raw value (how values containing newlines travel)."""
    fields: dict[str, str] = {}
    at = 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            name, value = line.split(b"=", 1)
            at = end + 1
        else:
            name = line
            size = int.from_bytes(datagram[end + 1:end + 9], "little")
            value = datagram[end + 9:end + 9 + size]
            at = end + 9 + size + 1
        assert name.decode() not in fields, f"{name!r} twice"
        fields[name.decode()] = value.decode()
    return fields


@pytest.fixture
def fake_run() -> Iterator[tuple[Path, socket.socket]]:
    """A directory to mount over /run, with a journal socket bound in it."""
    with tempfile.TemporaryDirectory(prefix="nn-run-") as directory:
        run = Path(directory)
        (run / "systemd" / "journal").mkdir(parents=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(run / "systemd" / "journal" / "socket"))
        sock.settimeout(5.0)
        try:
            yield run, sock
        finally:
            sock.close()


def run_child(run: Path, env: dict[str, str], stderr: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--",
         "sh", "-c", 'mount --bind "$0" /run && exec "$1" -c "$2"',
         str(run), sys.executable, CHILD],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=stderr, timeout=60, check=False)


def receive(sock: socket.socket, count: int) -> list[dict[str, str]]:
    entries = [parse_native(sock.recv(1 << 20)) for _ in range(count)]
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # and nothing more: each record once
        sock.recv(1 << 20)
    return entries


def check_entries(change: dict[str, str], error: dict[str, str]) -> None:
    assert change["MESSAGE"] == "link.mtu: 1500 -> 9000 (drift; profile web)"
    assert {name: change[name] for name in ("INTERFACE", "SETTING", "OLD", "NEW", "REASON")} == {
        "INTERFACE": "eth0", "SETTING": "link.mtu", "OLD": "1500", "NEW": "9000",
        "REASON": "drift"}
    assert change["SYSLOG_IDENTIFIER"] == "nodenetd"
    assert change["PRIORITY"] == "4"
    assert all(name.isupper() for name in change)  # no LogRecord attributes as fields
    assert error["MESSAGE"] == ("reload rejected, the running configuration stays in force:\n"
                                "nodenetd.yaml:3: bad")  # one entry, newline and all
    assert error["PRIORITY"] == "3"
    assert "INTERFACE" not in error


def base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")}


def test_as_a_service_the_fields_reach_the_journal_socket(
        fake_run: tuple[Path, socket.socket]) -> None:
    run, sock = fake_run
    env = {**base_env(), "INVOCATION_ID": "5b2c7ab0a1e44c59a2f2b7a1a3c2d4e5"}
    proc = run_child(run, env, subprocess.PIPE)
    assert proc.returncode == 0, proc.stderr
    change, error = receive(sock, 2)
    check_entries(change, error)
    assert proc.stderr == b"" and proc.stdout == b""  # journaled, so not on stderr as well


def test_when_stderr_is_the_journal_stream_nothing_is_written_to_it(
        fake_run: tuple[Path, socket.socket], tmp_path: Path) -> None:
    """StandardError=journal: systemd passes JOURNAL_STREAM; a line also written to stderr
    would be journaled a second time."""
    run, sock = fake_run
    with (tmp_path / "stderr").open("wb") as stream:
        st = os.fstat(stream.fileno())
        env = {**base_env(), "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        proc = run_child(run, env, stream.fileno())
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()
    change, error = receive(sock, 2)
    check_entries(change, error)
    assert (tmp_path / "stderr").read_bytes() == b""
