"""A lab node for end-to-end tests: a namespace with veth NICs cabled to a 'switch'
namespace, its node config and profiles in a temp dir, and the witnesses to read it back."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from nodenetd.tuning.journal import Journal
from tests.lab.netns import Netns


@dataclass
class Node:
    """A lab node: the namespace, its config file and state dir."""

    ns: Netns
    switch: Netns | None  # where ``nics`` cable the NICs to (failover labs have routers)
    root: Path
    in_process: bool = False  # nodenetctl by fork (Netns.call): the kernel lab's emulated CPU

    @property
    def config(self) -> Path:
        return self.root / "nodenetd.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def journal(self) -> dict:
        """The journal as nodenetd's own reader replays it."""
        journal = Journal(self.state_dir)
        pending = journal.pending
        return {
            "originals": {k: {"value": o.value, "device": o.device, "ifindex": o.ifindex}
                          for k, o in journal.originals.items()},
            "pending": None if pending is None else {"pid": pending.pid,
                                                     "settings": len(pending.before)},
        }

    def write_profile(self, name: str, text: str) -> Path:
        path = self.root / "profiles" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def write_config(self, profiles: list[str], extra: str = "") -> Path:
        if "daemon:" not in extra:  # never reach a nodenetd the host may be running
            extra += f"daemon: {{control_socket: {self.root / 'ctl.sock'}}}\n"
        self.config.write_text(
            f"profiles: {json.dumps(profiles)}\n"
            f"profile_dirs: [{self.root / 'profiles'}]\n"
            f"state_dir: {self.state_dir}\n" + textwrap.dedent(extra)
        )
        return self.config

    def ctl(self, *args: str, **kw):
        """nodenetctl inside the namespace with this node's config."""
        if self.in_process:
            return self.ns.nodenetctl_in_process(*args, "--config", str(self.config))
        return self.ns.nodenetctl(*args, "--config", str(self.config), **kw)

    def ctl_json(self, *args: str):
        proc = self.ctl(*args, "-o", "json")
        assert proc.returncode in (0, 2), proc.stderr
        return json.loads(proc.stdout)

    def nics(self, count: int, prefix: str = "lab", queues: int = 4) -> list[str]:
        assert self.switch is not None, "this node has no switch namespace to cable NICs to"
        names = [f"{prefix}{i}" for i in range(count)]
        for i, name in enumerate(names):
            self.ns.veth(name, f"{prefix}p{i}", peer_ns=self.switch, queues=queues)
        return names
