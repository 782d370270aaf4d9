"""The system lab's checks of the Debian package, run inside the VM (systemd is PID 1).

    python3 /mnt/lab/guest_checks.py /mnt/lab [--only NAME,...]

Standard library only: this runs with the guest's /usr/bin/python3 before and after the
package is installed. The checks run in order, each building on the state the previous left
(install, apply, reload, watchdog, stop, upgrade, remove, purge). Each prints one line
``@@result {json}`` with its name, "passed"/"failed"/"skipped", seconds and a message; a
check whose prerequisite failed fails as "not run". Everything else on stdout is the log.
The host runner (tests/system_lab/run.py) turns the results into JUnit XML and fetches the
journal when something failed.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = Path("/etc/nodenetd/nodenetd.yaml")
PROFILES_D = Path("/etc/nodenetd/profiles.d")
DEFAULTS = Path("/etc/default/nodenetd")
UNIT = "nodenetd.service"
VETHS = (("lab0", "lab1"), ("lab2", "lab3"))  # the second pair appears after the start
LAB_IFACES = ("lab0", "lab1")
# The sysctls the lab config manages, and the ones it must leave alone.
SYSCTLS = ("net.core.somaxconn", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.ip_forward",
           "net.ipv4.neigh.default.gc_thresh3", "net.ipv4.conf.lab0.arp_ignore",
           "net.ipv4.conf.lab1.arp_ignore")
METRICS_URL = "http://127.0.0.1:10037/metrics"  # nodenetd.config.metrics.DEFAULT_LISTEN

LAB_PROFILE = """\
# The system lab's profile: global sysctls and interface settings on the lab veths.
description: system lab
sysctls:
  net.core.somaxconn: ">={somaxconn}"
  net.ipv4.tcp_slow_start_after_idle: 0
interfaces:
  - name: lab-veths
    match: {{name: ["lab*"], kind: [veth]}}
    mtu: {mtu}
    txqueuelen: {txqueuelen}
    features: {{tso: false}}
    sysctls:
      net.ipv4.conf.IF.arp_ignore: 1
"""
NODE_CONFIG = """\
# The system lab's node config: the built-in kubernetes-node profile, then the lab's own.
profiles: [kubernetes-node, lab]
profile_dirs: [/etc/nodenetd/profiles.d]
daemon:
  on_stop: {on_stop}
"""
# Tuned values: (somaxconn floor, mtu, txqueuelen) as first applied, then after the reload.
FIRST = {"somaxconn": 8192, "mtu": 9000, "txqueuelen": 5000}
RELOADED = {"somaxconn": 16384, "mtu": 4000, "txqueuelen": 6000}


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


# -- helpers -----------------------------------------------------------------------------


STARTED = time.monotonic()


def log(message: str) -> None:
    """One line of the log, stamped with the seconds since the checks started."""
    stamp = f"[{time.monotonic() - STARTED:6.1f}]"
    print("\n".join(f"{stamp} {line}" for line in message.splitlines()) or stamp, flush=True)


def sh(command: str | list[str], *, check: bool = True, timeout: float = 300,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = command if isinstance(command, list) else ["sh", "-c", command]
    shown = shlex.join(argv) if isinstance(command, list) else command
    log(f"$ {shown}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive",
                               **(env or {})})
    for line in (proc.stdout + proc.stderr).splitlines()[-40:]:
        log(f"  | {line}")
    if check and proc.returncode != 0:
        raise Failed(f"{shown!r} exited {proc.returncode}: "
                     f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def wait_for(what: str, probe: Callable[[], object], timeout: float,
             interval: float = 1.0) -> object:
    """Poll ``probe`` until it returns something truthy; Failed after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = probe()
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {timeout:.0f}s (last: {last!r})")
        time.sleep(interval)


def sysctl(key: str) -> str:
    path = Path("/proc/sys", *key.split("."))
    return " ".join(path.read_text().split())


