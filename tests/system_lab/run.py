"""The system lab lane: build the Debian package, install it with apt on Debian 12 with
systemd as PID 1, and check it there; run the Ansible role against the same image.

    .venv/bin/python -m tests.system_lab.run [--junitxml PATH] [--timeout S] ...

On the host: dpkg-buildpackage builds the .deb from a copy of the tree, lintian must report
no errors, ansible-lint (production profile) must be clean. Meanwhile the image
(tests/system_lab/image.py, cached by recipe) is built if needed and booted under qemu TCG
(tests/system_lab/vm.py). The VM gets the .deb over SSH and runs tests/system_lab/
guest_checks.py: install, the service under the shipped unit, profiles applied, journal
fields, /metrics, reload, watchdog, stop (restore and keep), remove, purge. In parallel a
systemd-nspawn container booted from the same image (tests/system_lab/container.py) runs the
Ansible playbook against localhost with a local connection, then an upgrade and a removal
that keeps the tuning (tests/system_lab/container_checks.py): under TCG every start of the
interpreter costs ~40 s on this machine, which would put the Ansible runs alone past the
lane's budget.

One result per check: printed as it comes, in JUnit XML (--junitxml) and as the closing line
"system-lab: N passed, N failed, N skipped". On a failure the guest's journal is saved in
the output directory and its end printed. Where the lab cannot run (not root, tools
missing), every check is reported as skipped with the reason, except with CI=true, where
that fails the lane (exit 3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from tests.system_lab import container_checks, guest_checks, image
from tests.system_lab.container import Container
from tests.system_lab.results import Failed, Result, Results
from tests.system_lab.vm import INPUTS, VM

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".lab-cache" / "system-lab"
WHEELHOUSE = REPO / ".lab-cache" / "wheelhouse"  # PyPI downloads for debian/rules, kept
DEFAULT_OUT = CACHE / "run"
UPGRADE_SUFFIX = "+lab1"
TOOLS = {
    "dpkg-buildpackage": "dpkg-dev", "dh": "debhelper", "lintian": "lintian",
    "ansible-lint": "ansible-lint", "mmdebstrap": "mmdebstrap",
    "qemu-system-x86_64": "qemu-system-x86", "systemd-nspawn": "systemd-container",
    "mkfs.ext4": "e2fsprogs", "ssh": "openssh-client", "dpkg-scanpackages": "dpkg-dev",
}
HOST_CHECKS = ("build-deb", "lintian", "ansible-lint", "image", "boot", "container-boot")
EXCLUDE = {".git", ".venv", ".lab-cache", ".pytest_cache", ".ruff_cache", "__pycache__",
           "nodenetd.egg-info", "build"}
_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        for line in message.splitlines() or [""]:
            print(f"system-lab: {line}", flush=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def run_logged(argv: list[str], log: Path, *, cwd: Path | None = None, timeout: float = 1200,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run argv with its output in ``log``, each line stamped with the seconds since start."""
    lines: list[str] = []
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **(env or {})},
                                stdin=subprocess.DEVNULL, start_new_session=True)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                out.write(f"[{time.monotonic() - started:7.1f}] {line}")
            rc = proc.wait()
        finally:
            timer.cancel()
    return subprocess.CompletedProcess(argv, rc, "".join(lines))


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


# -- host side ------------------------------------------------------------------------------


def build_deb(out: Path) -> Path:
    """dpkg-buildpackage -us -uc -b on a copy of the tree (debian/rules writes build trees
    and ../*.deb; the checkout stays untouched); returns the .deb."""
    build = out / "build"
    image.safe_rmtree(build)
    src = build / "nodenetd"
    shutil.copytree(REPO, src, symlinks=True,
                    ignore=lambda _, names: [n for n in names if n in EXCLUDE])
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    proc = run_logged(["dpkg-buildpackage", "-us", "-uc", "-b"], out / "build-deb.log", cwd=src,
                      env={"NODENETD_WHEELHOUSE": str(WHEELHOUSE), "DEB_BUILD_OPTIONS": ""})
    debs = sorted(build.glob("nodenetd_*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise Failed(f"dpkg-buildpackage exited {proc.returncode} ({out / 'build-deb.log'}):\n"
                     + tail(proc.stdout))
    return debs[0]


def lintian(deb: Path, out: Path) -> str:
    changes = sorted(deb.parent.glob("nodenetd_*.changes"))
    proc = run_logged(["lintian", "--fail-on", "error", "--display-info", *map(str, changes)],
                      out / "lintian.log")
    tags = re.findall(r"^([EWIPX]): ", proc.stdout, re.M)
    summary = (f"{tags.count('E')} errors, {tags.count('W')} warnings, {tags.count('I')} info "
               f"(lintian.log)")
    if proc.returncode != 0 or tags.count("E"):
        raise Failed(f"{summary}:\n" + "\n".join(
            line for line in proc.stdout.splitlines() if line.startswith("E: ")))
    return summary


def ansible_lint(out: Path) -> str:
    proc = run_logged(["ansible-lint", "--profile", "production", "--offline", "--nocolor"],
                      out / "ansible-lint.log", cwd=REPO / "ansible", timeout=600)
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1:] or ["?"]
    if proc.returncode != 0:
        raise Failed(f"ansible-lint exited {proc.returncode}:\n{tail(proc.stdout, 40)}")
    return last[0].strip()


