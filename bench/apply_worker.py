"""Runs inside the benchmark namespace: times nodenetd's engine in-process and prints JSON.

Interpreter start-up is measured separately by the driver, so these figures are the work
itself: load + observe + plan + journal + apply + verify."""

from __future__ import annotations

import json
import resource
import sys
import time

from nodenetd.tuning import engine
from nodenetd.tuning.session import KernelSession


def main(config: str, phase: str) -> None:
    started = time.perf_counter()
    loaded = engine.load(config)
    result: dict[str, object] = {}
    if phase == "apply":
        outcome = engine.apply(loaded)
        result["changes"] = len(outcome.result.applied)
        result["skipped"] = len(outcome.skipped)
    elif phase == "plan":
        with KernelSession() as session:
            plan = engine.compute_plan(loaded, session)
        result["changes"] = len(plan.changes)
        result["in_sync"] = len(plan.in_sync)
    elif phase == "restore":
        report = engine.restore_state(loaded.state_dir)
        result["restored"] = len(report.restored)
        result["failed"] = len(report.failed)
    result["seconds"] = time.perf_counter() - started
    result["max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
