"""nodenetctl through the control socket prints exactly what it prints standalone.

A small server stands in for the daemon: it holds the state dir's lock for its whole life,
as nodenetd does, and answers with the real commands module (commands.run_loaded with
locked=True). Run as a module it is that server::

    python -m tests.integration.test_control_cli SOCKET CONFIG CALL_LOG
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nodenetd.cli import commands
from nodenetd.daemon import control
from nodenetd.daemon.api import EXIT_OK, Reply
from nodenetd.tuning import engine
from nodenetd.tuning.lock import MutationLock
from tests.lab.netns import REPO

pytestmark = pytest.mark.root

PROFILE = """\
sysctls:
  net.ipv4.tcp_slow_start_after_idle: 0
interfaces:
  - name: lab-nics
    match: {name: ["lab*"]}
    mtu: 9000
    txqueuelen: 5000
    features:
      gro: true
      tso: false
    sysctls:
      net.ipv4.conf.IF.rp_filter: 2
"""


# -- the stand-in daemon ---------------------------------------------------------------------


class CommandsController:
    """The commands module behind the socket, as the daemon will use it."""

    def __init__(self, loaded: engine.Loaded, call_log: Path):
        self.loaded = loaded
        self.call_log = call_log

    async def handle(self, command: str, args: dict[str, Any]) -> Reply:
        with self.call_log.open("a") as log:
            log.write(f"{command}\n")
        if command == "reload":
            return Reply(EXIT_OK, "reloaded: nothing changed")
        return await asyncio.to_thread(commands.run_loaded, self.loaded, command, args,
                                       locked=True)


def serve_main(sock: str, config: str, call_log: str) -> None:
    loaded = engine.load(config)

    async def run() -> None:
        server = await control.serve(sock, CommandsController(loaded, Path(call_log)))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        server.close()
        await server.wait_closed()

    with MutationLock(loaded.state_dir):  # held for the server's whole life, like nodenetd
        asyncio.run(run())


class StandIn:
    """The stand-in daemon running inside the node's namespace."""

    def __init__(self, node, sock: Path):
        self.node = node
        self.sock = sock
        self.call_log = node.root / "calls.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = self.node.ns.python_argv("tests.integration.test_control_cli", str(self.sock),
                                        str(self.node.config), str(self.call_log))
        self.proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(REPO)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", self.proc.stderr.read() if self.proc.stderr else line

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.communicate(timeout=30)
        self.proc = None

    def calls(self) -> list[str]:
        return self.call_log.read_text().split() if self.call_log.exists() else []


@pytest.fixture
def standin(node):
    sock = node.root / "run" / "control.sock"
    server = StandIn(node, sock)
    yield server
    server.stop()