def deb_depends(deb: Path) -> list[str]:
    field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], capture_output=True,
                           text=True, check=True).stdout
    return [re.split(r"[\s(:]", item.split("|")[0].strip())[0]
            for item in field.split(",") if item.strip()]


def upgrade_deb(deb: Path, out: Path) -> tuple[Path, str]:
    """The same package with a higher version: what an upgrade looks like to dpkg and
    systemd, without a second build."""
    work = out / "upgrade"
    image.safe_rmtree(work)
    subprocess.run(["dpkg-deb", "-R", str(deb), str(work)], check=True)
    control = work / "DEBIAN" / "control"
    text = control.read_text()
    version = re.search(r"^Version: (\S+)", text, re.M).group(1) + UPGRADE_SUFFIX  # type: ignore[union-attr]
    control.write_text(re.sub(r"^Version: \S+", f"Version: {version}", text, flags=re.M))
    target = out / f"nodenetd_{version}_{deb.name.rsplit('_', 1)[1]}"
    subprocess.run(["dpkg-deb", "-Zgzip", "--root-owner-group", "--build", str(work),
                    str(target)], check=True, capture_output=True)
    image.safe_rmtree(work)
    return target, version


def apt_repository(debs: list[Path], repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, repo / deb.name)
    packages = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo,
                              capture_output=True, text=True, check=True).stdout
    (repo / "Packages").write_text(packages)


# -- the VM -----------------------------------------------------------------------------------


def vm_checks(vm: VM, deb: Path, out: Path, results: Results, timeout: float) -> None:
    plan = {"deb": deb.name}
    (out / "vm-inputs").mkdir(exist_ok=True)
    plan_file = out / "vm-inputs" / "plan.json"
    plan_file.write_text(json.dumps(plan))
    vm.push([deb, REPO / "tests/system_lab/guest_checks.py", REPO / "systemd/nodenetd.service",
             plan_file])
    log = (out / "vm-checks.log").open("w")

    def on_line(line: str) -> None:
        log.write(line + "\n")
        log.flush()
        if line.startswith("@@result "):
            data = json.loads(line.removeprefix("@@result "))
            results.add(Result("vm", data["name"], data["status"], data["seconds"],
                               data["message"], data.get("doc", "")))
        elif "] === " in line:
            say(f"vm: {line.split('] === ', 1)[1]}")

    rc = vm.ssh_stream(f"python3 {INPUTS}/guest_checks.py {INPUTS}", timeout=timeout,
                       on_line=on_line)
    reported = {r.name for r in results.items if r.where == "vm"}
    for check in guest_checks.CHECKS:
        if check.name not in reported:
            why = "the VM run timed out" if rc == 124 else f"the guest run ended (exit {rc})"
            results.add(Result("vm", check.name, "failed", 0.0, f"never reported: {why}"))


def save_journal(run, where: str, out: Path, lines: int = 60) -> None:
    """The guest's journal into OUT/<where>-journal.log, its end (and nodenetd's) printed."""
    proc = run("journalctl -b --no-pager -o short-precise", timeout=300)
    path = out / f"{where}-journal.log"
    path.write_text(proc.stdout + proc.stderr)
    unit = run("journalctl -b --no-pager -o short-precise -u nodenetd.service -t nodenetd "
               "| tail -n 40", timeout=120).stdout
    say(f"----- {where} journal, nodenetd's last lines (all of it: {path}) -----\n{unit}")
    say(f"----- {where} journal, last {lines} lines -----\n{tail(proc.stdout, lines)}")


# -- the lane ------------------------------------------------------------------------------


