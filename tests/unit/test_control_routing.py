"""nodenetctl's side of the control socket: which commands go to the daemon, what they send,
how a Reply is printed, and the wire arguments both sides check."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from nodenetd.cli import commands, main
from nodenetd.daemon import control
from nodenetd.daemon.api import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_INVALID_CONFIG,
    EXIT_USAGE,
    Reply,
)
from nodenetd.errors import ConfigError, ConfigIssue, JournalError, LockBusy
from tests.unit.test_control_protocol import FakeController, Loop


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.stop()


@pytest.fixture
def daemon(loop, tmp_path, monkeypatch) -> Iterator[FakeController]:
    """A fake daemon on $NODENETD_SOCKET."""
    fake = FakeController()
    path = str(tmp_path / "control.sock")
    monkeypatch.setenv(control.SOCKET_ENV, path)
    srv = loop.run(control.serve(path, fake))
    yield fake
    loop.close_server(srv)  # on the loop's own thread: asyncio servers are not thread-safe


@pytest.fixture
def no_daemon(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(control.SOCKET_ENV, str(tmp_path / "nobody-home.sock"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- routing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, command, args", [
    (["plan"], "plan", {"detailed_exitcode": False}),
    (["plan", "--detailed-exitcode"], "plan", {"detailed_exitcode": True}),
    (["apply", "--strict", "--dry-run"], "apply", {"strict": True, "dry_run": True}),
    (["apply"], "apply", {"strict": False, "dry_run": False}),
    (["status"], "status", {}),
    (["restore"], "restore", {"state_dir": None}),
    (["restore", "--state-dir", "/var/lib/x"], "restore", {"state_dir": "/var/lib/x"}),
    (["reload"], "reload", {}),
])
def test_routed_commands_send_their_arguments(capsys, daemon, argv, command, args):
    code, out, err = run(capsys, *argv, "--config", "/etc/nodenetd/other.yaml")

    assert (code, out, err) == (0, f"did {command}\n", "")
    assert daemon.calls == [(command, {"config": "/etc/nodenetd/other.yaml", **args})]
    commands.check_args(command, daemon.calls[0][1])  # what the CLI sends, the daemon accepts


def test_relative_paths_are_sent_absolute(capsys, daemon, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    run(capsys, "restore", "--config", "n.yaml", "--state-dir", "state")

    assert daemon.calls == [("restore", {"config": str(tmp_path / "n.yaml"),
                                         "state_dir": str(tmp_path / "state")})]


def test_options_before_the_command_are_kept(capsys, daemon):
    run(capsys, "--config", "/etc/a.yaml", "-o", "json", "plan")

    assert daemon.calls == [("plan", {"config": "/etc/a.yaml", "detailed_exitcode": False})]


def test_json_output_prints_the_replys_data(capsys, daemon):
    code, out, _ = run(capsys, "status", "-o", "json")

    assert code == 0
    assert json.loads(out) == {"command": "status", "args": {"config": None}}


def test_reply_error_goes_to_stderr_and_its_exit_code_is_kept(capsys, daemon):
    daemon.raises["apply"] = RuntimeError("disk on fire")

    code, out, err = run(capsys, "apply")

    assert code == EXIT_FAILED
    assert out == ""
    assert "disk on fire" in err


def test_validate_never_asks_the_daemon(capsys, daemon, tmp_path):
    config = tmp_path / "n.yaml"
    config.write_text("profiles: [nope]\n")

    run(capsys, "validate", str(config))

    assert daemon.calls == []


def test_standalone_flag_skips_the_daemon(capsys, daemon, tmp_path):
    code, _, err = run(capsys, "plan", "--standalone", "--config", str(tmp_path / "none.yaml"))

    assert daemon.calls == []
    assert code == EXIT_INVALID_CONFIG and "invalid configuration" in err


def test_no_daemon_means_standalone(capsys, no_daemon, tmp_path):
    code, _, err = run(capsys, "plan", "--config", str(tmp_path / "none.yaml"))

    assert code == EXIT_INVALID_CONFIG and "invalid configuration" in err


def test_reload_without_a_daemon_is_exit_1(capsys, no_daemon):
    code, out, err = run(capsys, "reload")

    assert (code, out) == (EXIT_FAILED, "")
    assert "nodenetd is not running" in err


def test_daemon_that_does_not_answer_in_time_is_exit_1(capsys, loop, tmp_path, monkeypatch):
    path = tmp_path / "control.sock"
    monkeypatch.setenv(control.SOCKET_ENV, str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:  # listens, never answers
        hung.bind(str(path))
        hung.listen()

        code, out, err = run(capsys, "status", "--timeout", "0.2")

    assert (code, out) == (EXIT_FAILED, "")
    assert "did not answer status within 0.2 s" in err


def test_help_documents_routing_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main.main(["--help"])
    out = capsys.readouterr().out
    for text in ("reload", "--standalone", "--socket", control.SOCKET_ENV,
                 "64  bad command line", "77  nodenetd's control socket serves root only",
                 "4   another nodenetctl or nodenetd holds the lock"):
        assert text in out


# -- the reply as printed ----------------------------------------------------------------------


class Args:
    def __init__(self, output: str):
        self.output = output


@pytest.mark.parametrize("reply, output, printed", [
    (Reply(0, "hello", {"a": 1}), "text", ("hello\n", "")),
    (Reply(0, "hello", {"a": 1}), "json", ('{\n  "a": 1\n}\n', "")),
    (Reply(3, "", error="invalid configuration:\nx"), "text", ("", "invalid configuration:\nx\n")),
    (Reply(3, "", error="bad"), "json", ("", "bad\n")),  # no "{}" for a failure
    (Reply(1, "restored 0", {"failed": ["x"]}, error="w"), "json",
     ('{\n  "failed": [\n    "x"\n  ]\n}\n', "w\n")),
])
def test_emit(capsys, reply, output, printed):
    assert main.emit(Args(output), reply) == reply.exit_code
    assert capsys.readouterr() == printed


# -- the wire arguments ------------------------------------------------------------------------


def test_every_daemon_command_has_its_arguments_declared():
    assert set(commands.ARGS) == set(COMMANDS)


@pytest.mark.parametrize("command, args, says", [
    ("plan", {"detailed": True}, "unknown argument 'detailed'"),
    ("plan", {"detailed_exitcode": "yes"}, "wrong type"),
    ("apply", {"config": 3}, "wrong type"),
    ("frob", {}, "unknown command"),
])
def test_bad_arguments_are_exit_64_without_touching_anything(command, args, says):
    reply = commands.run_local(command, args)

    assert reply.exit_code == EXIT_USAGE
    assert says in reply.error


def test_run_loaded_refuses_reload():
    reply = commands.run_loaded(None, "reload", {})  # type: ignore[arg-type]

    assert reply.exit_code == EXIT_USAGE


def test_standalone_restore_works_with_a_broken_config(tmp_path):
    config = tmp_path / "n.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nprofiles: 42\nbogus: true\n")
    assert commands.run_local("plan", {"config": str(config)}).exit_code == EXIT_INVALID_CONFIG

    reply = commands.run_local("restore", {"config": str(config)})

    assert reply.exit_code == 0, reply.error
    assert reply.text == "restored 0 setting(s)"


def test_error_replies_carry_the_documented_codes():
    config = commands.error_reply(ConfigError([ConfigIssue(None, "profiles", "missing")]))
    locked = commands.error_reply(LockBusy("/x/lock", "pid 9: nodenetd"))
    other = commands.error_reply(JournalError("journal unreadable"))

    assert (config.exit_code, locked.exit_code, other.exit_code) == (3, 4, 1)
    assert config.error.startswith("invalid configuration:\n")
    assert config.error.endswith("nothing was changed")
    assert "pid 9: nodenetd" in locked.error
    assert other.error == "nodenetctl: journal unreadable"
