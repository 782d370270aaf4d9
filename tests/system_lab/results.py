"""Check results of the system lab: one per check, printed as they come, written as JUnit XML
(scripts/junit_total.py counts them into the suite's total)."""

from __future__ import annotations

import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


@dataclass
class Result:
    where: str  # host, vm, container
    name: str
    status: str  # passed, failed, skipped
    seconds: float
    message: str
    doc: str = ""


class Results:
    def __init__(self, say: Callable[[str], None]):
        self.say = say
        self.items: list[Result] = []
        self._lock = threading.Lock()

    def add(self, result: Result) -> None:
        with self._lock:
            self.items.append(result)
        mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[result.status]
        self.say(f"{mark} {result.where}/{result.name} ({result.seconds:.0f}s): {result.message}")

    def run(self, where: str, name: str, fn: Callable[[], str], doc: str = "") -> bool:
        """Run one check: its return value is the message; Failed/Skipped say otherwise."""
        started = time.monotonic()
        try:
            message, status = fn(), "passed"
        except Skipped as exc:
            message, status = str(exc), "skipped"
        except Failed as exc:
            message, status = str(exc), "failed"
        except Exception as exc:  # a bug in the check, or the lab itself broke: a failure
            message, status = f"{type(exc).__name__}: {exc}", "failed"
            self.say(traceback.format_exc())
        self.add(Result(where, name, status, time.monotonic() - started, message, doc))
        return status == "passed"

    def failed(self, where: str | None = None) -> list[Result]:
        return [r for r in self.items if r.status == "failed" and where in (None, r.where)]

    def status_of(self, where: str, name: str) -> str | None:
        for result in self.items:
            if (result.where, result.name) == (where, name):
                return result.status
        return None

    def counts(self) -> tuple[int, int, int]:
        statuses = [r.status for r in self.items]
        return statuses.count("passed"), statuses.count("failed"), statuses.count("skipped")

    def write_junit(self, path: Path, wall: float) -> None:
        _, failed, skipped = self.counts()
        suite = ET.Element("testsuite", name="system-lab", tests=str(len(self.items)),
                           failures=str(failed), errors="0", skipped=str(skipped),
                           time=f"{wall:.1f}")
        for result in self.items:
            case = ET.SubElement(suite, "testcase", classname=f"system_lab.{result.where}",
                                 name=result.name, time=f"{result.seconds:.1f}")
            if result.status == "failed":
                ET.SubElement(case, "failure", message=result.message[:500]).text = (
                    result.message)
            elif result.status == "skipped":
                ET.SubElement(case, "skipped", message=result.message[:500])
            elif result.doc or result.message:
                ET.SubElement(case, "system-out").text = f"{result.doc}\n{result.message}"
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
