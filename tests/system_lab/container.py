"""The system lab's second guest: a systemd-nspawn container booted from the same image.

systemd is PID 1 in it, it has its own network namespace (``--private-network``: its own
veths and net sysctls, never the host's), and its root is the cached image mounted read-only
with a tmpfs overlay (``--volatile=overlay``), so whatever a test installs is gone when the
container stops. It runs at native speed, which is why the Ansible tests and the upgrade
check run here rather than in the TCG VM, where every start of the interpreter costs ~40 s.
Commands run inside through ``nsenter`` into the namespaces of the container's PID 1
(nothing here needs systemd-machined on the host).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.system_lab.image import Image, mounts_under
from tests.system_lab.vm import stream

GUEST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class Container:
    def __init__(self, image: Image, out: Path, binds: dict[Path, str]):
        self.image = image
        self.out = out
        self.binds = binds  # host path -> path in the container (read-only)
        self.root = out / "container-root"
        self.name = f"nodenetd-lab-{os.getpid()}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None

    def start(self, timeout: float = 120) -> float:
        """Boot it; returns the seconds until systemd reports the system running."""
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        if not mounts_under(self.root):
            subprocess.run(["mount", "-o", "loop,ro", str(self.image.rootfs), str(self.root)],
                           check=True, capture_output=True)
        argv = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
                f"--machine={self.name}", f"--directory={self.root}", "--volatile=overlay",
                "--private-network", "--boot",
                *(f"--bind-ro={host}:{guest}" for host, guest in self.binds.items())]
        with (self.out / "container-console.log").open("wb") as console:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + timeout
        while self.leader is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}; see "
                                   f"{self.out / 'container-console.log'}")
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                                      capture_output=True, text=True, check=False).stdout.split()
            if children:
                self.leader = int(children[0])
            elif time.monotonic() > deadline:
                raise TimeoutError("the container's init never started")
            else:
                time.sleep(0.2)
        while True:
            state = self.run("systemctl is-system-running", timeout=30).stdout.strip()
            if state in ("running", "degraded"):
                return time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"the container's systemd is {state!r} after {timeout:.0f}s")
            time.sleep(0.5)

    def argv(self, command: str) -> list[str]:
        assert self.leader is not None
        return ["nsenter", f"--target={self.leader}", "--all", "--", "env", "-i",
                f"PATH={GUEST_PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
                "sh", "-c", command]

    def run(self, command: str | list[str], *, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        """A shell command inside, as root; never raises for its exit status."""
        if isinstance(command, list):
            command = shlex.join(command)
        try:
            return subprocess.run(self.argv(command), capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            return subprocess.CompletedProcess(exc.cmd, 124, out, f"timed out after {timeout}s")

    def stream(self, command: str, *, timeout: float, on_line: Callable[[str], None]) -> int:
        return stream(self.argv(command), timeout=timeout, on_line=on_line,
                      stderr=self.out / "container-stderr.log")

    def stop(self) -> None:
        """Shut it down (SIGTERM makes nspawn ask systemd to power off), then unmount the
        image; never raises."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
        for point in mounts_under(self.root):
            subprocess.run(["umount", point], capture_output=True, check=False)
        if mounts_under(self.root):
            subprocess.run(["umount", "-l", str(self.root)], capture_output=True, check=False)
