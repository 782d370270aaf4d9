"""Shared fixtures: namespace factory, root/kernel gating."""

from __future__ import annotations

import faulthandler
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from tests.kernel_lab.probe import RUNNER_COMMAND, missing_kernel_features
from tests.lab.netns import Netns

# Set by the kernel lab runner (tests/kernel_lab): "vm" inside its VM, "host" when it found the
# host kernel sufficient. Either way the `kernel` tests run without probing again.
KERNEL_LAB_ENV = "NODENETD_KERNEL_LAB"
# Set by the runner when the lane cannot run here (no kernel image, no qemu...): the reason
# every `kernel` test is skipped with, so the report says why instead of passing silently.
KERNEL_SKIP_ENV = "NODENETD_KERNEL_SKIP"
# Inside the VM: a shared directory for the lab's files (stack dumps of a hung run).
KERNEL_LAB_OUT_ENV = "NODENETD_KERNEL_LAB_OUT"
_STACKS_KEY = pytest.StashKey[TextIO]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root for network namespaces (CI runs as root)")
        for item in items:
            if "root" in item.keywords or "kernel" in item.keywords:
                item.add_marker(skip)
        return
    kernel_items = [item for item in items if "kernel" in item.keywords]
    if kernel_items and (reason := _kernel_skip_reason()):
        skip = pytest.mark.skip(reason=reason)
        for item in kernel_items:
            item.add_marker(skip)


@functools.cache
def _kernel_skip_reason() -> str | None:
    """Why `kernel` tests cannot run in this session, or None; probed once per session."""
    if forced := os.environ.get(KERNEL_SKIP_ENV):
        return forced
    if os.environ.get(KERNEL_LAB_ENV):
        return None
    missing = missing_kernel_features()
    if not missing:
        return None
    return (
        f"host kernel lacks {', '.join(missing)}; "
        f"these tests run in the kernel lab VM: {RUNNER_COMMAND}"
    )


def _lab_out() -> Path | None:
    out = os.environ.get(KERNEL_LAB_OUT_ENV)
    return Path(out) if out and os.environ.get(KERNEL_LAB_ENV) == "vm" else None


def pytest_configure(config: pytest.Config) -> None:
    """In the lab VM, SIGUSR1 dumps every thread's stack to a shared file.

    The guest runner sends it before interrupting a run that outlived its budget, so a hung
    test shows where it hung even if the interrupt itself cannot get through.
    """
    if out := _lab_out():
        stacks = (out / "stacks.txt").open("w")
        config.stash[_STACKS_KEY] = stacks
        faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)


def pytest_runtest_logstart(nodeid: str) -> None:
    """In the lab VM, name the running test in a shared file: if the guest hangs or crashes,
    the runner on the host can still say which test it was."""
    if out := _lab_out():
        (out / "current-test.txt").write_text(nodeid)


def pytest_runtest_logfinish(nodeid: str) -> None:
    if out := _lab_out():
        (out / "current-test.txt").write_text("")


@pytest.fixture
def make_netns() -> Iterator:
    """Factory for fresh namespaces, all deleted at teardown even when the test fails."""
    created: list[Netns] = []

    def factory(prefix: str = "nnd") -> Netns:
        ns = Netns.create(prefix)
        created.append(ns)
        return ns

    yield factory
    for ns in reversed(created):
        ns.delete()


@pytest.fixture
def netns(make_netns) -> Netns:
    """One fresh namespace."""
    return make_netns()
