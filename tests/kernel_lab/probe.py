"""Does the running kernel have what the `kernel`-marked tests need?

Shared by tests/conftest.py (gating) and the lane runner (host or VM): both must reach the same
answer, so the question is asked in one place. The probe builds the features for real in a
throwaway namespace (creating a link or a qdisc also autoloads its module on a node that has
it), because a module list or /proc/config.gz can say yes while the namespace says no.
"""

from __future__ import annotations

import os
import subprocess
import uuid

# The features the lane's tests use, each with the commands that prove it inside a namespace
# holding one veth pair (v0/v1). Order matters only for readability of the report.
FEATURES: dict[str, list[list[str]]] = {
    "bonding": [["ip", "link", "add", "pb0", "type", "bond", "mode", "active-backup"]],
    "dummy": [["ip", "link", "add", "pd0", "type", "dummy"]],
    "netem": [["tc", "qdisc", "replace", "dev", "v0", "root", "netem", "delay", "1ms"]],
    "fq": [["tc", "qdisc", "replace", "dev", "v0", "root", "fq"]],
    "fq_codel": [["tc", "qdisc", "replace", "dev", "v0", "root", "fq_codel"]],
}

# The command a developer runs to get the VM lane; named in every skip reason.
RUNNER_COMMAND = ".venv/bin/python -m tests.kernel_lab.run"


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def missing_kernel_features() -> list[str]:
    """Names of FEATURES this kernel lacks (empty: the tests can run right here).

    Needs root; raises PermissionError otherwise, so callers never mistake "cannot ask" for
    "has nothing".
    """
    if os.geteuid() != 0:
        raise PermissionError("probing kernel features needs root (network namespaces)")
    ns = f"nndprobe-{uuid.uuid4().hex[:8]}"
    created = _run(["ip", "netns", "add", ns])
    if created.returncode != 0:
        return [f"network namespaces ({created.stderr.strip()})"]
    try:
        prefix = ["ip", "netns", "exec", ns]
        veth = _run([*prefix, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        if veth.returncode != 0:
            return [f"veth ({veth.stderr.strip()})"]
        missing = []
        for feature, commands in FEATURES.items():
            if any(_run([*prefix, *argv]).returncode != 0 for argv in commands):
                missing.append(feature)
        return missing
    finally:
        _run(["ip", "netns", "del", ns])
