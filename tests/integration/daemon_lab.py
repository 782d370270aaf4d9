"""Run nodenetd inside a lab namespace with a real NOTIFY_SOCKET, the way systemd would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netns import REPO, Forked


@dataclass
class Daemon:
    node: object  # tests.lab.node.Node
    proc: subprocess.Popen | Forked
    notify: socket.socket
    log_path: Path
    messages: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, node, *, env: dict[str, str] | None = None, fork: bool = False) -> Daemon:
        """nodenetd in the node's namespace: a new interpreter, or with ``fork`` the test
        process forked into its ``main`` (the kernel lab: no interpreter start under
        emulation)."""
        notify_path = node.root / "notify.sock"
        notify_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        log_path = node.root / f"nodenetd-{time.monotonic_ns()}.log"
        added = {"NOTIFY_SOCKET": str(notify_path), **(env or {})}
        args = ["--config", str(node.config), "--log-level", "debug"]
        proc: subprocess.Popen | Forked
        if fork:
            from nodenetd.daemon.main import main

            proc = node.ns.spawn(main, args, log_path=log_path, env=added)
        else:
            environment = {**os.environ, "PYTHONPATH": str(REPO), **added}
            with open(log_path, "w") as log:
                proc = subprocess.Popen(node.ns.python_argv("nodenetd.daemon.main", *args),
                                        env=environment, stdout=log, stderr=log)
        return cls(node, proc, sock, log_path)

    def receive(self, timeout: float) -> list[str]:
        """Notify messages that arrive within ``timeout`` seconds (all so far, once closed)."""
        if self.notify.fileno() < 0:
            return self.messages
        self.notify.settimeout(timeout)
        try:
            while True:
                self.messages.append(self.notify.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            pass
        return self.messages

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in m for m in self.messages):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"nodenetd exited {self.proc.returncode}:\n{self.log}")
            self.receive(0.05)
        raise AssertionError(f"no {text!r} from nodenetd in {timeout}s:\n{self.log}")

    def wait_ready(self) -> None:
        self.wait_for("READY=1")

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.receive(0.05)  # keep what it said on the way out (STOPPING=1)
            self.notify.close()


def eventually(check, timeout: float = 10, interval: float = 0.02):
    """Poll ``check`` until it returns a truthy value; the last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
