"""Network namespaces that tests create and always remove.

Everything runs through ``ip netns exec`` so each command sees the namespace's own
/proc/sys/net and a sysfs mounted for it. The host's interfaces and sysctls are never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_REC, MS_SLAVE, MNT_DETACH = 0x4000, 0x80000, 2


def run(argv: list[str], *, check: bool = True, timeout: float = 60, **kwargs: Any):
    """Run a command, raising LabError with its output when it fails and check is set."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        command = " ".join(argv)
        raise LabError(
            f"{command} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc


@dataclass
class Netns:
    """One network namespace; ``delete`` is idempotent."""

    name: str
    links: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, prefix: str = "nnd") -> Netns:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        run(["ip", "netns", "add", name])
        ns = cls(name)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60, **kwargs: Any):
        return run(self.exec_argv(*argv), check=check, timeout=timeout, **kwargs)

    def json(self, *argv: str) -> Any:
        return json.loads(self.run(*argv).stdout or "null")

    def call(self, function: Callable[..., Any], *args: Any, timeout: float = 300) -> Any:
        """``function(*args)`` in a forked child that entered this namespace the way ``ip
        netns exec`` does (its own mount namespace, a sysfs mounted for the network
        namespace): nodenetd code that is already imported runs there at once. Under the
        kernel lab's emulation a new interpreter costs 10 s or more of imports; a fork costs
        milliseconds. Returns the result; re-raises the child's exception as LabError."""
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            os.close(reader)
            try:
                _enter(self.name)
                reply: tuple[str, Any] = ("ok", function(*args))
            except BaseException:  # reported to the parent, whatever it was
                reply = ("error", traceback.format_exc())
            try:
                payload = pickle.dumps(reply)
            except Exception:  # an unpicklable result
                payload = pickle.dumps(("error", traceback.format_exc()))
            with os.fdopen(writer, "wb") as pipe:
                pipe.write(payload)
            os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            payload = _read_within(pipe, timeout, pid)
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise LabError(f"{function.__name__} in {self.name} died (wait status {status})")
        outcome, value = pickle.loads(payload)
        if outcome == "error":
            raise LabError(f"{function.__name__} in {self.name} failed:\n{value}")
        return value

    def spawn(self, function: Callable[..., int], *args: Any, log_path: Path,
              env: dict[str, str] | None = None) -> Forked:
        """``function(*args)`` as a long-running forked child in this namespace (entered as
        ``call`` does), stdout and stderr to ``log_path``, ``env`` added to its environment;
        its return value is the exit status. A real process for signals and ``wait``, without
        the interpreter start a new process costs under emulation."""
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        pid = os.fork()
        if pid == 0:  # the child
            code = 70  # EX_SOFTWARE, if anything below raises
            try:
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                    signal.signal(sig, signal.SIG_DFL)
                root = logging.getLogger()
                for handler in list(root.handlers):  # the test runner's capture handlers
                    root.removeHandler(handler)
                os.environ.update(env or {})
                _enter(self.name)
                code = function(*args)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 1)
        os.close(log_fd)
        return Forked(pid)

    def nodenetctl_in_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        """nodenetctl's own ``main`` run in this namespace by ``call``: the same parsing,
        engine and rendering as the command, without an interpreter start."""
        return self.call(nodenetctl_main, list(args))

    def veth(
        self,
        name: str,
        peer: str,
        *,
        peer_ns: Netns | None = None,
        queues: int = 1,
        up: bool = True,
    ) -> None:
        """Create a veth pair; the peer may live in another namespace (a 'switch port')."""
        q = ["numtxqueues", str(queues), "numrxqueues", str(queues)]
        self.run("ip", "link", "add", "name", name, *q, "type", "veth", "peer", "name", peer, *q)
        if peer_ns is not None:
            self.run("ip", "link", "set", peer, "netns", peer_ns.name)
        if up:
            self.run("ip", "link", "set", name, "up")
            (peer_ns or self).run("ip", "link", "set", peer, "up")

    def link(self, name: str) -> dict[str, Any]:
        """``ip -j -d link show NAME``: the independent witness for link attributes."""
        return self.json("ip", "-j", "-d", "link", "show", "dev", name)[0]

    def features(self, name: str) -> dict[str, str]:
        """``ethtool -k NAME`` as {feature: 'on'|'off'} (the '[fixed]' suffix dropped)."""
        out = self.run("ethtool", "-k", name).stdout
        result: dict[str, str] = {}
        for line in out.splitlines()[1:]:
            key, _, value = line.strip().partition(":")
            if value:
                result[key.strip()] = value.split()[0]
        return result

    def channels(self, name: str) -> dict[str, str]:
        """Current channel counts from ``ethtool -l NAME``."""
        out = self.run("ethtool", "-l", name).stdout
        current = out.split("Current hardware settings:")[1]
        values = {}
        for line in current.strip().splitlines():
            key, _, value = line.partition(":")
            values[key.strip().lower()] = value.strip()
        return values

    def sysctl(self, key: str) -> str:
        """``sysctl -n KEY`` inside the namespace, whitespace normalised."""
        return " ".join(self.run("sysctl", "-n", key).stdout.split())

    def python_argv(self, module: str, *args: str) -> list[str]:
        return self.exec_argv(str(VENV_BIN / "python"), "-m", module, *args)

    def nodenetctl(self, *args: str, check: bool = False, timeout: float = 120, **kw: Any):
        """Run the real CLI inside this namespace."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return run(
            self.python_argv("nodenetd.cli.main", *args),
            check=check,
            timeout=timeout,
            env=env,
            **kw,
        )


class Forked:
    """A child from ``Netns.spawn``, with the part of ``subprocess.Popen`` tests use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _enter(name: str) -> None:
    """Join network namespace NAME with a private mount namespace and a fresh sysfs."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "mount --make-rslave /")
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, CLONE_NEWNET), f"setns({name})")
    finally:
        os.close(fd)
    check(libc.umount2(b"/sys", MNT_DETACH), "umount /sys")
    check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount sysfs")


def _read_within(pipe: Any, timeout: float, pid: int) -> bytes:
    """Everything the child writes, or LabError (and the child killed) after TIMEOUT s."""
    chunks = []
    while True:
        ready, _, _ = select.select([pipe], [], [], timeout)
        if not ready:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise LabError(f"a namespace call did not finish within {timeout:.0f} s")
        chunk = os.read(pipe.fileno(), 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def nodenetctl_main(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """nodenetctl's ``main`` in this process, its output captured as a command's would be."""
    from nodenetd.cli.main import main  # already imported by the caller, or imported once here

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own exits
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["nodenetctl", *argv], code, out.getvalue(),
                                       err.getvalue())


def require_tools(*tools: str) -> list[str]:
    """Names of the given command-line witnesses that are missing."""
    return [tool for tool in tools if shutil.which(tool) is None]