def ctl(node, *args: str, sock: Path | None = None) -> subprocess.CompletedProcess:
    """nodenetctl in the node's namespace, its socket path from $NODENETD_SOCKET."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env[control.SOCKET_ENV] = str(sock or node.root / "run" / "control.sock")
    argv = node.ns.python_argv("nodenetd.cli.main", *args, "--config", str(node.config))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def outcome(proc: subprocess.CompletedProcess) -> tuple[int, str, str]:
    return proc.returncode, proc.stdout, proc.stderr


def lab(node) -> None:
    node.nics(2)
    node.write_profile("lab", PROFILE)
    node.write_config(["lab"])


# -- through the daemon, the output is the standalone output ---------------------------------

READ_ONLY = [
    ("plan",),
    ("plan", "--detailed-exitcode"),
    ("plan", "-o", "json"),
    ("status",),
    ("status", "-o", "json"),
    ("apply", "--dry-run"),
    ("apply", "--dry-run", "-o", "json"),
]


def test_read_only_commands_print_the_same_through_the_daemon(node, standin):
    lab(node)
    alone = {args: outcome(ctl(node, *args)) for args in READ_ONLY}
    assert alone[("plan", "--detailed-exitcode")][0] == 2
    assert "link.mtu" in alone[("plan",)][1]

    standin.start()
    served = {args: outcome(ctl(node, *args)) for args in READ_ONLY}

    for args in READ_ONLY:
        assert served[args] == alone[args], args
    assert standin.calls() == ["plan", "plan", "plan", "status", "status", "apply", "apply"]


def test_apply_and_restore_print_the_same_through_the_daemon(node, standin):
    lab(node)
    standin.start()
    served_apply = outcome(ctl(node, "apply"))
    served_status = outcome(ctl(node, "status"))
    assert served_apply[0] == 0, served_apply
    assert node.ns.link("lab0")["mtu"] == 9000
    assert "in-sync" in served_status[1]
    standin.stop()

    alone_restore = outcome(ctl(node, "restore"))
    assert node.ns.link("lab0")["mtu"] == 1500
    alone_apply = outcome(ctl(node, "apply"))
    alone_status = outcome(ctl(node, "status"))
    standin.start()
    served_restore = outcome(ctl(node, "restore"))

    assert served_apply == alone_apply
    assert served_status == alone_status
    assert served_restore == alone_restore
    assert alone_restore[0] == 0 and "restored" in alone_restore[1]
    assert node.ns.link("lab0")["mtu"] == 1500
    assert node.journal["originals"] == {}
    assert standin.calls() == ["apply", "status", "restore"]


def test_json_apply_and_restore_match_too(node, standin):
    lab(node)
    standin.start()
    served_apply = outcome(ctl(node, "apply", "-o", "json"))
    standin.stop()
    alone_restore = outcome(ctl(node, "restore", "-o", "json"))
    alone_apply = outcome(ctl(node, "apply", "-o", "json"))
    standin.start()
    served_restore = outcome(ctl(node, "restore", "-o", "json"))

    assert served_apply == alone_apply and served_apply[0] == 0
    assert served_restore == alone_restore and served_restore[0] == 0


def test_socket_option_beats_the_environment(node, standin):
    lab(node)
    standin.start()
    nowhere = node.root / "nowhere.sock"

    via_option = ctl(node, "status", "--socket", str(standin.sock), sock=nowhere)
    fallback = ctl(node, "status", sock=nowhere)

    assert outcome(via_option) == outcome(fallback)
    assert standin.calls() == ["status"]  # the second one worked standalone


# -- never two mutators ------------------------------------------------------------------------


def test_standalone_mutation_while_the_daemon_runs_is_locked_out(node, standin):
    lab(node)
    standin.start()

    apply = ctl(node, "apply", "--standalone")
    restore = ctl(node, "restore", "--standalone")

    assert apply.returncode == 4, outcome(apply)
    assert "test_control_cli" in apply.stderr  # names the holder
    assert restore.returncode == 4, outcome(restore)
    assert node.ns.link("lab0")["mtu"] == 1500
    assert standin.calls() == []
    plan = ctl(node, "plan", "--standalone")  # reading needs no lock
    assert plan.returncode == 0 and "link.mtu" in plan.stdout


def test_reload_goes_to_the_daemon(node, standin):
    lab(node)
    standin.start()

    result = ctl(node, "reload")

    assert outcome(result) == (0, "reloaded: nothing changed\n", "")
    assert standin.calls() == ["reload"]


def test_reload_without_a_daemon_says_it_is_not_running(node):
    lab(node)

    result = ctl(node, "reload")

    assert result.returncode == 1
    assert result.stdout == ""
    assert "nodenetd is not running" in result.stderr


def test_stale_socket_means_standalone(node, standin):
    lab(node)
    standin.start()
    standin.proc.send_signal(signal.SIGKILL)  # dies without removing its socket
    standin.proc.wait(timeout=30)
    assert standin.sock.exists()

    result = ctl(node, "apply")

    assert result.returncode == 0, outcome(result)
    assert node.ns.link("lab0")["mtu"] == 9000


if __name__ == "__main__":
    serve_main(*sys.argv[1:4])