def link(name: str) -> dict:
    [info] = json.loads(sh(["ip", "-j", "-d", "link", "show", "dev", name]).stdout)
    return info


def tso(name: str) -> str:
    out = sh(["ethtool", "-k", name]).stdout
    found = re.search(r"^tcp-segmentation-offload:\s*(\w+)", out, re.M)
    return found.group(1) if found else "?"


def snapshot() -> dict[str, str]:
    """Everything the lab config tunes, as the kernel reports it."""
    state = {key: sysctl(key) for key in SYSCTLS}
    for name in LAB_IFACES:
        info = link(name)
        state[f"{name}.mtu"] = str(info["mtu"])
        state[f"{name}.txqueuelen"] = str(info["txqlen"])
        state[f"{name}.tso"] = tso(name)
    return state


def tuned(values: dict[str, int]) -> dict[str, str]:
    want = {"net.core.somaxconn": str(values["somaxconn"]),
            "net.ipv4.tcp_slow_start_after_idle": "0", "net.ipv4.ip_forward": "1",
            "net.ipv4.neigh.default.gc_thresh3": "32768"}
    for name in LAB_IFACES:
        want |= {f"{name}.mtu": str(values["mtu"]), f"{name}.txqueuelen":
                 str(values["txqueuelen"]), f"{name}.tso": "off",
                 f"net.ipv4.conf.{name}.arp_ignore": "1"}
    return want


def differences(want: dict[str, str], have: dict[str, str]) -> list[str]:
    return [f"{key}: {have.get(key)!r}, want {value!r}" for key, value in want.items()
            if have.get(key) != value]


def unit(*props: str) -> dict[str, str]:
    out = sh(["systemctl", "show", UNIT, *(f"--property={p}" for p in props)],
             check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def active() -> bool:
    return unit("ActiveState")["ActiveState"] == "active"


def cursor() -> str:
    out = sh(["journalctl", "-n", "0", "--show-cursor", "--no-pager"], check=False).stdout
    found = re.search(r"-- cursor: (\S+)", out)
    return found.group(1) if found else ""


def matching(entry: dict, matches: tuple[str, ...]) -> bool:
    """journalctl's -t NAME, -u UNIT and FIELD=VALUE, applied to one JSON entry."""
    items = list(matches)
    while items:
        item = items.pop(0)
        if item == "-t":
            if entry.get("SYSLOG_IDENTIFIER") != items.pop(0):
                return False
        elif item == "-u":
            unit_name = items.pop(0)
            if unit_name not in (entry.get("_SYSTEMD_UNIT"), entry.get("UNIT")):
                return False
        else:
            name, _, value = item.partition("=")
            if entry.get(name) != value:
                return False
    return True


def journal(*matches: str, after: str = "") -> list[dict]:
    """Entries of this boot; after a cursor, filtered here: journalctl 252 with a match and
    --after-cursor can miss entries (seen here: a reload's line, found without the match)."""
    argv = ["journalctl", "-o", "json", "--no-pager", "-b"]
    argv += ["--after-cursor", after] if after else list(matches)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False).stdout
    entries = []
    for line in out.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in entries if matching(e, matches)] if after else entries


def messages(*matches: str, after: str = "") -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in journal(*matches, after=after)]


def reloaded_since(mark: str) -> bool:
    return any(m.startswith("reloaded") for m in messages("-t", "nodenetd", after=mark))


def write_config(*, on_stop: str = "keep", values: dict[str, int] = FIRST) -> None:
    PROFILES_D.mkdir(parents=True, exist_ok=True)
    (PROFILES_D / "lab.yaml").write_text(LAB_PROFILE.format(**values))
    CONFIG.write_text(NODE_CONFIG.format(on_stop=on_stop))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed_version() -> str:
    proc = sh(["dpkg-query", "-W", "-f", "${Status} ${Version}", "nodenetd"], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def apt(*args: str, timeout: float = 900) -> None:
    sh(["apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confold", *args],
       timeout=timeout)


# -- the checks --------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    run: Callable[[Lab], str]
    needs: tuple[str, ...]
    doc: str


@dataclass
class Lab:
    inputs: Path
    plan: dict
    originals: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)

    @property
    def deb(self) -> Path:
        return self.inputs / self.plan["deb"]



