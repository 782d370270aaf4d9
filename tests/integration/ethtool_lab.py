"""Lab helpers for the ethtool adapter tests.

``run_ops`` runs ``EthtoolNetlink`` operations inside a namespace (the adapter works in the
namespace of the process that opens it) and returns their results as JSON-able values; run as
a script it reads the operations as JSON from argv[1] and prints the results.
``ethtool_k_states`` turns ``ethtool --json -k`` output into the kernel feature names the
adapter uses, so ethtool can serve as the independent witness.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def ethtool_k_states(entry: dict[str, Any]) -> dict[str, tuple[bool, bool]]:
    """{kernel feature name: (active, fixed)} from one device of ``ethtool --json -k``.

    Group lines (tx-checksumming, scatter-gather, tcp-segmentation-offload) have no fixed
    state and are left out; ethtool's legacy display names (generic-receive-offload...) are
    mapped to the kernel feature they stand for.
    """
    from nodenetd.config.vocabulary import FEATURE_ALIASES

    states = {}
    for key, value in entry.items():
        if not isinstance(value, dict) or value.get("fixed") is None:
            continue
        (name,) = FEATURE_ALIASES.get(key, (key,))
        states[name] = (bool(value["active"]), bool(value["fixed"]))
    return states


def _result(value: Any) -> Any:
    """Typed adapter results as JSON: FeatureState, Limits, dicts keyed by ifindex."""
    from nodenetd.kernel.ethtool import FeatureState, Limits

    if isinstance(value, FeatureState):
        return {
            "active": sorted(value.active),
            "changeable": sorted(value.changeable),
            "known": sorted(value.known),
        }
    if isinstance(value, Limits):
        return {"current": dict(value.current), "maximum": dict(value.maximum)}
    if isinstance(value, dict):
        return {str(key): _result(item) for key, item in value.items()}
    return value


def run_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run each {"op": name, "ifname"|"ifindex": ..., "values": {...}} on one socket.

    Each result is {"ok": value, "seconds": t} or {"error": class name, "setting", "errno",
    "reason", "target"}. ``ifname`` is resolved to its ifindex in this namespace.
    """
    from nodenetd.errors import KernelError
    from nodenetd.kernel.ethtool import EthtoolNetlink

    results = []
    with EthtoolNetlink() as sock:
        for op in ops:
            args: list[Any] = []
            if "ifname" in op or "ifindex" in op:
                ifname = op.get("ifname", "gone0")
                args = [op.get("ifindex") or socket.if_nametoindex(ifname), ifname]
                if op["op"].startswith("get_"):
                    args = args[:1]
            if "values" in op:
                args.append(op["values"])
            start = time.perf_counter()
            try:
                value = getattr(sock, op["op"])(*args)
            except KernelError as exc:
                results.append(
                    {
                        "error": type(exc).__name__,
                        "target": exc.target,
                        "setting": exc.setting,
                        "errno": exc.errno,
                        "reason": exc.reason,
                    }
                )
            else:
                results.append({"ok": _result(value), "seconds": time.perf_counter() - start})
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(run_ops(json.loads(sys.argv[1]))))
