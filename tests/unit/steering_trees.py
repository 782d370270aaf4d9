"""Build the recorded sysfs/procfs trees of tests/fixtures/steering under a temporary root."""

from __future__ import annotations

import os
from pathlib import Path

from nodenetd.kernel.steering import SteeringFs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "steering"


def build(root: Path, driver: str, tree: str = "tree.txt") -> SteeringFs:
    """The tree of ``driver`` under ``root`` (sys/, proc/) and a SteeringFs reading it."""
    for raw in (FIXTURES / driver / tree).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if " -> " in line:
            path, target = line.split(" -> ", 1)
            link = root / path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
        elif " =" in line:
            path, _, content = line.partition(" =")
            file = root / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(content.strip() + "\n")
        elif line.endswith("/"):
            (root / line).mkdir(parents=True, exist_ok=True)
        else:
            raise ValueError(f"{driver}/{tree}: cannot read {line!r}")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "interrupts").write_text((FIXTURES / driver / "interrupts").read_text())
    return SteeringFs(root / "sys", root / "proc")
