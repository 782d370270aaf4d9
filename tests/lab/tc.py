"""Witnesses for tc state in a lab namespace: ``tc -j`` (and ``tc class show`` parsed, since
iproute2 6.1 prints no JSON for htb classes), ``tc monitor``, and nodenetd's own reader."""

from __future__ import annotations

import subprocess
import time

from nodenetd.kernel.tc import Tc


def qdiscs(node, dev: str = "lab0") -> list[dict]:
    return node.ns.json("tc", "-j", "-s", "qdisc", "show", "dev", dev)


def root(node, dev: str = "lab0") -> dict:
    return next(q for q in qdiscs(node, dev) if q.get("root"))


_UNITS = {"bit": 1, "Kbit": 10**3, "Mbit": 10**6, "Gbit": 10**9}


def classes(node, dev: str = "lab0") -> dict[str, dict]:
    """``tc class show`` parsed (iproute2 6.1 prints no JSON for htb classes): handle ->
    {parent, prio, rate, ceil} with rates in bytes per second."""
    found = {}
    for line in node.ns.run("tc", "class", "show", "dev", dev).stdout.splitlines():
        words = line.split()
        if words[:2] != ["class", "htb"]:
            continue
        entry: dict = {"parent": words[4] if words[3] == "parent" else "root"}
        for key in ("prio", "rate", "ceil"):
            if key in words:
                value = words[words.index(key) + 1]
                if key == "prio":
                    entry[key] = int(value)
                else:
                    unit = next(u for u in sorted(_UNITS, key=len, reverse=True)
                                if value.endswith(u))
                    entry[key] = round(float(value[: -len(unit)]) * _UNITS[unit] / 8)
        found[words[2]] = entry
    return found


def u32_nodes(node, dev: str = "lab0", parent: str = "1:") -> list[dict]:
    found = node.ns.json("tc", "-j", "filter", "show", "dev", dev, "parent", parent)
    return [f for f in found if f.get("options", {}).get("fh", "").count(":") == 2]


def reader(node):
    """nodenetd's own view: the tc adapter opened in the node's namespace."""
    return Tc(node.ns.name)


class Monitor:
    """``tc monitor`` in the namespace: every qdisc, class and filter event while it runs."""

    def __init__(self, node):
        self.proc = subprocess.Popen(node.ns.exec_argv("tc", "monitor"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(0.3)  # subscribed before anything happens

    def stop(self) -> str:
        time.sleep(0.3)
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out
