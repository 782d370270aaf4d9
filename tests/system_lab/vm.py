"""Boot the system lab's image under qemu and talk to it over SSH.

The VM: the cached image as its root disk with ``snapshot=on`` (writes go to a temporary
overlay, so the image stays pristine), qemu's user networking with the guest's port 22
forwarded to a free port on 127.0.0.1, the serial console in ``console.log``. Files go in
over the SSH connection (the .deb is about 1.3 MB), so the VM can boot while the package is
still being built. TCG only: KVM guests hang on this machine (tests/kernel_lab/README.md);
``-cpu qemu64`` because with ``max`` glibc picks AVX2 string functions, which TCG emulates
slowly, and udev loads crypto and KVM modules for the extra CPU flags. qemu runs in its own
process group, killed when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.system_lab.image import KERNEL_CMDLINE, Image

INPUTS = "/mnt/lab"  # where push() puts the run's files in the guest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VM:
    def __init__(self, image: Image, out: Path, *, memory: str = "1536M", cpus: int = 2):
        self.image = image
        self.out = out
        self.memory = memory
        self.cpus = cpus
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.console = out / "console.log"
        self.control_path = out / "ssh-control"

    # -- life cycle -------------------------------------------------------------------------

    def argv(self) -> list[str]:
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64",
            "-m", self.memory, "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console}", "-no-reboot",
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", KERNEL_CMDLINE,
            "-drive", f"file={self.image.rootfs},format=raw,if=virtio,snapshot=on,cache=unsafe",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
        ]

    def start(self) -> None:
        self.console.unlink(missing_ok=True)
        with (self.out / "qemu.log").open("wb") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ssh(self, timeout: float) -> float:
        """Seconds until sshd in the guest answered; raises TimeoutError or RuntimeError."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.running():
                raise RuntimeError(f"qemu exited ({self.proc.returncode if self.proc else '?'})"
                                   " before the guest came up")
            probe = self.ssh("true", timeout=30, connect_timeout=5, multiplex=False)
            if probe.returncode == 0:
                return time.monotonic() - started
            time.sleep(2)
        raise TimeoutError(f"no SSH from the guest within {timeout:.0f}s")

    def stop(self) -> None:
        """Power off (briefly), then kill qemu's process group; never raises."""
        if self.proc is None:
            return
        if self.running():
            with contextlib.suppress(Exception):
                self.ssh("systemctl poweroff --no-block", timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        subprocess.run(["ssh", *self.ssh_options(), "-O", "exit", "root@127.0.0.1"],
                       capture_output=True, check=False, timeout=10)

    # -- SSH --------------------------------------------------------------------------------

    def ssh_options(self, *, connect_timeout: int = 20, multiplex: bool = True) -> list[str]:
        options = [
            "-i", str(self.image.ssh_key), "-p", str(self.port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=8",
        ]
        if multiplex:  # one TCP+SSH handshake for the whole run: each costs seconds in TCG
            options += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}",
                        "-o", "ControlPersist=1800"]
        return options

    def ssh(self, command: str | list[str], *, timeout: float = 300, input: bytes | None = None,
            connect_timeout: int = 20, multiplex: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the guest as root; never raises for its exit status."""
        if isinstance(command, list):
            command = shlex.join(command)
        argv = ["ssh", *self.ssh_options(connect_timeout=connect_timeout, multiplex=multiplex),
                "root@127.0.0.1", command]
        try:
            return subprocess.run(argv, input=input.decode() if input else None,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
            return subprocess.CompletedProcess(argv, 124, out, f"timed out after {timeout:.0f}s")

    def push(self, files: list[Path]) -> None:
        """Copy files into INPUTS in the guest (a tar stream over the SSH connection)."""
        with tempfile.TemporaryFile() as archive:
            with tarfile.open(fileobj=archive, mode="w") as tar:
                for path in files:
                    tar.add(path, arcname=path.name)
            archive.seek(0)
            argv = ["ssh", *self.ssh_options(), "root@127.0.0.1",
                    f"mkdir -p {INPUTS} && tar -x -C {INPUTS}"]
            proc = subprocess.run(argv, stdin=archive, capture_output=True, timeout=300,
                                  check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"copying files into the guest failed: {proc.stderr!r}")

    def ssh_stream(self, command: str, *, timeout: float, on_line: Callable[[str], None]) -> int:
        """Run ``command`` in the guest, calling ``on_line`` for each line of its stdout as it
        comes; stderr goes to guest-stderr.log. Returns the exit status (124 on timeout)."""
        return stream(["ssh", *self.ssh_options(), "root@127.0.0.1", command],
                      timeout=timeout, on_line=on_line, stderr=self.out / "guest-stderr.log")


def stream(argv: list[str], *, timeout: float, on_line: Callable[[str], None],
           stderr: Path) -> int:
    """Run argv in its own process group, calling ``on_line`` for each line of stdout as it
    comes, stderr appended to ``stderr``; killed after ``timeout`` (exit status 124)."""
    with stderr.open("ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, text=True, start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                on_line(line.rstrip("\n"))
            rc = proc.wait()
        finally:
            timer.cancel()
        return 124 if timed_out.is_set() else rc