CHECKS: list[Check] = []


def check(name: str, needs: tuple[str, ...] = ()) -> Callable:
    def register(fn: Callable[[Lab], str]) -> Callable[[Lab], str]:
        doc = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
        CHECKS.append(Check(name, fn, needs, doc))
        return fn
    return register


@check("install")
def check_install(lab: Lab) -> str:
    """apt installs the .deb with no network; files, conffiles and the enabled unit are
    where they belong."""
    for left, right in VETHS[:1]:
        sh(f"ip link add {left} type veth peer name {right} && ip link set {left} up && "
           f"ip link set {right} up")
    lab.originals = snapshot()
    log(f"originals: {json.dumps(lab.originals)}")
    started = time.monotonic()
    apt("install", "--no-install-recommends", str(lab.deb))
    took = time.monotonic() - started
    expect(installed_version().startswith("install ok installed"), "not installed")
    conffiles = sh(["dpkg-query", "-W", "-f", "${Conffiles}", "nodenetd"]).stdout
    for path in ("/etc/nodenetd/nodenetd.yaml", "/etc/nodenetd/profiles.d/local.yaml",
                 "/etc/default/nodenetd"):
        expect(path in conffiles, f"{path} is not a conffile")
    for path in ("/usr/bin/nodenetd", "/usr/bin/nodenetctl",
                 "/usr/share/nodenetd/profiles/kubernetes-node.yaml",
                 "/usr/share/man/man8/nodenetd.8.gz", "/usr/share/man/man8/nodenetctl.8.gz",
                 "/lib/systemd/system/nodenetd.service",
                 "/usr/share/doc/nodenetd/README.Debian.gz"):
        expect(Path(path).exists(), f"{path} is missing")
    compiled = glob.glob("/usr/lib/nodenetd/venv/lib/python3.11/site-packages/nodenetd/"
                         "__pycache__/*.pyc")
    expect(bool(compiled), "postinst did not byte-compile the private environment")
    enabled = sh(["systemctl", "is-enabled", UNIT], check=False).stdout.strip()
    expect(enabled == "enabled", f"unit is {enabled!r}, not enabled")
    return f"{installed_version()} in {took:.0f}s (postinst compiles and starts it); enabled"


