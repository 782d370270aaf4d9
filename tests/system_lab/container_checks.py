"""The system lab's checks in the container (tests/system_lab/container.py): the Ansible
role and playbook against localhost with a local connection, then the package's upgrade and
its removal with NODENETD_ON_REMOVE=keep.

The playbook is the repository's ansible/site.yml with the nodenetd role, bind-mounted
read-only, run by the image's ansible-core (Debian 12's 2.14, as the fleet's control nodes
would have it) with an inventory of one host, localhost. The package comes from an apt
repository of one file, the .deb under test. The role writes a profile of its own, "fleet",
which tunes the container's veth pair lab0/lab1 and two net sysctls.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.system_lab.container import Container
from tests.system_lab.results import Failed, Results

LAB = "/srv/lab"  # the run's inputs: the apt repository, the upgrade .deb, variables
PLAYBOOKS = "/srv/ansible"  # the repository's ansible/
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+"
                   r"failed=(\d+)\s+skipped=(\d+)", re.M)
WATCHED = ["/etc/nodenetd/nodenetd.yaml", "/etc/nodenetd/profiles.d/fleet.yaml",
           "/etc/default/nodenetd"]
FIRST = {"mtu": 9000, "somaxconn": 8192}
SECOND = {"mtu": 4000, "somaxconn": 16384}


def fleet(mtu: int, somaxconn: int, *, typo: bool = False) -> dict:
    rule: dict[str, object] = {"name": "lab-veths",
                               "match": {"name": ["lab*"], "kind": ["veth"]},
                               "features": {"tso": False}}
    rule["mtuu" if typo else "mtu"] = mtu
    return {"description": "system lab: the fleet's profile",
            "sysctls": {"net.core.somaxconn": f">={somaxconn}",
                        "net.ipv4.tcp_slow_start_after_idle": 0},
            "interfaces": [rule]}


def lab_vars(values: dict[str, int], *, typo: bool = False) -> dict:
    return {
        "nodenetd_apt_repository": f"deb [trusted=yes] file:{LAB}/repo ./",
        "nodenetd_profiles": ["kubernetes-node", "fleet"],
        "nodenetd_custom_profiles": {"fleet": fleet(values["mtu"], values["somaxconn"],
                                                    typo=typo)},
        "nodenetd_on_remove": "keep",
    }


class ContainerLab:
    def __init__(self, ct: Container, inputs: Path, out: Path, plan: dict,
                 say: Callable[[str], None]):
        self.ct = ct
        self.inputs = inputs
        self.out = out
        self.plan = plan
        self.say = say
        self.log = (out / "container-checks.log").open("a")

    # -- helpers -----------------------------------------------------------------------------

    def sh(self, command: str, *, check: bool = True, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
        proc = self.ct.run(command, timeout=timeout)
        self.log.write(f"$ {command}\n{proc.stdout}{proc.stderr}(exit {proc.returncode})\n")
        self.log.flush()
        if check and proc.returncode != 0:
            raise Failed(f"{command!r} exited {proc.returncode}: "
                         f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        return proc

    def state(self) -> dict[str, str]:
        """The tuned settings and the watched files' hashes, read in one command."""
        script = (
            "for k in net/core/somaxconn net/ipv4/tcp_slow_start_after_idle; do "
            "echo \"$k=$(cat /proc/sys/$k)\"; done; "
            "for i in lab0 lab1; do echo \"$i.mtu=$(cat /sys/class/net/$i/mtu)\"; "
            "echo \"$i.tso=$(ethtool -k $i | sed -n 's/^tcp-segmentation-offload: //p')\"; "
            "done; "
            f"for f in {' '.join(WATCHED)}; do "
            "echo \"$f=$(sha256sum $f 2>/dev/null | cut -c1-16)\"; done; "
            "echo \"pid=$(systemctl show -p MainPID --value nodenetd 2>/dev/null)\"")
        out = self.sh(script).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def expect_tuned(self, values: dict[str, int], state: dict[str, str] | None = None) -> None:
        state = state or self.state()
        want = {"net/core/somaxconn": str(values["somaxconn"]),
                "net/ipv4/tcp_slow_start_after_idle": "0",
                "lab0.mtu": str(values["mtu"]), "lab1.mtu": str(values["mtu"]),
                "lab0.tso": "off", "lab1.tso": "off"}
        wrong = {k: (state.get(k), v) for k, v in want.items() if state.get(k) != v}
        if wrong:
            raise Failed(f"not tuned as the role says (have, want): {wrong}")

    def playbook(self, name: str, variables: dict, *flags: str) -> tuple[int, str, dict]:
        """Run ansible/site.yml in the container; (exit status, output, recap of localhost)."""
        vars_file = self.inputs / f"vars-{name}.json"
        vars_file.write_text(json.dumps(variables, indent=2))
        command = (
            f"cd {PLAYBOOKS} && ANSIBLE_CONFIG={PLAYBOOKS}/ansible.cfg ANSIBLE_NOCOLOR=1 "
            "ANSIBLE_FORCE_COLOR=0 ANSIBLE_LOCAL_TEMP=/root/.ansible/tmp "
            f"ansible-playbook -i {LAB}/inventory.yml site.yml -e @{LAB}/{vars_file.name} "
            + " ".join(flags))
        lines: list[str] = []
        log = self.out / f"ansible-{name}.log"
        with log.open("w") as handle:
            def keep(line: str) -> None:
                lines.append(line)
                handle.write(line + "\n")
                handle.flush()
            started = time.monotonic()
            rc = self.ct.stream(command, timeout=600, on_line=keep)
        output = "\n".join(lines)
        found = RECAP.search(output)
        recap = dict(zip(("ok", "changed", "unreachable", "failed", "skipped"),
                         map(int, found.groups()[1:]), strict=True)) if found else {}
        self.say(f"ansible {name}: exit {rc} in {time.monotonic() - started:.0f}s, "
                 f"recap {recap or 'missing'} (log {log})")
        return rc, output, recap

    def unit_messages(self, unit: str, after: str) -> list[str]:
        """Messages about ``unit`` after a cursor, filtered here (journalctl 252 with a match
        and --after-cursor can miss entries)."""
        out = self.sh(f"journalctl -o json --no-pager --after-cursor '{after}'",
                      check=False).stdout
        found = []
        for line in out.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if unit in (entry.get("UNIT"), entry.get("_SYSTEMD_UNIT")):
                found.append(str(entry.get("MESSAGE", "")))
        return found

    def cursor(self) -> str:
        out = self.sh("journalctl -n 0 --show-cursor --no-pager", check=False).stdout
        found = re.search(r"-- cursor: (\S+)", out)
        return found.group(1) if found else ""

    # -- checks ------------------------------------------------------------------------------

    def converge(self) -> str:
        """A real run on a node without nodenetd installs it from the apt repository,
        writes the config and a profile, reloads, and verifies the node converged."""
        self.sh("ip link add lab0 type veth peer name lab1 && ip link set lab0 up && "
                "ip link set lab1 up")
        self.originals = self.state()
        rc, output, recap = self.playbook("converge", lab_vars(FIRST))
        if rc != 0 or not recap or recap["failed"]:
            raise Failed(f"exit {rc}, recap {recap}: {output[-1500:]}")
        if not recap["changed"]:
            raise Failed("the first run changed nothing")
        self.expect_tuned(FIRST)
        if "nodenetd has not converged" in output or not re.search(
                r"Nothing to change|0 to change", output):
            raise Failed("verify did not report a converged node")
        active = self.sh("systemctl is-active nodenetd", check=False).stdout.strip()
        if active != "active":
            raise Failed(f"nodenetd is {active!r} after the run")
        return f"installed, configured and converged; recap {recap}"

    def idempotent(self) -> str:
        """A second run with the same variables changes nothing."""
        before = self.state()
        rc, output, recap = self.playbook("idempotent", lab_vars(FIRST))
        if rc != 0 or not recap:
            raise Failed(f"exit {rc}, recap {recap}: {output[-1500:]}")
        if recap["changed"] or recap["failed"]:
            changed = re.findall(r"^changed: \[[^]]+\].*$", output, re.M)
            raise Failed(f"recap {recap}; changed: {changed}")
        if self.state() != before:
            raise Failed("the second run changed the node")
        return f"recap {recap}"

    def check_mode(self) -> str:
        """--check --diff with new values shows the real tuning plan (current -> desired
        per setting, from nodenetctl plan) and the file diffs, and changes nothing."""
        before = self.state()
        rc, output, recap = self.playbook("check-diff", lab_vars(SECOND), "--check", "--diff")
        if rc != 0 or not recap or recap["failed"]:
            raise Failed(f"exit {rc}, recap {recap}: {output[-1500:]}")
        plan = re.search(r"link\.mtu\s+9000\s+->\s+4000", output)
        sysctl = re.search(r"net\.core\.somaxconn\s+8192\s+->\s+16384", output)
        if not plan or not sysctl:
            raise Failed("the pending plan (link.mtu 9000 -> 4000, somaxconn 8192 -> 16384) "
                         f"is not in the output: {output[-1500:]}")
        if not re.search(r"^[-+]\s+mtu: 4000", output, re.M):
            raise Failed("no diff of the profile file in the output")
        after = self.state()
        if after != before:
            raise Failed(f"check mode changed the node: {before} -> {after}")
        self.expect_tuned(FIRST, after)
        return f"plan and diffs shown, node unchanged; recap {recap}"

    def broken_profile(self) -> str:
        """A profile with a misspelt key is rejected by nodenetctl validate before anything
        is written or applied."""
        before = self.state()
        rc, output, _ = self.playbook("broken", lab_vars(SECOND, typo=True))
        if rc == 0:
            raise Failed("the playbook succeeded with a broken profile")
        if not re.search(r"Validate the candidate.*\n(?:.*\n){0,3}fatal:", output) or \
                "mtuu" not in output:
            raise Failed(f"not rejected by the validation task: {output[-1500:]}")
        after = self.state()
        if after != before:
            raise Failed(f"files or tuning changed: {before} -> {after}")
        message = re.search(r"fleet\.yaml:\d+: [^\n\"]*mtuu[^\n\"]*", output)
        return f"rejected: {message.group(0) if message else 'validate failed'}; nothing touched"

    def not_converged(self) -> str:
        """A node whose tuning does not converge (something keeps rewriting a managed
        sysctl) fails the play at verify, and the rollout stops there."""
        self.sh("systemd-run --unit=lab-fighter --quiet sh -c 'while :; do "
                "echo 1 > /proc/sys/net/ipv4/tcp_slow_start_after_idle; sleep 0.2; done'")
        try:
            rc, output, recap = self.playbook("not-converged", lab_vars(SECOND))
        finally:
            self.sh("systemctl stop lab-fighter", check=False)
        if rc == 0:
            raise Failed("the play passed although the node did not converge")
        if "nodenetd has not converged" not in output:
            raise Failed(f"failed, but not at verify: {output[-1500:]}")
        return f"failed at verify as it should; recap {recap}"

    def upgrade(self) -> str:
        """An upgrade keeps the role's config (a modified conffile), restarts the service
        once (not stopped first) and changes no setting: no link event on the veths."""
        self.sh("systemctl restart nodenetd")  # correct what the fighter left
        self.expect_tuned(SECOND)
        before = self.state()
        mark = self.cursor()
        self.sh("ip -o monitor link > /run/lab-monitor.log 2>&1 & echo $! > /run/lab-monitor.pid")
        try:
            self.sh(f"apt-get install -y -q -o Dpkg::Options::=--force-confold "
                    f"{LAB}/{self.plan['upgrade_deb']}")
            time.sleep(1)
        finally:
            self.sh("kill $(cat /run/lab-monitor.pid)", check=False)
        version = self.sh("dpkg-query -W -f '${Version}' nodenetd").stdout.strip()
        if version != self.plan["upgrade_version"]:
            raise Failed(f"version after the upgrade: {version}")
        after = self.state()
        events = [line for line in self.sh("cat /run/lab-monitor.log").stdout.splitlines()
                  if re.search(r"\blab[01]\b", line)]
        said = self.unit_messages("nodenetd.service", mark)
        starts = [m for m in said if m.startswith("Started ")]
        stops = [m for m in said if m.startswith("Stopping ")]
        problems = []
        if len(starts) != 1 or len(stops) != 1:
            problems.append(f"{len(stops)} stop(s), {len(starts)} start(s): {said[-8:]}")
        if after["pid"] == before["pid"]:
            problems.append("not restarted")
        for path in WATCHED:
            if after[path] != before[path]:
                problems.append(f"{path} changed")
        if events:
            problems.append(f"link events: {events[:3]}")
        if problems:
            raise Failed("; ".join(problems))
        self.expect_tuned(SECOND, after)
        return f"{version}: 1 restart, conffiles kept, 0 link events, tuning unchanged"

    def remove_keep(self) -> str:
        """apt remove with NODENETD_ON_REMOVE=keep (the role's nodenetd_on_remove) stops the
        service and keeps tuning and config; purge then removes config and state only."""
        self.sh("grep -qx NODENETD_ON_REMOVE=keep /etc/default/nodenetd")
        self.sh("apt-get remove -y -q nodenetd")
        if self.sh("systemctl is-active nodenetd", check=False).stdout.strip() == "active":
            raise Failed("still active after remove")
        self.expect_tuned(SECOND)
        self.sh("test -f /etc/nodenetd/nodenetd.yaml && test -d /var/lib/nodenetd/")
        self.sh("apt-get purge -y -q nodenetd")
        left = self.sh("ls -d /etc/nodenetd /var/lib/nodenetd /var/lib/private/nodenetd "
                       "/etc/default/nodenetd 2>/dev/null", check=False).stdout.split()
        if left:
            raise Failed(f"left by purge: {left}")
        self.expect_tuned(SECOND)
        return "remove kept tuning and config; purge removed config and state, kept tuning"


