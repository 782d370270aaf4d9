"""Runs inside the benchmark namespace: times each new interface from the kernel announcing
it to its MTU reaching the profile's value, from rtnetlink events (no polling). Prints JSON
when every expected interface is tuned, or after a timeout with what it saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from nodenetd.daemon.sources.rtnl import LinkChange, LinkEvents


async def watch(prefix: str, count: int, mtu: int, timeout: float) -> dict:
    born: dict[str, float] = {}
    tuned: dict[str, float] = {}
    done = asyncio.Event()

    def on_change(change: LinkChange) -> None:
        link = change.link
        if not link.name.startswith(prefix) or change.action == "deleted":
            return
        now = time.monotonic()
        born.setdefault(link.name, now)
        if link.mtu == mtu and link.name not in tuned:
            tuned[link.name] = now
            if len(tuned) == count:
                done.set()

    events = LinkEvents(on_change)
    events.start(asyncio.get_running_loop())
    print("watching", file=sys.stderr, flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout)
    events.close()
    return {"latency_ms": {n: 1000 * (tuned[n] - born[n]) for n in tuned},
            "seen": len(born), "resyncs": events.resyncs}


def main() -> None:
    prefix, count, mtu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(watch(prefix, count, mtu, timeout=90))))


if __name__ == "__main__":
    main()