@check("service-active", needs=("install",))
def check_service_active(lab: Lab) -> str:
    """The shipped hardened unit reaches active through sd_notify (Type=notify), as a
    dynamic user with only CAP_NET_ADMIN and CAP_NET_RAW, and the sandbox denies nothing."""
    shipped = lab.inputs / "nodenetd.service"
    expect(sha256(Path("/lib/systemd/system/nodenetd.service")) == sha256(shipped),
           "the installed unit differs from systemd/nodenetd.service")
    wait_for("nodenetd active", active, 180)
    props = unit("Type", "NotifyAccess", "StatusText", "MainPID", "NRestarts", "WatchdogUSec",
                 "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    expect(props["Type"] == "notify", f"Type={props['Type']}")
    expect(bool(props["StatusText"]), "no STATUS= from the daemon")
    status = Path(f"/proc/{props['MainPID']}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    uid = int(fields["Uid"].split()[0])
    expect(uid != 0, "runs as root")
    for cap in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
        expect(int(fields[cap], 16) == (1 << 12) | (1 << 13),
               f"{cap}={fields[cap].strip()}, want CAP_NET_ADMIN|CAP_NET_RAW (0x3000)")
    expect(fields["NoNewPrivs"].strip() == "1", "NoNewPrivs is not set")
    expect(fields["Seccomp"].strip() == "2", "no seccomp filter")
    denied = [m for m in messages("_SYSTEMD_UNIT=nodenetd.service")
              if re.search(r"Permission denied|Operation not permitted|Read-only file system|"
                           r"Traceback", m)]
    expect(not denied, f"denials in the journal: {denied[:3]}")
    startup = (int(props["ActiveEnterTimestampMonotonic"])
               - int(props["ExecMainStartTimestampMonotonic"])) / 1e6
    exposure = sh(f"systemd-analyze security {UNIT} | tail -1", check=False).stdout.strip()
    return (f"active after {startup:.1f}s from exec: {props['StatusText']!r}; uid {uid}; "
            f"caps 0x3000; {exposure}")


@check("profile-applied", needs=("service-active",))
def check_profile_applied(lab: Lab) -> str:
    """A config naming the built-in kubernetes-node profile and a local one is really
    applied: net sysctls and MTU, txqueuelen, TSO, interface sysctls on a veth pair; a veth
    pair created later is tuned on its event."""
    mark = cursor()
    write_config()
    sh(["systemctl", "reload", UNIT])
    want = tuned(FIRST)
    wait_for("profile applied", lambda: not differences(want, snapshot()), 120, interval=2)
    wait_for("'reloaded' in the journal", lambda: reloaded_since(mark), 60)
    left, right = VETHS[1]
    sh(f"ip link add {left} type veth peer name {right}")
    wait_for(f"hot-plugged {left} tuned",
             lambda: link(left)["mtu"] == FIRST["mtu"] and link(right)["mtu"] == FIRST["mtu"],
             60)
    return f"{len(want)} settings as the profiles say; {left}/{right} tuned on hotplug"


@check("journal-fields", needs=("profile-applied",))
def check_journal_fields(lab: Lab) -> str:
    """Each change is one journal entry with INTERFACE=, SETTING=, OLD=, NEW=, REASON=."""
    entries = [e for e in journal("SYSLOG_IDENTIFIER=nodenetd", "INTERFACE=lab0", "SETTING=mtu")
               if e.get("NEW") == str(FIRST["mtu"])]
    expect(bool(entries), f"no entry with INTERFACE=lab0 SETTING=mtu NEW={FIRST['mtu']}")
    entry = entries[0]
    got = {k: entry.get(k) for k in ("INTERFACE", "SETTING", "OLD", "NEW", "REASON",
                                     "_SYSTEMD_UNIT", "PRIORITY")}
    expect(got["NEW"] == str(FIRST["mtu"]) and got["OLD"] == "1500",
           f"OLD/NEW: {got}")
    expect(got["REASON"] == "reload" and got["_SYSTEMD_UNIT"] == UNIT, f"fields: {got}")
    hotplug = journal("SYSLOG_IDENTIFIER=nodenetd", "INTERFACE=lab2", "REASON=new interface")
    expect(bool(hotplug), "no entry with INTERFACE=lab2 REASON=new interface")
    sysctls = journal("SYSLOG_IDENTIFIER=nodenetd", "SETTING=net.ipv4.tcp_slow_start_after_idle")
    expect(bool(sysctls), "no entry for the sysctl net.ipv4.tcp_slow_start_after_idle")
    return f"journalctl -t nodenetd INTERFACE=lab0 SETTING=mtu -> {got}"


@check("metrics", needs=("profile-applied",))
def check_metrics(lab: Lab) -> str:
    """/metrics answers on the default listen address with nodenetd's series."""
    package = Path("/usr/lib/nodenetd/venv/lib/python3.11/site-packages/nodenetd/metrics")
    if not package.is_dir():
        raise Skipped("this build has no nodenetd/metrics (the endpoint has not landed)")

    def scrape() -> str:
        with urllib.request.urlopen(METRICS_URL, timeout=20) as reply:
            return reply.read().decode() if reply.status == 200 else ""

    body = str(wait_for(f"GET {METRICS_URL}", scrape, 60, interval=2))
    series = sorted({line.split("{")[0].split()[0] for line in body.splitlines()
                     if line.startswith("nodenetd_")})
    expect(bool(series), "no nodenetd_* series in /metrics")
    return f"{METRICS_URL}: {len(series)} nodenetd_* series, e.g. {', '.join(series[:4])}"


@check("reload", needs=("profile-applied",))
def check_reload(lab: Lab) -> str:
    """systemctl reload applies a changed config without a restart; a broken one is
    rejected and the running config stays in force."""
    before = unit("MainPID", "NRestarts")
    mark = cursor()
    write_config(values=RELOADED)
    sh(["systemctl", "reload", UNIT])
    want = tuned(RELOADED)
    wait_for("reloaded config applied", lambda: not differences(want, snapshot()), 120,
             interval=2)
    wait_for("'reloaded' in the journal", lambda: reloaded_since(mark), 60)
    after = unit("MainPID", "NRestarts")
    expect(after == before, f"reload restarted the service: {before} -> {after}")
    # A broken profile: rejected, nothing changes, the service stays up.
    good = (PROFILES_D / "lab.yaml").read_text()
    (PROFILES_D / "lab.yaml").write_text(good.replace("mtu:", "mtu_typo:"))
    mark = cursor()
    sh(["systemctl", "reload", UNIT])
    wait_for("'reload rejected' in the status",
             lambda: "reload rejected" in unit("StatusText")["StatusText"], 60)
    expect(active() and not differences(want, snapshot()), "a rejected reload changed things")
    (PROFILES_D / "lab.yaml").write_text(good)
    sh(["systemctl", "reload", UNIT])
    wait_for("reload accepted again",
             lambda: "reload rejected" not in unit("StatusText")["StatusText"], 60)
    return f"MTU {FIRST['mtu']} -> {RELOADED['mtu']} by reload, same PID; broken config rejected"


@check("watchdog", needs=("profile-applied",))
def check_watchdog(lab: Lab) -> str:
    """A stalled event loop stops the WATCHDOG=1 pings: systemd kills and restarts the
    service (WatchdogSec=30s as shipped), and the tuning is still in place after."""
    props = unit("MainPID", "NRestarts", "WatchdogUSec")
    expect(props["WatchdogUSec"] == "30s", f"WatchdogUSec={props['WatchdogUSec']}")
    mark = cursor()
    started = time.monotonic()
    sh(["kill", "-STOP", props["MainPID"]])  # the loop (the whole process) stalls
    wait_for("restart by the watchdog",
             lambda: unit("MainPID")["MainPID"] not in ("0", props["MainPID"]) and active(),
             180, interval=2)
    took = time.monotonic() - started
    now = unit("NRestarts")
    expect(int(now["NRestarts"]) == int(props["NRestarts"]) + 1,
           f"NRestarts {props['NRestarts']} -> {now['NRestarts']}")
    systemd_says = messages("-u", UNIT, after=mark)
    expect(any("Watchdog timeout" in m for m in systemd_says),
           f"no 'Watchdog timeout' from systemd: {systemd_says[-5:]}")
    wait_for("tuning after the restart", lambda: not differences(tuned(RELOADED), snapshot()),
             30)
    return f"stalled PID {props['MainPID']} replaced after {took:.0f}s; tuning intact"


@check("stop-restore", needs=("profile-applied",))
def check_stop_restore(lab: Lab) -> str:
    """systemctl stop with daemon.on_stop: restore puts every original back."""
    mark = cursor()
    write_config(on_stop="restore", values=RELOADED)
    sh(["systemctl", "reload", UNIT])
    wait_for("on_stop: restore in force", lambda: reloaded_since(mark), 60)
    sh(["systemctl", "stop", UNIT], timeout=180)
    expect(not active(), "still active after stop")
    diff = differences(lab.originals, snapshot())
    expect(not diff, f"not restored by stop: {diff}")
    return f"{len(lab.originals)} settings back to their originals on stop"


@check("stop-keep", needs=("profile-applied",))
def check_stop_keep(lab: Lab) -> str:
    """systemctl stop with daemon.on_stop: keep (the default) leaves the tuning in place
    (started again first: the previous check stopped it)."""
    write_config(on_stop="keep", values=RELOADED)
    sh(["systemctl", "restart", UNIT], timeout=400)
    wait_for("tuned after start", lambda: not differences(tuned(RELOADED), snapshot()), 60)
    sh(["systemctl", "stop", UNIT], timeout=180)
    expect(not active(), "still active after stop")
    diff = differences(tuned(RELOADED), snapshot())
    expect(not diff, f"stop with on_stop: keep changed settings: {diff}")
    return "started and tuned; the tuning stayed after stop"


@check("remove", needs=("install",))
def check_remove(lab: Lab) -> str:
    """apt remove stops the service, puts every original back (nodenetctl restore from
    prerm: the service had kept its tuning) and keeps the configuration."""
    expect("NODENETD_ON_REMOVE=restore" in DEFAULTS.read_text(),
           "/etc/default/nodenetd does not say restore")
    apt("remove", "nodenetd")
    expect(installed_version().startswith("deinstall ok config-files"),
           f"status after remove: {installed_version()}")
    expect(not active(), "service active after remove")
    running = sh(["pgrep", "-f", "nodenetd.daemon.main"], check=False).stdout.strip()
    expect(not running, f"nodenetd still running: {running}")
    diff = differences(lab.originals, snapshot())
    expect(not diff, f"settings not restored by remove: {diff}")
    expect(CONFIG.exists() and (PROFILES_D / "lab.yaml").exists() and DEFAULTS.exists(),
           "remove deleted configuration")
    expect(os.path.lexists("/var/lib/nodenetd"), "remove deleted the state")
    return "originals restored, /etc/nodenetd and the journal kept"


@check("purge", needs=("install",))
def check_purge(lab: Lab) -> str:
    """apt purge removes configuration and state, and leaves no unit or tuning behind."""
    apt("purge", "nodenetd")
    expect(installed_version() == "" or "not-installed" in installed_version(),
           f"status after purge: {installed_version()}")
    left = [p for p in ("/etc/nodenetd", "/etc/default/nodenetd", "/var/lib/nodenetd",
                        "/var/lib/private/nodenetd", "/usr/lib/nodenetd",
                        "/etc/systemd/system/multi-user.target.wants/nodenetd.service",
                        "/lib/systemd/system/nodenetd.service")
            if os.path.lexists(p)]
    expect(not left, f"left behind by purge: {left}")
    diff = differences(lab.originals, snapshot())
    expect(not diff, f"settings after purge: {diff}")
    return "configuration, state, unit and tuning all gone"


# -- running them --------------------------------------------------------------------------


def run(lab: Lab, only: set[str] | None) -> int:
    failed = 0
    for item in CHECKS:
        if only and item.name not in only:
            continue
        log(f"=== {item.name}: {item.doc}")
        started = time.monotonic()
        blocked = [n for n in item.needs if lab.results.get(n) not in ("passed", None)]
        try:
            if blocked:
                raise Failed(f"not run: {', '.join(blocked)} did not pass")
            message, status = item.run(lab), "passed"
        except Skipped as exc:
            message, status = str(exc), "skipped"
        except Failed as exc:
            message, status = str(exc), "failed"
        except Exception as exc:  # a bug in the check itself: fail it, keep going
            message, status = f"{type(exc).__name__}: {exc}", "failed"
            log(traceback.format_exc())
        lab.results[item.name] = status
        failed += status == "failed"
        result = {"name": item.name, "doc": item.doc, "status": status,
                  "seconds": round(time.monotonic() - started, 1), "message": message}
        print(f"@@result {json.dumps(result)}", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--only", default="", help="comma-separated check names")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for item in CHECKS:
            print(f"{item.name}\t{item.doc}")
        return 0
    plan = json.loads((args.inputs / "plan.json").read_text())
    only = set(filter(None, args.only.split(","))) or None
    return run(Lab(args.inputs, plan), only)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
