"""The kernel lab lane: run every `kernel`-marked test where a full kernel is available.

    .venv/bin/python -m tests.kernel_lab.run [runner options] [--] [pytest args]

Where the tests run is decided once, in this order:

1. ``--where host``, or (``auto``) the host kernel passes tests/kernel_lab/probe.py: pytest runs
   here directly (a real node has bonding, netem, fq...).
2. Otherwise one VM boots the newest /boot/vmlinuz-*-amd64 with virtme-ng, sharing this root
   filesystem read-only and the output directory read-write; tests/kernel_lab/guest.py loads
   the modules and runs the tests in one pytest session.
3. If neither is possible (no kernel image, no qemu, no vng, not root), every `kernel` test is
   reported as skipped with the reason; with CI=true that is a failure instead, because CI's
   lane must really run.

A hard timeout (``--timeout``, default 1200 s) kills the whole process group: a crashed or hung
guest becomes a failed run with the guest's console, never a hang. Results land in the output
directory (default .lab-cache/kernel-lab): junit.xml, console.log (the guest's serial console:
kernel messages), output.log (what the guest printed), status.json, stacks.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.kernel_lab.probe import RUNNER_COMMAND, missing_kernel_features

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DEFAULT_OUT = REPO / ".lab-cache" / "kernel-lab"
KVM_CACHE = REPO / ".lab-cache" / "kvm-probe.json"

# Loaded in the guest before the tests. max_bonds=0 / numdummies=0: no stray bond0/dummy0 in
# the guest's initial namespace (the modules create one each by default).
MODULES = [
    "bonding max_bonds=0",
    "dummy numdummies=0",
    "team",
    "team_mode_activebackup",
    "veth",
    "sch_netem",
    "sch_fq",
    "sch_fq_codel",
    "sch_mqprio",
    "sch_cake",
    "sch_htb",  # tc QoS (tests/kernel/test_qdisc_lab.py): htb, tbf, ingress policing with u32
    "sch_tbf",
    "sch_ingress",
    "cls_u32",
    "act_police",
    "tcp_bbr",
]
ARTIFACTS = (
    "junit.xml",
    "console.log",
    "output.log",
    "status.json",
    "stacks.txt",
    "plan.json",
    "current-test.txt",
    "collected.txt",
)
GUEST_UP = "kernel-lab guest: up"


def say(message: str) -> None:
    print(f"kernel-lab: {message}", flush=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


# -- where to run -------------------------------------------------------------------------


def newest_kernel() -> Path | None:
    """The newest Debian stock kernel in /boot (by version, not by file time)."""

    def version_key(path: Path) -> list[tuple[int, str]]:
        parts = re.split(r"(\d+)", path.name)
        return [(int(p), "") if p.isdigit() else (-1, p) for p in parts]

    images = sorted(Path("/boot").glob("vmlinuz-*-amd64"), key=version_key)
    return images[-1] if images else None


def vm_missing(kernel: Path | None) -> list[str]:
    """What the VM lane lacks on this machine, each with where it comes from."""
    missing = []
    if kernel is None or not kernel.exists():
        missing.append("a kernel image /boot/vmlinuz-*-amd64 (apt linux-image-amd64)")
    elif not os.access(kernel, os.R_OK):
        missing.append(f"read access to {kernel}")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt qemu-system-x86)")
    if not (VENV_BIN / "vng").exists():
        missing.append("virtme-ng's vng in .venv (pip extra 'test')")
    if shutil.which("modprobe") is None:
        missing.append("modprobe (apt kmod)")
    if not any(shutil.which(b) for b in ("busybox-static", "busybox.static", "busybox")):
        # Debian's 9p and virtio are modules: vng builds an initramfs, which needs busybox.
        missing.append("a static busybox (apt busybox-static)")
    return missing


def kvm_works(kernel: Path, out: Path, timeout: float = 10.0) -> bool:
    """Does a KVM guest really boot here? /dev/kvm can exist while KVM guests hang.

    Boots the kernel bare (no root filesystem): it panics on mount within a second or two
    under KVM, and qemu exits (-no-reboot, panic=-1). Silence until the timeout means KVM
    hangs. The answer is cached per host boot and kernel image.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    key = {"boot_id": boot_id, "kernel": str(kernel), "mtime": kernel.stat().st_mtime}
    try:
        cached = json.loads(KVM_CACHE.read_text())
        if cached.get("key") == key:
            return bool(cached["ok"])
    except (OSError, ValueError, KeyError):
        pass
    serial = out / "kvm-probe.log"
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{serial}",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        proc.wait(timeout=timeout)
        ok = "Kernel panic" in serial.read_text(errors="replace")
    except subprocess.TimeoutExpired:
        kill_group(proc)
        ok = False
    KVM_CACHE.parent.mkdir(parents=True, exist_ok=True)
    KVM_CACHE.write_text(json.dumps({"key": key, "ok": ok}))
    return ok


