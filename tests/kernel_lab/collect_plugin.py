"""pytest plugin for the runner's host-side collection: the files of the selected tests.

Loaded with ``-p tests.kernel_lab.collect_plugin`` next to ``--collect-only``; writes one file
path per line to $NODENETD_KERNEL_LAB_COLLECT, whatever verbosity the user's pytest args ask
for (the printed listing changes shape with -v/-q, this file does not).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    target = os.environ.get("NODENETD_KERNEL_LAB_COLLECT")
    if not target:
        return
    root = session.config.rootpath
    files = sorted({str(Path(item.path).relative_to(root)) for item in session.items})
    Path(target).write_text("".join(f"{name}\n" for name in files))
