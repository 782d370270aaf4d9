"""Network namespaces that tests create and always remove.

Everything runs through ``ip netns exec`` so each command sees the namespace's own
/proc/sys/net and a sysfs mounted for it. The host's interfaces and sysctls are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


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


def require_tools(*tools: str) -> list[str]:
    """Names of the given command-line witnesses that are missing."""
    return [tool for tool in tools if shutil.which(tool) is None]