def missing_tools() -> list[str]:
    missing = [f"{tool} ({package})" for tool, package in TOOLS.items()
               if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root")
    return missing


def all_check_names() -> list[tuple[str, str]]:
    return ([("host", n) for n in HOST_CHECKS] + [("vm", c.name) for c in guest_checks.CHECKS]
            + [("container", n) for n, _, _ in container_checks.CHECKS])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.system_lab.run",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                        help="artifacts: logs, journals, the .deb (default .lab-cache/"
                             "system-lab/run)")
    parser.add_argument("--junitxml", type=Path, help="also write the results here")
    parser.add_argument("--timeout", type=float,
                        default=float(os.environ.get("NODENETD_SYSTEM_LAB_TIMEOUT", "1800")),
                        help="hard limit for the VM's and the container's checks, boot "
                             "included (default 1800 s)")
    parser.add_argument("--deb", type=Path, help="use this .deb instead of building one "
                                                 "(skips build-deb and lintian)")
    parser.add_argument("--skip", action="append", default=[],
                        choices=("vm", "container", "lint"), help="leave a part out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    out = args.out_dir.resolve()
    image.safe_rmtree(out)
    out.mkdir(parents=True)
    results = Results(say)

    if missing := missing_tools():
        reason = f"system lab cannot run here: missing {', '.join(missing)} " \
                 "(install: bash scripts/setup.sh)"
        if in_ci():
            say(f"FAILED: {reason}. CI=true: the system lab must run, not skip.")
            return 3
        for where, name in all_check_names():
            results.add(Result(where, name, "skipped", 0.0, reason))
        return finish(args, results, out, started)

    # The image and the VM's boot (minutes of TCG) overlap the package build and the lints.
    vm = VM(image.Image(CACHE / "none"), out)  # replaced once the image is known
    booted = threading.Event()
    lab_image: list[image.Image] = []

    def prepare_vm() -> None:
        def get_image() -> str:
            got, took = image.ensure_image(CACHE, say)
            lab_image.append(got)
            return (f"built in {took:.0f}s" if took is not None else "cached") + \
                f" ({got.dir.name})"
        if not results.run("host", "image", get_image):
            return
        vm.image = lab_image[0]
        if "vm" in args.skip:
            return

        def boot() -> str:
            vm.start()
            up = vm.wait_ssh(600)
            booted.set()
            return f"SSH answered {up:.0f}s after qemu started (TCG, {vm.cpus} vCPUs)"
        results.run("host", "boot", boot)

    preparer = threading.Thread(target=prepare_vm, daemon=True)
    preparer.start()
    deb: list[Path] = []
    container: Container | None = None
    try:
        if args.deb:
            deb.append(args.deb.resolve())
        else:
            def build() -> str:
                deb.append(build_deb(out))
                return f"{deb[0].name}, {deb[0].stat().st_size // 1024} KiB"
            results.run("host", "build-deb", build)

        def lints() -> None:  # alongside the guests: neither needs the other
            if deb and not args.deb:
                results.run("host", "lintian", lambda: lintian(deb[0], out))
            if "lint" not in args.skip:
                results.run("host", "ansible-lint", lambda: ansible_lint(out))
        linter = threading.Thread(target=lints, daemon=True)
        linter.start()
        preparer.join()
        if not deb or not lab_image:
            linter.join()
            return finish(args, results, out, started)

        missing_deps = sorted(set(deb_depends(deb[0])) - set(lab_image[0].packages()))
        if missing_deps:
            results.add(Result("host", "image-has-dependencies", "failed", 0.0,
                               f"the image lacks {missing_deps}: add them to "
                               "tests/system_lab/image.py PACKAGES"))
            linter.join()
            return finish(args, results, out, started)

        phases = []
        if "vm" not in args.skip and booted.is_set():
            budget = max(60.0, args.timeout - (time.monotonic() - started))
            phases.append(threading.Thread(target=vm_checks, daemon=True,
                                           args=(vm, deb[0], out, results, budget)))
        if "container" not in args.skip:
            inputs = out / "container-inputs"
            upgrade, version = upgrade_deb(deb[0], out)
            apt_repository([deb[0]], inputs / "repo")
            shutil.copy2(upgrade, inputs / upgrade.name)
            container_checks.write_inputs(inputs)
            plan = {"upgrade_deb": upgrade.name, "upgrade_version": version}
            ct = container = Container(lab_image[0], out, {
                inputs: container_checks.LAB, REPO / "ansible": container_checks.PLAYBOOKS})

            def in_container() -> None:
                if results.run("host", "container-boot",
                               lambda: f"systemd running after {ct.start():.1f}s"):
                    container_checks.run(ct, inputs, out, plan, results, say)
            phases.append(threading.Thread(target=in_container, daemon=True))
        for phase in phases:
            phase.start()
        deadline = started + args.timeout
        for phase in phases:
            phase.join(timeout=max(1.0, deadline - time.monotonic()))
        if any(phase.is_alive() for phase in phases):
            say(f"TIMEOUT: still running after {args.timeout:.0f}s; stopping the guests")
        linter.join(timeout=max(1.0, deadline - time.monotonic()))
        if results.failed("vm") and vm.running():
            save_journal(lambda cmd, timeout: vm.ssh(cmd, timeout=timeout), "vm", out)
        if container is not None and results.failed("container") and container.leader:
            save_journal(lambda cmd, timeout: container.run(cmd, timeout=timeout),
                         "container", out)
    finally:
        vm.stop()
        if container is not None:
            container.stop()
    return finish(args, results, out, started)


def finish(args: argparse.Namespace, results: Results, out: Path, started: float) -> int:
    wall = time.monotonic() - started
    results.write_junit(out / "junit.xml", wall)
    if args.junitxml:
        args.junitxml.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "junit.xml", args.junitxml)
    with tarfile.open(out / "artifacts.tar.gz", "w:gz") as tar:
        for path in sorted(out.glob("*.log")):
            tar.add(path, arcname=path.name)
    passed, failed, skipped = results.counts()
    for result in results.failed():
        say(f"FAILED {result.where}/{result.name}: {result.message.splitlines()[0][:300]}")
    say(f"wall {wall:.0f}s; artifacts in {out}")
    print(f"system-lab: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
