"""The kernel lab's inside half: runs as the VM's only program (virtme-ng ``--exec``).

It loads the modules the `kernel` tests need, runs them in one pytest session with the JUnit
report in the shared directory, and stops pytest itself if the run outlives its budget (dumping
every thread's stack first), so that a hung test still produces a report and a reason. The
runner on the host keeps a harder timeout around the whole VM for what this cannot catch (a
kernel hang or crash).

    python -m tests.kernel_lab.guest OUT_DIR    # OUT_DIR holds plan.json, written by run.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def log(message: str) -> None:
    print(f"kernel-lab guest: {message}", flush=True)


def load_modules(specs: list[str]) -> dict[str, str]:
    """modprobe each ``"name [param=value...]"``; returns {name: error} for those that failed.

    A failure is reported, not fatal: the tests that need the module fail on their own with a
    precise message, and the others still run.
    """
    failed: dict[str, str] = {}
    for spec in specs:
        argv = ["modprobe", *spec.split()]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            failed[argv[1]] = (proc.stderr or proc.stdout).strip()
    return failed


def run_pytest(
    argv: list[str], env: dict[str, str], budget: float, grace: float
) -> tuple[int, bool]:
    """Run pytest; past ``budget`` seconds dump stacks, interrupt, then kill. (rc, timed_out)."""
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.STDOUT)
    try:
        return proc.wait(timeout=budget), False
    except subprocess.TimeoutExpired:
        pass
    log(f"pytest still running after its budget of {budget:.0f}s: dumping stacks, interrupting")
    proc.send_signal(signal.SIGUSR1)  # tests/conftest.py: faulthandler -> stacks.txt
    time.sleep(1)
    proc.send_signal(signal.SIGINT)  # pytest stops, reports the interrupted test, writes JUnit
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"pytest ignored the interrupt for {grace:.0f}s: killing it")
        proc.kill()
        proc.wait()
    return 124, True


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    plan = json.loads((out / "plan.json").read_text())
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    log(f"up: kernel {os.uname().release}, {os.cpu_count()} cpus, guest uptime {uptime:.1f}s")

    failed = load_modules(plan["modules"])
    loaded = [spec.split()[0] for spec in plan["modules"] if spec.split()[0] not in failed]
    log(f"modules loaded: {' '.join(loaded) or '-'}")
    for name, error in failed.items():
        log(f"module {name} FAILED to load: {error}")

    env = {
        **os.environ,
        "NODENETD_KERNEL_LAB": "vm",
        "NODENETD_KERNEL_LAB_OUT": str(out),
        # The shared root is read-only in the guest: no bytecode or cache writes to try.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}",
    }
    pytest_argv = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "kernel",
        "-p",
        "no:cacheprovider",
        f"--junitxml={out / 'junit.xml'}",
        *plan["pytest_args"],
    ]
    started = time.monotonic()
    rc, timed_out = run_pytest(pytest_argv, env, plan["budget"], plan["grace"])
    status = {
        "kernel": os.uname().release,
        "uptime_at_start": uptime,
        "modules_failed": failed,
        "pytest_rc": rc,
        "pytest_seconds": round(time.monotonic() - started, 1),
        "timed_out": timed_out,
    }
    (out / "status.json").write_text(json.dumps(status, indent=2))
    log(f"pytest exited {rc} after {status['pytest_seconds']}s")
    return rc


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main(sys.argv))