# -- running ------------------------------------------------------------------------------


def kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left: qemu must not outlive us.

    Waits for the whole group, not just the leader: vng can be gone while its qemu still runs.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive(proc.pid):
                return
            time.sleep(0.1)
    proc.wait()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Run:
    rc: int
    timed_out: bool
    seconds: float
    up_after: float | None  # seconds from launch until the guest's first line (VM only)


def run_bounded(
    argv: list[str], env: dict[str, str], timeout: float, out: Path, stderr: IO[bytes] | None
) -> Run:
    """Run argv in its own process group, tee stdout to ours and output.log, kill at timeout."""
    started = time.monotonic()
    up_after: list[float] = []
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.STDOUT,
        start_new_session=True,
    )

    def pump(stream: IO[bytes], log: IO[bytes]) -> None:
        for line in iter(stream.readline, b""):
            if not up_after and line.startswith(GUEST_UP.encode()):
                up_after.append(time.monotonic() - started)
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()

    with (out / "output.log").open("wb") as log:
        assert proc.stdout is not None
        reader = threading.Thread(target=pump, args=(proc.stdout, log), daemon=True)
        reader.start()
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            say(f"TIMEOUT: still running after {timeout:.0f}s; killing the process group")
            kill_group(proc)
            rc = proc.returncode if proc.returncode is not None else -9
        reader.join(timeout=10)
    return Run(rc, timed_out, time.monotonic() - started, up_after[0] if up_after else None)


def pytest_argv(out: Path | None, pytest_args: list[str]) -> list[str]:
    """pytest selecting the `kernel` tests; the JUnit report goes to OUT (if given)."""
    argv = [str(VENV_BIN / "python"), "-m", "pytest", "-m", "kernel", "-p", "no:cacheprovider"]
    if out is not None:
        argv.append(f"--junitxml={out / 'junit.xml'}")
    return [*argv, *pytest_args]


def run_on_host(
    args: argparse.Namespace, out: Path, pytest_args: list[str], env_extra: dict[str, str]
) -> Run:
    env = {**os.environ, **env_extra}
    return run_bounded(pytest_argv(out, pytest_args), env, args.timeout, out, None)


