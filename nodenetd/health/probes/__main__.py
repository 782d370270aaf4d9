"""Run probers from a JSON plan for a while and print a JSON summary: a diagnostic tool and
the driver of the namespace tests (which run it inside a node namespace).

    python -m nodenetd.health.probes '{"duration": 2, "events": false, "probers": [
        {"member": "eth1", "specs": [{"kind": "icmp", "target": "192.0.2.1",
                                      "interval": 0.01}]}]}'

A prober entry may also name the ``mac`` its ARP/NS probes speak as. The plan may also be
given as ``@FILE`` or ``-`` (stdin). SIGINT or SIGTERM ends the run early, still with the
summary; with ``"announce": true`` the line ``probing`` goes to stderr once every prober has
started (a test starts its traffic then). The summary has, per probe, the
counters, RTT percentiles in milliseconds and the successful replies per second; the process's
CPU use (user + system) over the probing window as a fraction of one core; and, with
``"events": true``, every result in the order delivered, as ``[member, kind, target, ok,
rtt, at, sent_at, error, delivered]`` with monotonic times (the same clock in every
namespace, so a test can line them up with the moment it broke a path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sys
import time
from typing import Any

from nodenetd.errors import NodenetdError
from nodenetd.health.probes import Prober, ProbeResult, ProbeSpec


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    duration = float(plan.get("duration", 1.0))
    keep_events = bool(plan.get("events", False))
    rtts: dict[tuple[str, str, str], list[float]] = {}
    events: list[list[Any]] = []

    def on_result(result: ProbeResult) -> None:
        if result.ok:
            rtts[(result.member, result.kind, result.address)].append(result.rtt or 0.0)
        if keep_events:
            events.append(
                [
                    result.member,
                    result.kind,
                    result.address,
                    result.ok,
                    result.rtt,
                    result.at,
                    result.sent_at,
                    result.error,
                    time.monotonic(),
                ]
            )

    probers = [
        Prober(
            entry["member"],
            [ProbeSpec(**spec) for spec in entry["specs"]],
            on_result,
            mac=entry.get("mac"),
        )
        for entry in plan["probers"]
    ]
    for prober in probers:
        for spec in prober.specs:
            rtts[(prober.member, spec.kind, spec.target)] = []
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        for prober in probers:
            prober.start(loop)
        usage0, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        if plan.get("announce"):
            print("probing", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        usage1, ended = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    finally:
        for prober in probers:
            prober.close()
    wall = ended - started
    user, system = usage1.ru_utime - usage0.ru_utime, usage1.ru_stime - usage0.ru_stime
    summary: dict[str, Any] = {
        "started": started,
        "ended": ended,
        "wall": wall,
        "cpu": {"user": user, "system": system, "fraction": (user + system) / wall},
        "probes": [],
    }
    for prober in probers:
        sources = prober.sources()
        for (kind, target), counters in prober.counters().items():
            values = rtts[(prober.member, kind, target)]
            summary["probes"].append(
                {
                    "member": prober.member,
                    "kind": str(kind),
                    "target": target,
                    "source": sources[(kind, target)],
                    "sent": counters.sent,
                    "ok": counters.ok,
                    "timeouts": counters.timeouts,
                    "send_errors": counters.send_errors,
                    "late": counters.late,
                    "skipped": counters.skipped,
                    "ok_per_s": counters.ok / wall,
                    "rtt_ms": None
                    if not values
                    else {
                        "min": min(values) * 1000,
                        "p50": _percentile(values, 0.5) * 1000,
                        "p99": _percentile(values, 0.99) * 1000,
                        "max": max(values) * 1000,
                    },
                }
            )
    if keep_events:
        summary["events"] = events
    return summary


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    text = args[0]
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        with open(text[1:]) as plan_file:
            text = plan_file.read()
    try:
        summary = asyncio.run(run(json.loads(text)))
    except NodenetdError as err:
        print(json.dumps({"error": str(err), "type": type(err).__name__}))
        return 1
    except (KeyError, TypeError, ValueError) as err:  # a malformed plan
        print(json.dumps({"error": f"bad plan: {err!r}", "type": "PlanError"}))
        return 64
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
