"""Logging: journal with structured fields under systemd, stderr with levels otherwise, and
every record written exactly once. The journal is faked here at systemd.journal.sendv (the
last Python step before libsystemd); tests/integration/test_systemd_journal.py receives the
real datagrams."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodenetd.daemon import logs
from nodenetd.daemon.logs import journal_wanted, log_change, setup_logging

journal = pytest.importorskip("systemd.journal", reason="needs systemd-python (the systemd extra)")

log = logging.getLogger("nodenetd")


@pytest.fixture(autouse=True)
def clean_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("JOURNAL_STREAM", "INVOCATION_ID"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    level = root.level
    yield
    for handler in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, str]]:
    """Entries handed to libsystemd, as {FIELD: value}."""
    entries: list[dict[str, str]] = []

    def sendv(*lines: str | bytes) -> None:
        entry: dict[str, str] = {}
        for line in lines:
            text = line.decode() if isinstance(line, bytes) else line
            name, _, value = text.partition("=")
            assert name not in entry, f"field {name} sent twice"
            entry[name] = value
        entries.append(entry)

    monkeypatch.setattr(journal, "sendv", sendv)
    return entries


@pytest.fixture
def stderr_is_the_journal(capfd: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As under systemd with StandardError=journal: JOURNAL_STREAM names fd 2."""
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")


def test_a_change_is_one_journal_entry_with_its_fields(
        stderr_is_the_journal: None, sent: list[dict[str, str]],
        capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    log_change(log, logging.WARNING, "link.mtu: 1500 -> 9000 (drift)", interface="eth0",
               setting="link.mtu", old=1500, new=9000, reason="drift")
    [entry] = sent
    assert entry["MESSAGE"] == "link.mtu: 1500 -> 9000 (drift)"
    assert {name: entry[name] for name in ("INTERFACE", "SETTING", "OLD", "NEW", "REASON")} == {
        "INTERFACE": "eth0", "SETTING": "link.mtu", "OLD": "1500", "NEW": "9000",
        "REASON": "drift"}
    assert entry["SYSLOG_IDENTIFIER"] == "nodenetd"
    assert entry["PRIORITY"] == "4"
    assert entry["LOGGER"] == "nodenetd"
    assert entry["CODE_FILE"] == __file__  # the caller of log_change, not logs.py
    # Only names journald keeps: no msg=, args=, levelname=... from the LogRecord.
    assert all(name == name.upper() and not name.startswith("_") for name in entry)
    assert capfd.readouterr().err == ""  # journaled, so not also on stderr


def test_fields_left_out_are_not_sent(stderr_is_the_journal: None,
                                      sent: list[dict[str, str]]) -> None:
    setup_logging("info")
    log_change(log, logging.INFO, "net.ipv4.ip_forward: 0 -> 1", setting="net.ipv4.ip_forward",
               old="0", new="1", reason="start")
    log.info("ready: 2 interfaces managed")
    change, plain = sent
    assert "INTERFACE" not in change and change["SETTING"] == "net.ipv4.ip_forward"
    assert not {"INTERFACE", "SETTING", "OLD", "NEW", "REASON"} & plain.keys()
    assert plain["PRIORITY"] == "6"


def test_journal_entries_honour_the_level(stderr_is_the_journal: None,
                                          sent: list[dict[str, str]]) -> None:
    setup_logging("warning")
    log.info("not this")
    log.error("this")
    assert [entry["MESSAGE"] for entry in sent] == ["this"]
    assert sent[0]["PRIORITY"] == "3"


def test_outside_systemd_each_record_is_one_stderr_line_with_its_level(
        sent: list[dict[str, str]], capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("info")
    setup_logging("info")  # a second call replaces the handler instead of adding one
    log.debug("hidden")
    log.info("tuned new interface veth0")
    log_change(log, logging.WARNING, "drift (observe only): link.mtu is 1500",
               interface="eth0", setting="link.mtu", old=1500, new=9000, reason="drift")
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO nodenetd: tuned new interface veth0")
    assert lines[1].endswith(" WARNING nodenetd: drift (observe only): link.mtu is 1500")
    assert sent == []


def test_forced_stderr_under_the_journal_carries_priority_prefixes(
        stderr_is_the_journal: None, sent: list[dict[str, str]],
        capfd: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", force_stderr=True)
    log.warning("conflict:\nsomething else keeps setting link.mtu")
    # journald reads "<N>" as the priority of each line; it stamps the time itself.
    assert capfd.readouterr().err.splitlines() == [
        "<4>WARNING nodenetd: conflict:", "<4>something else keeps setting link.mtu"]
    assert sent == []


def test_without_systemd_python_the_journal_gets_stderr(
        stderr_is_the_journal: None, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(logs, "_journal", None)
    setup_logging("info")
    log.error("invalid configuration")
    assert capfd.readouterr().err == "<3>ERROR nodenetd: invalid configuration\n"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        setup_logging("verbose")


@pytest.mark.parametrize(("environ", "socket_exists", "expected"), [
    ({"INVOCATION_ID": "5b2c7ab0a1e44c59a2f2b7a1a3c2d4e5"}, True, True),
    ({"INVOCATION_ID": "5b2c7ab0a1e44c59a2f2b7a1a3c2d4e5"}, False, False),  # no journald
    ({}, True, False),  # a journal on the machine, but we are not its service
    ({"JOURNAL_STREAM": "1:2"}, True, False),  # stderr is something else (redirected)
    ({"JOURNAL_STREAM": "garbage"}, True, False),
])
def test_journal_wanted(tmp_path: Path, environ: dict[str, str], socket_exists: bool,
                        expected: bool) -> None:
    socket_path = tmp_path / "socket"
    if socket_exists:
        socket_path.touch()  # only its existence is checked
    assert journal_wanted(environ, socket_path=str(socket_path)) is expected


def test_journal_wanted_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream:
        st = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_wanted(environ, stderr_fd=stream.fileno(),
                              socket_path=str(tmp_path / "none"))
