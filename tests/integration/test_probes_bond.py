"""Neighbour probes on a kernel bond's members, active and backup (kernel lab lane: bonding).

Topology: the node's active-backup bond0 (192.0.2.2, 2001:db8:a::2) over veths m0 and m1,
whose peers s0 and s1 are ports of a bridge in a 'switch' namespace; the switch's own stack
(192.0.2.1, 2001:db8:a::1 on br0) is the probe target and the pinging peer.

What is shown: ARP and NS probes from packet sockets work on both members, the backup too;
by default they speak as each member's permanent MAC from 0.0.0.0 and an EUI-64 link-local,
so probing the backup leaves the bond's MAC on the active member's switch port and traffic to
the bond loses nothing. Probing the backup with the bond's own MAC and addresses (what a
naive prober, and the intuitive reading of "probe the member as the bond", does) drags the
bond's MAC to the backup's port and the switch delivers the bond's traffic to a member that
drops it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass

import pytest

from nodenetd.health.probes import packets
from tests.lab.netns import REPO, VENV_BIN, Netns

pytestmark = [pytest.mark.kernel, pytest.mark.root]

MEMBERS = {"m0": "s0", "m1": "s1"}
TARGETS = [("arp", "192.0.2.1"), ("ns", "2001:db8:a::1")]


@dataclass
class BondLab:
    node: Netns
    switch: Netns

    def driver(self, probers: list[dict], duration: float, **plan: object) -> subprocess.Popen:
        python = str(VENV_BIN / "python")
        plan = {"duration": duration, "probers": probers, **plan}
        argv = self.node.exec_argv(python, "-m", "nodenetd.health.probes", json.dumps(plan))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    @staticmethod
    def summary(driver: subprocess.Popen) -> dict:
        # generous: under emulation (TCG) the interpreter alone takes tens of seconds to start
        out, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, out + err
        return {(p["member"], p["kind"]): p for p in json.loads(out)["probes"]}

    def probe(self, probers: list[dict], duration: float) -> dict:
        return self.summary(self.driver(probers, duration))

    def probe_while_pinging(self, probers: list[dict]) -> tuple[dict, float]:
        """Probe while the switch pings the bond 75 times, 20 ms apart; (probes, loss %)."""
        driver = self.driver(probers, 240, announce=True)
        try:
            assert driver.stderr is not None
            assert driver.stderr.readline() == "probing\n"  # the probers are running
            ping = self.switch.run(
                "ping", "-q", "-i", "0.02", "-c", "75", "-W", "1", "192.0.2.2", check=False
            )
            driver.send_signal(signal.SIGTERM)
            probes = self.summary(driver)
        finally:
            driver.kill()
        loss = re.search(r"([\d.]+)% packet loss", ping.stdout)
        assert loss, ping.stdout + ping.stderr
        return probes, float(loss.group(1))

    def slave(self, member: str) -> dict:
        return self.node.link(member)["linkinfo"]["info_slave_data"]

    def mac(self, name: str) -> str:
        return self.node.link(name)["address"]


@pytest.fixture
def lab(make_netns) -> BondLab:
    node, switch = make_netns("probe-bond"), make_netns("probe-switch")
    # one ``ip -batch`` per namespace: every ``ip`` process costs ~0.3 s under TCG
    node.run("ip", "-batch", "-", input="link add name bond0 type bond mode active-backup "
             "miimon 50\n" + "".join(
                 f"link add {member} type veth peer name {port} netns {switch.name}\n"
                 f"link set {member} master bond0\n" for member, port in MEMBERS.items()))
    switch.run("ip", "-batch", "-", input=(
        "link add name br0 type bridge stp_state 0 forward_delay 0\n"
        + "".join(f"link set {port} master br0\nlink set {port} up\n"
                  for port in MEMBERS.values())
        + "link set br0 up\naddr add 192.0.2.1/24 dev br0\n"
        "addr add 2001:db8:a::1/64 dev br0 nodad\n"))
    node.run("ip", "-batch", "-", input=(
        "link set bond0 type bond primary m0\nlink set bond0 up\n"
        "addr add 192.0.2.2/24 dev bond0\naddr add 2001:db8:a::2/64 dev bond0 nodad\n"))
    lab = BondLab(node, switch)
    switch.run("ping", "-c1", "-W5", "192.0.2.2")  # the bond is up and the switch learned it
    assert lab.slave("m0")["state"] == "ACTIVE"
    assert lab.slave("m1")["state"] == "BACKUP"
    return lab


# 50 ms, not 10: this lane may run under full emulation (TCG), where 10 ms is not kept
def specs(interval: float = 0.05) -> list[dict]:
    return [{"kind": kind, "target": target, "interval": interval} for kind, target in TARGETS]


def assert_healthy(probe: dict) -> None:
    assert probe["send_errors"] == 0, probe
    assert probe["ok"] >= 0.9 * probe["sent"], probe  # emulation may stall a probe or two


def test_both_members_answer_speaking_as_their_permanent_macs(lab):
    probes, loss = lab.probe_while_pinging([{"member": m, "specs": specs()} for m in MEMBERS])

    bond_mac = lab.mac("bond0")
    # the bond took m0's MAC: m0 gets a derived one, m1 speaks as its own permanent MAC
    assert lab.slave("m0")["perm_hwaddr"] == bond_mac != lab.slave("m1")["perm_hwaddr"]
    probe_macs = {
        "m0": packets.local_mac(packets.parse_mac(bond_mac) + b"m0"),
        "m1": packets.parse_mac(lab.slave("m1")["perm_hwaddr"]),
    }
    for member, mac in probe_macs.items():
        link_local = ipaddress.IPv6Address(packets.link_local_from_mac(mac))
        assert probes[(member, "arp")]["source"] == "0.0.0.0"
        assert probes[(member, "ns")]["source"] == str(link_local)
        for kind, _ in TARGETS:
            assert_healthy(probes[(member, kind)])
    print(f"\nping loss to the bond while both members are probed as themselves: {loss}%")
    assert loss == 0  # probing the backup took nothing from the active member's traffic
    fdb = lab.switch.run("bridge", "fdb", "show", "br", "br0").stdout
    assert re.search(rf"{bond_mac} dev s0 ", fdb), fdb
    assert not re.search(rf"{bond_mac} dev s1 ", fdb), fdb
    for member, mac in probe_macs.items():  # each probe MAC is learned on its own port
        assert re.search(rf"{packets.format_mac(mac)} dev {MEMBERS[member]} ", fdb), fdb
    # the switch's neighbour entries for the bond's addresses still name the bond's MAC
    neighbours = lab.switch.run("ip", "neigh", "show", "dev", "br0").stdout
    assert re.search(rf"192\.0\.2\.2 lladdr {bond_mac}", neighbours), neighbours
    for mac in probe_macs.values():
        assert f"192.0.2.2 lladdr {packets.format_mac(mac)}" not in neighbours


def test_probing_the_backup_with_the_bonds_identity_steals_its_traffic(lab):
    bond_mac = lab.mac("bond0")
    naive = [
        {
            "member": "m1",  # the backup only: nothing the active sends moves the MAC back
            "mac": bond_mac,
            "specs": [
                {"kind": "arp", "target": "192.0.2.1", "interval": 0.05, "source": "192.0.2.2"},
                {
                    "kind": "ns",
                    "target": "2001:db8:a::1",
                    "interval": 0.05,
                    "source": "2001:db8:a::2",
                },
            ],
        }
    ]

    _, loss = lab.probe_while_pinging(naive)

    print(f"\nping loss to the bond while the backup is probed as the bond: {loss}%")
    # the switch follows the bond's MAC to the backup's port, where the bond drops what
    # arrives: this is why the prober does not speak as the bond from a member by default
    assert loss > 20, loss


def test_a_dead_path_behind_the_backup_is_seen_before_it_is_needed(lab):
    lab.switch.run("bridge", "link", "set", "dev", "s1", "state", "0")  # carrier stays up

    probes = lab.probe([{"member": m, "specs": specs()} for m in MEMBERS], duration=1.0)

    assert lab.slave("m1")["mii_status"] == "UP"  # miimon sees nothing wrong
    for kind, _ in TARGETS:
        assert_healthy(probes[("m0", kind)])
        assert probes[("m1", kind)]["ok"] == 0
        assert probes[("m1", kind)]["timeouts"] >= probes[("m1", kind)]["sent"] - 2