def kernel_test_files(pytest_args: list[str], out: Path) -> list[str]:
    """The files holding the selected `kernel` tests, found by collecting on the host.

    Collection inside the VM imports every test module of the suite under emulation (20 s and
    growing); handing the guest just these files skips that. Empty when the caller named paths
    itself or host collection fails: the guest then collects as usual and reports any error.
    """
    if any(not a.startswith("-") and ("::" in a or Path(a).exists()) for a in pytest_args):
        return []
    listing = out / "collected.txt"
    listing.unlink(missing_ok=True)
    argv = [
        *pytest_argv(None, pytest_args),
        "--collect-only",
        "-p",
        "tests.kernel_lab.collect_plugin",
    ]
    env = {
        **os.environ,
        "NODENETD_KERNEL_LAB": "vm",
        "NODENETD_KERNEL_LAB_COLLECT": str(listing),
    }
    proc = subprocess.run(
        argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0 or not listing.exists():
        return []
    return listing.read_text().split()


def run_in_vm(
    args: argparse.Namespace, out: Path, kernel: Path, accel: str, pytest_args: list[str]
) -> Run:
    files = kernel_test_files(pytest_args, out)
    if files:
        say(f"kernel tests are in {len(files)} files: {' '.join(files)}")
        pytest_args = [*pytest_args, *files]
    budget = max(args.timeout - 60, args.timeout / 2)
    plan = {"pytest_args": pytest_args, "modules": MODULES, "budget": budget, "grace": 15}
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    argv = vng_argv(args, out, kernel, accel)
    argv += ["--exec", f"{VENV_BIN / 'python'} -m tests.kernel_lab.guest {out}"]
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    with (out / "console.log").open("wb") as console:
        return run_bounded(argv, env, args.timeout, out, console)


def vng_argv(
    args: argparse.Namespace, out: Path, kernel: Path, accel: str, verbose: bool = True
) -> list[str]:
    argv = [
        str(VENV_BIN / "vng"),
        "--run",
        str(kernel),
        "--force-9p",  # Debian 12 has no virtiofsd; skips vng's wait for one
        "--memory",
        args.memory,
        "--cpus",
        str(args.cpus),
        "--rwdir",
        str(out),
        "--cwd",
        str(REPO),
    ]
    if verbose:
        argv.append("--verbose")  # kernel messages on the serial console -> console.log
    if accel == "tcg":
        argv.append("--disable-kvm")
    for opt in args.qemu_opts:
        argv.append(f"--qemu-opts={opt}")
    return argv


def guest_argv(
    out: Path, command: str, kernel: Path, accel: str, memory: str = "1G", cpus: int = 2
) -> tuple[list[str], dict[str, str]]:
    """argv and environment that boot this lane's VM with ``command`` as its only program.

    The same VM the tests get (vng_argv): the host root read-only, ``out`` shared
    read-write, the checkout as working directory. For other users of the lane, such as
    bench/failover; run it in its own process group and kill_group it when done.
    """
    args = argparse.Namespace(memory=memory, cpus=cpus, qemu_opts=[])
    argv = [*vng_argv(args, out, kernel, accel), "--exec", command]
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return argv, env


# -- reporting ----------------------------------------------------------------------------


@dataclass
class Counts:
    tests: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    interrupted: int = 0  # started but never reported: killed or interrupted mid-test

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped


def junit_counts(path: Path) -> Counts | None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    counts = Counts()
    for suite in root.iter("testsuite"):
        counts.tests += int(suite.get("tests", 0))
        counts.failed += int(suite.get("failures", 0))
        counts.errors += int(suite.get("errors", 0))
        counts.skipped += int(suite.get("skipped", 0))
    return counts


def show_tail(path: Path, title: str, lines: int) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    text = path.read_text(errors="replace").splitlines()
    print(f"\n----- {title}: last {min(lines, len(text))} of {len(text)} lines ({path}) -----")
    print("\n".join(text[-lines:]), flush=True)
    print(f"----- end of {title} -----", flush=True)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m tests.kernel_lab.run",
        description="Run the `kernel`-marked tests on this kernel if it can, else in a VM.",
        epilog="Arguments the runner does not know (or after --) go to pytest.",
        allow_abbrev=False,
    )
    env = os.environ.get
    add = parser.add_argument
    add(
        "--where",
        choices=("auto", "host", "vm"),
        default=env("NODENETD_KERNEL_LAB_WHERE", "auto"),
        help="auto: the host if its kernel has the features, else a VM (default)",
    )
    add(
        "--timeout",
        type=float,
        default=float(env("NODENETD_KERNEL_LAB_TIMEOUT", "1200")),
        help="hard limit in seconds for the whole run, boot included (default 1200)",
    )
    add(
        "--kernel",
        type=Path,
        default=None,
        help="kernel image to boot (default: newest /boot/vmlinuz-*-amd64)",
    )
    add(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default=env("NODENETD_KERNEL_LAB_ACCEL", "auto"),
        help="auto: KVM if a probe guest boots with it within 10 s, else TCG",
    )
    add("--memory", default="1G", help="guest memory (default 1G)")
    add("--cpus", type=int, default=2, help="guest CPUs (default 2)")
    add(
        "--qemu-opts",
        action="append",
        default=[],
        metavar="OPT",
        help="extra qemu options, passed to vng as --qemu-opts=OPT",
    )
    add(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT,
        help="where results go (default .lab-cache/kernel-lab)",
    )
    add("--junitxml", type=Path, default=None, help="also copy the JUnit report here")
    add(
        "--console-lines",
        type=int,
        default=150,
        help="lines of the guest console shown on failure (default 150)",
    )
    add(
        "--shell",
        action="store_true",
        help="boot the same VM with an interactive shell instead (debugging)",
    )
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "--":
        rest = rest[1:]
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, pytest_args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ARTIFACTS:
        (out / name).unlink(missing_ok=True)

    kernel = (args.kernel or newest_kernel() or Path("/boot/vmlinuz-missing")).resolve()
    where = args.where
    missing: list[str] = []
    if os.geteuid() != 0:
        missing = ["root (network namespaces, modules)"]
        where = "none"
    elif where == "auto":
        lacks = missing_kernel_features()
        where = "host" if not lacks else "vm"
        if lacks:
            say(f"host kernel {os.uname().release} lacks {', '.join(lacks)}: using a VM")
    if where == "vm":
        missing = vm_missing(kernel)
        if missing:
            where = "none"

    if args.shell:
        if where != "vm":
            say(f"--shell needs the VM lane; here: {', '.join(missing) or where}")
            return 2
        accel = args.accel if args.accel != "auto" else ("kvm" if kvm_works(kernel, out) else "tcg")
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
        say("shell: modules are not loaded and / is read-only; see tests/kernel_lab/README.md")
        os.execvpe(str(VENV_BIN / "vng"), vng_argv(args, out, kernel, accel, verbose=False), env)

    accel = "-"
    if where == "host":
        say(f"running on the host kernel {os.uname().release} (it has every feature)")
        run = run_on_host(args, out, pytest_args, {"NODENETD_KERNEL_LAB": "host"})
    elif where == "vm":
        accel = args.accel
        if accel == "auto":
            probe_started = time.monotonic()
            accel = "kvm" if kvm_works(kernel, out) else "tcg"
            say(f"accelerator: {accel} (probe {time.monotonic() - probe_started:.1f}s)")
        vm = f"{kernel.name} ({accel}, {args.cpus} cpus, {args.memory})"
        say(f"booting {vm}, timeout {args.timeout:.0f}s")
        run = run_in_vm(args, out, kernel, accel, pytest_args)
    else:
        reason = (
            f"kernel lab cannot run here: missing {'; '.join(missing)} "
            "(install: bash scripts/setup.sh)"
        )
        if in_ci():
            say(f"FAILED: {reason}. CI=true: the kernel lane must run, not skip.")
            return 3
        say(reason)
        skip_reason = f"{reason}; then: {RUNNER_COMMAND}"
        run = run_on_host(args, out, pytest_args, {"NODENETD_KERNEL_SKIP": skip_reason})
    return report(args, out, where, accel, kernel, run, started)


