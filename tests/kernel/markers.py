"""Markers the kernel lab's tests share."""

from __future__ import annotations

import os

import pytest

# Tests that write the initial namespace's global sysctls run only inside the kernel lab VM,
# whose kernel is a throwaway: a real host's globals are never touched by a test.
INITIAL_NAMESPACE_IN_VM_ONLY = pytest.mark.skipif(
    os.environ.get("NODENETD_KERNEL_LAB") != "vm",
    reason="writes initial-namespace global sysctls: runs only inside the kernel lab VM",
)