CHECKS: list[tuple[str, Callable[[ContainerLab], str], tuple[str, ...]]] = [
    ("ansible-converge", ContainerLab.converge, ()),
    ("ansible-idempotent", ContainerLab.idempotent, ("ansible-converge",)),
    ("ansible-check-diff", ContainerLab.check_mode, ("ansible-converge",)),
    ("ansible-broken-profile", ContainerLab.broken_profile, ("ansible-converge",)),
    ("ansible-not-converged", ContainerLab.not_converged, ("ansible-converge",)),
    ("upgrade", ContainerLab.upgrade, ("ansible-converge",)),
    ("remove-keep", ContainerLab.remove_keep, ("ansible-converge",)),
]


def not_run(blocked: list[str]) -> str:
    raise Failed(f"not run: {', '.join(blocked)} did not pass")


def write_inputs(inputs: Path) -> None:
    (inputs / "inventory.yml").write_text(json.dumps({"all": {"children": {"nodenetd": {
        "hosts": {"localhost": {"ansible_connection": "local",
                                "ansible_python_interpreter": "/usr/bin/python3"}}}}}},
        indent=2))


def run(ct: Container, inputs: Path, out: Path, plan: dict, results: Results,
        say: Callable[[str], None]) -> None:
    lab = ContainerLab(ct, inputs, out, plan, say)
    for name, check, needs in CHECKS:
        blocked = [n for n in needs if results.status_of("container", n) != "passed"]
        if blocked:
            results.run("container", name, lambda b=blocked: not_run(b))
            continue
        doc = (check.__doc__ or "").split("\n\n")[0].strip()
        results.run("container", name, lambda c=check: c(lab), doc=" ".join(doc.split()))