def report(
    args: argparse.Namespace,
    out: Path,
    where: str,
    accel: str,
    kernel: Path,
    run: Run,
    started: float,
) -> int:
    counts = junit_counts(out / "junit.xml")
    status: dict[str, object] = {}
    if (out / "status.json").exists():
        status = json.loads((out / "status.json").read_text())
    problems = []
    if run.timed_out:
        problems.append(f"timed out after {args.timeout:.0f}s")
    if where == "vm":
        if not status:
            problems.append(f"the guest never finished its pytest run (vng exited {run.rc})")
        elif status.get("timed_out"):
            problems.append("pytest outlived its budget inside the guest and was interrupted")
        failed_modules = status.get("modules_failed") or {}
        if isinstance(failed_modules, dict) and failed_modules:
            # A warning, not a failure: the tests that need a module fail on their own.
            say(f"WARNING: modules failed to load in the guest: {', '.join(failed_modules)}")
    if counts is None:
        problems.append("no JUnit report")
    current = out / "current-test.txt"
    in_flight = current.read_text().strip() if current.exists() else ""
    if in_flight and problems:
        # Interrupted or killed mid-test: JUnit never saw it finish, so count it here.
        problems.insert(0, f"{in_flight} never finished")
        if counts is not None:
            counts.interrupted += 1
    if run.rc != 0 and not problems:
        problems.append(f"pytest exited {run.rc}")

    if problems and where == "vm":
        show_tail(out / "stacks.txt", "stacks of the hung pytest", 200)
        show_tail(out / "console.log", "guest console", args.console_lines)
    if args.junitxml and (out / "junit.xml").exists():
        args.junitxml.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "junit.xml", args.junitxml)

    wall = time.monotonic() - started
    places = {"host": f"host kernel {os.uname().release}", "vm": f"VM {kernel.name} ({accel})"}
    timing = f"wall {wall:.1f}s"
    if run.up_after is not None:
        timing += f", guest up after {run.up_after:.1f}s"
    say(f"{places.get(where, 'nowhere (skipped)')}; {timing}; artifacts in {out}")
    if counts is not None and counts.errors:
        say(f"{counts.errors} of the failures are errors (setup/teardown or collection)")
    if problems:
        say("FAILED: " + "; ".join(problems))
    if counts is not None:
        # The closing line CI reads: 'N passed, N failed, N skipped'.
        failed = counts.failed + counts.errors + counts.interrupted
        print(f"kernel-lab: {counts.passed} passed, {failed} failed, {counts.skipped} skipped")
    sys.stdout.flush()
    if run.timed_out:
        return 124
    if problems:
        return run.rc or 1
    return run.rc


if __name__ == "__main__":
    sys.exit(main())
