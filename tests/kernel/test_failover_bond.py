"""Bond failover groups end to end: the real nodenetd steering a real kernel bond.

    node namespace                              switch namespace
      bond0 192.0.2.2/24, 2001:db8::2/64
        m0 (priority 100) ----------------------- s0 \\
        m1 (priority 50)  ----------------------- s1 -- br0 192.0.2.1/24, 2001:db8::1/64

nodenetd runs in the node namespace with one bond group over m0 and m1 (ARP probes to the
switch's own address) and creates bond0, or adopts the one already there. Faults are made on
the switch side only: a port down is a pulled cable (the member loses carrier); netem loss
100% on a port is a gray failure (carrier stays up, the path is dead); a port toggled fast is
a flapping member.

Every outcome is read from the kernel as well as from nodenetd:

- ``ip -j -d link`` (the bond's ``active_slave``, each member's state and MII status) and
  ``/proc/net/bonding/bond0`` agree with ``nodenetctl failover status -o json``;
- rtnetlink notifications in the node namespace are the kernel's own record of every change
  of the bond's active member (one ``IFLA_EVENT_BONDING_FAILOVER`` each, whoever made it:
  miimon or nodenetd), so "nodenetd and miimon never fight" is an exact count; the kernel's
  own peer notifications are counted the same way (``IFLA_EVENT_NOTIFY_PEERS``);
- packet sockets on the switch ports count the gratuitous ARPs and unsolicited NAs arriving
  from the node, per port.

Timing under the kernel lab's emulation (TCG) is 5-20x slower than on a host, so every wait
is ``eventually`` on an observable condition with a generous timeout, and nothing asserts
how fast anything happened: only outcomes and counts.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nodenetd.kernel.netlink import MulticastSocket, in_netns, iter_attrs, split_messages
from nodenetd.tuning.journal import Journal
from tests.integration.daemon_lab import Daemon, eventually
from tests.lab.netns import Netns
from tests.lab.node import Node

pytestmark = [pytest.mark.kernel, pytest.mark.root]

PORTS = {"m0": "s0", "m1": "s1"}  # member on the node -> its port on the switch
BOND_V4, BOND_V6 = "192.0.2.2", "2001:db8::2"
PEER_V4, PEER_V6 = "192.0.2.1", "2001:db8::1"
FAR_V4 = "192.0.2.3"  # a host behind the switch (the partial-failure test)
WAIT = 90.0  # seconds: generous, for TCG on a busy host

# The group most tests run: ARP probes every 100 ms, rise 3, fall 5, replies counted for 300 ms
# (the emulated CPU stalls; and a carrier loss, reported through linkwatch under the RTNL lock,
# must still reach nodenetd before the probes give up on that path), failback after 1.5 s,
# three rounds of nodenetd's own peer notification 100 ms apart, and the kernel's own two.
OPTIONS = "{miimon: 50, updelay: 0, downdelay: 0, num_grat_arp: 2}"
NOTIFY_COUNT = 3
KERNEL_NOTIFY = 2  # num_grat_arp above


def group_yaml(*, failback: str = "preempt", preempt_delay: float = 1.5,
               options: str = OPTIONS, m0_probes: str = f"[{{arp: {PEER_V4}}}]",
               extra: str = "") -> str:
    return textwrap.dedent(f"""\
        failover:
          groups:
            - name: bond0
              type: bond
              bond: bond0
              options: {options}
              interval: 0.1
              timeout: 0.3
              fall: 5
              preempt_delay: {preempt_delay}
              failback: {failback}
              notify: {{count: {NOTIFY_COUNT}, interval: 0.1}}
        """) + textwrap.indent(textwrap.dedent(extra), " " * 6) + textwrap.indent(
        textwrap.dedent(f"""\
            members:
              - {{interface: m0, priority: 100, probes: {m0_probes}}}
              - {{interface: m1, priority: 50, probes: [{{arp: {PEER_V4}}}]}}
            """), " " * 6)


# -- sockets inside a namespace ----------------------------------------------------------------

# rtnetlink (include/uapi/linux/if_link.h, rtnetlink.h)
RTNLGRP_LINK = 1
RTM_NEWLINK = 16
IFLA_IFNAME, IFLA_LINKINFO, IFLA_EVENT = 3, 18, 44
IFLA_INFO_DATA = 2
IFLA_BOND_ACTIVE_SLAVE = 2
IFLA_EVENT_BONDING_FAILOVER, IFLA_EVENT_NOTIFY_PEERS = 3, 4


@dataclass(frozen=True)
class LinkEvent:
    ifname: str
    event: int | None
    active_slave: int | None  # the bond's, as the notification carried it (None: no active)


class KernelEvents:
    """The kernel's link notifications in the node namespace (an 8 MiB queue, read on
    demand): every change of bond0's active member and every peer notification it sent."""

    def __init__(self, ns: Netns) -> None:
        self._sock = in_netns(ns.name,
                              lambda: MulticastSocket(socket.NETLINK_ROUTE, [RTNLGRP_LINK]))
        self.seen: list[LinkEvent] = []
        self._mark = 0

    def close(self) -> None:
        self._sock.close()

    def poll(self) -> list[LinkEvent]:
        while (data := self._sock.recv()) is not None:
            for offset, length, mtype, _flags, _seq in split_messages(data):
                if mtype == RTM_NEWLINK:
                    self.seen.append(_link_event(data, offset, length))
        return self.seen

    @property
    def position(self) -> int:
        return len(self.poll())

    def mark(self) -> None:
        """Count from now on."""
        self._mark = self.position

    def since(self, event: int, position: int | None = None) -> list[LinkEvent]:
        """bond0's notifications of one kind since ``position`` (default: the mark)."""
        start = self._mark if position is None else position
        return [e for e in self.poll()[start:] if e.ifname == "bond0" and e.event == event]


def _link_event(data: bytes, offset: int, length: int) -> LinkEvent:
    ifname, event, active = "", None, None
    for atype, start, end in iter_attrs(data, offset + 32, offset + length):
        if atype == IFLA_IFNAME:
            ifname = bytes(data[start:end]).split(b"\0", 1)[0].decode()
        elif atype == IFLA_EVENT:
            (event,) = struct.unpack_from("=I", data, start)
        elif atype == IFLA_LINKINFO:
            for itype, istart, iend in iter_attrs(data, start, end):
                if itype != IFLA_INFO_DATA:
                    continue
                for btype, bstart, _bend in iter_attrs(data, istart, iend):
                    if btype == IFLA_BOND_ACTIVE_SLAVE:
                        (active,) = struct.unpack_from("=I", data, bstart)
    return LinkEvent(ifname, event, active)


ETH_P_ALL, ETH_P_ARP, ETH_P_IPV6 = 0x0003, 0x0806, 0x86DD
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_SOLICITED = 0x40


@dataclass
class Announcements:
    """Peer notifications that arrived at one switch port from the node, with the kernel's
    receive times: gratuitous ARPs for the bond's IPv4 address (sender IP == target IP) and
    unsolicited NAs for its IPv6 address."""

    garp: list[float] = field(default_factory=list)
    na: list[float] = field(default_factory=list)


class PortSniffer:
    """A packet socket on each switch port (16 MiB queue, read on demand) that keeps only
    frames arriving from the node, not those the bridge floods out of the port."""

    def __init__(self, switch: Netns) -> None:
        def make(port: str) -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK,
                                 socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((port, ETH_P_ALL))
            return sock

        self.socks = {port: in_netns(switch.name, lambda p=port: make(p))
                      for port in PORTS.values()}
        self.seen = {port: Announcements() for port in self.socks}

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def poll(self) -> dict[str, Announcements]:
        v4, v6 = socket.inet_aton(BOND_V4), socket.inet_pton(socket.AF_INET6, BOND_V6)
        for port, sock in self.socks.items():
            while True:
                try:
                    frame, ancillary, _flags, address = sock.recvmsg(4096, socket.CMSG_SPACE(16))
                except BlockingIOError:
                    break
                except OSError as exc:  # the port went down (reported once; nothing queued)
                    if exc.errno != errno.ENETDOWN:
                        raise
                    continue
                if address[2] == PACKET_OUTGOING:
                    continue
                stamps = [d for _lvl, kind, d in ancillary if kind == SO_TIMESTAMPNS]
                sec, nsec = struct.unpack("=qq", stamps[0][:16]) if stamps else (0, 0)
                at = sec + nsec / 1e9
                (ethertype,) = struct.unpack_from("!H", frame, 12)
                if ethertype == ETH_P_ARP and frame[28:32] == v4 and frame[38:42] == v4:
                    self.seen[port].garp.append(at)
                elif (ethertype == ETH_P_IPV6 and len(frame) >= 78 and frame[20] == 58
                        and frame[54] == ND_NEIGHBOR_ADVERT
                        and not frame[58] & ND_NA_FLAG_SOLICITED and frame[62:78] == v6):
                    self.seen[port].na.append(at)
        return self.seen

    def reset(self) -> None:
        self.poll()
        self.seen = {port: Announcements() for port in self.socks}


# -- the lab -----------------------------------------------------------------------------------


@dataclass
class BondLab:
    node: Node
    switch: Netns
    events: KernelEvents
    sniffer: PortSniffer
    daemon: Daemon | None = None

    @property
    def ns(self) -> Netns:
        return self.node.ns

    # -- nodenetd -----------------------------------------------------------------------

    def start(self, failover: str) -> Daemon:
        """Write the config, start nodenetd, wait until it is READY and bond0 has its
        addresses."""
        self.node.write_profile("none", "description: no tuning of its own\n")
        self.node.write_config(["none"], (
            f"daemon: {{control_socket: {self.node.root / 'ctl.sock'}, sysctl_interval: 3600, "
            f"resync_interval: 3600}}\n" + failover))
        self.daemon = Daemon.start(self.node, fork=True)  # no interpreter start under TCG
        self.daemon.wait_for("READY=1", timeout=300)
        self.address_bond()
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.proc.poll() is None:
            assert self.daemon.stop() == 0, self.daemon.log

    def address_bond(self) -> None:
        addresses = {(a["family"], a["local"]) for a in
                     self.ns.json("ip", "-j", "addr", "show", "dev", "bond0")[0]["addr_info"]}
        batch = ""
        if ("inet", BOND_V4) not in addresses:
            batch += f"addr add {BOND_V4}/24 dev bond0\n"
        if ("inet6", BOND_V6) not in addresses:
            batch += f"addr add {BOND_V6}/64 dev bond0 nodad\n"
        if batch:
            self.ns.run("ip", "-batch", "-", input=batch)

    def ctl(self, *args: str) -> tuple[int, str, str]:
        """nodenetctl's own main(), in this process (every nodenetctl process pays ~10 s of
        imports under TCG, minutes when the host is busy): the same parsing, control-socket
        request and rendering as the command."""
        from nodenetd.cli.main import main  # here: it costs minutes of imports under TCG

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--config", str(self.node.config)])
        return code, out.getvalue(), err.getvalue()

    def status(self) -> dict[str, Any]:
        code, out, err = self.ctl("failover", "status", "-o", "json")
        assert code == 0, err
        (group,) = json.loads(out)["groups"]
        return group

    def member(self, status: dict[str, Any], name: str) -> dict[str, Any]:
        return next(m for m in status["members"] if m["name"] == name)

    def log_lines(self, text: str) -> list[str]:
        assert self.daemon is not None
        return [line for line in self.daemon.log.splitlines() if text in line]

    # -- the kernel's view --------------------------------------------------------------

    def links(self) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link for link in self.ns.json("ip", "-j", "-d", "link", "show")}

    def kernel_active(self) -> str | None:
        """The bond's active member per ``ip -j -d link show dev bond0``."""
        return self.ns.link("bond0")["linkinfo"]["info_data"].get("active_slave")

    def notified_active(self) -> str | None:
        """The bond's active member as its latest link notification had it: what the kernel
        says without a request (polling ``ip`` takes the RTNL lock the bond's MII monitor and
        nodenetd need, and a process each time, which the emulated CPU can ill afford)."""
        bond = [e for e in self.events.poll() if e.ifname == "bond0"]
        return self.index_names().get(bond[-1].active_slave or 0) if bond else None

    def slave(self, links: dict[str, dict[str, Any]], member: str) -> tuple[str, str]:
        data = links[member]["linkinfo"]["info_slave_data"]
        return data["state"], data["mii_status"]

    def proc_bonding(self) -> dict[str, Any]:
        """/proc/net/bonding/bond0: the active slave and each slave's MII status."""
        text = self.ns.run("cat", "/proc/net/bonding/bond0").stdout
        active = re.search(r"^Currently Active Slave: (\S+)", text, re.M)
        slaves = dict(re.findall(r"^Slave Interface: (\S+)\nMII Status: (\S+)", text, re.M))
        return {"active": active.group(1) if active else None, "mii": slaves, "text": text}

    def index_names(self) -> dict[int, str]:
        """ifindex -> name of the members (read once: their indexes never change)."""
        if not self._names:
            self._names = {link["ifindex"]: name for name, link in self.links().items()
                           if name in PORTS}
        return self._names

    _names: dict[int, str] = field(default_factory=dict)

    def switches_since_mark(self, position: int | None = None) -> list[str]:
        """The bond's active member after each change the kernel announced since the mark
        (or since ``position`` of the kernel's events)."""
        names = self.index_names()
        return [names.get(e.active_slave or 0, "none")
                for e in self.events.since(IFLA_EVENT_BONDING_FAILOVER, position)]

    def kernel_notifications_since_mark(self) -> int:
        return len(self.events.since(IFLA_EVENT_NOTIFY_PEERS))

    # -- waiting ------------------------------------------------------------------------

    def wait_agreed(self, active: str, *, usable: tuple[str, ...] = ("m0", "m1"),
                    timeout: float = WAIT) -> dict[str, Any]:
        """Until nodenetd's active member and the kernel's are ``active`` (and the given
        members usable); returns nodenetd's status then. Asserts /proc agrees too."""

        def agreed() -> dict[str, Any] | None:
            status = self.status()
            if status["active"] != active or self.notified_active() != active:
                return None
            if not all(self.member(status, m)["usable"] for m in usable):
                return None
            return status

        status = eventually(agreed, timeout, interval=0.25)
        assert status, (f"nodenetd and the kernel never agreed on {active}: "
                        f"{self.status()}\nkernel: {self.kernel_active()}\n{self.daemon_log()}")
        assert self.kernel_active() == active
        assert self.proc_bonding()["active"] == active
        return status

    def daemon_log(self) -> str:
        return self.daemon.log if self.daemon else ""

    def port(self, member: str, state: str) -> None:
        """The switch port of MEMBER down (a pulled cable) or up."""
        self.switch.run("ip", "link", "set", PORTS[member], state)

    def wait_announced(self, port: str) -> Announcements:
        """Until nodenetd's notifier has run NOTIFY_COUNT more rounds since the mark and
        every notification on PORT is accounted for: one gratuitous ARP and one unsolicited
        NA per nodenetd round plus one each per peer notification the kernel announced, the
        same for half a second (the kernel's own rounds are one miimon apart). Returns what
        arrived on PORT since the mark."""

        def snapshot() -> tuple[int, int, int, int] | None:
            rounds = self.status()["notify"]["rounds"] - self.rounds_at_mark
            seen = self.sniffer.poll()[port]
            kernel = self.kernel_notifications_since_mark()
            if rounds < NOTIFY_COUNT or not len(seen.garp) == len(seen.na) == NOTIFY_COUNT + kernel:
                return None
            return rounds, kernel, len(seen.garp), len(seen.na)

        def stable() -> bool:
            first = snapshot()
            if first is None:
                return False
            time.sleep(0.5)
            return snapshot() == first

        assert eventually(stable, WAIT, interval=0.1), (
            f"on {port}: {self.sniffer.poll()[port]}, nodenetd {self.status()['notify']} "
            f"({self.rounds_at_mark} at the mark), kernel notifications "
            f"{self.kernel_notifications_since_mark()}")
        return self.sniffer.poll()[port]

    rounds_at_mark: int = 0

    def mark(self) -> None:
        """Count switches and notifications from now on."""
        self.events.mark()
        self.sniffer.reset()
        self.rounds_at_mark = self.status()["notify"]["rounds"] if self.daemon else 0


def build_topology(node: Netns, switch: Netns) -> None:
    """The veths and the switch's bridge, in two ``ip -batch`` runs (each ``ip`` costs ~0.5 s
    under TCG)."""
    node.run("ip", "-batch", "-", input="".join(
        f"link add {member} type veth peer name {port} netns {switch.name}\n"
        for member, port in PORTS.items()))
    switch.run("ip", "-batch", "-", input=(
        "link add br0 type bridge stp_state 0 forward_delay 0\n"
        + "".join(f"link set {port} master br0\nlink set {port} up\n" for port in PORTS.values())
        + f"link set br0 up\naddr add {PEER_V4}/24 dev br0\n"
        f"addr add {PEER_V6}/64 dev br0 nodad\n"))


@pytest.fixture
def lab(make_netns, tmp_path, request) -> Iterator[BondLab]:
    node, switch = make_netns("fo-node"), make_netns("fo-switch")
    build_topology(node, switch)
    events, sniffer = KernelEvents(node), PortSniffer(switch)
    lab = BondLab(Node(node, switch, tmp_path), switch, events, sniffer)
    try:
        yield lab
    finally:
        if lab.daemon is not None:
            lab.daemon.stop(signal.SIGKILL if lab.daemon.proc.poll() is None else 0)
            if out := os.environ.get("NODENETD_KERNEL_LAB_OUT"):  # the lab VM's artifacts
                Path(out, f"{request.node.name}.nodenetd.log").write_text(lab.daemon.log)
        events.close()
        sniffer.close()


def settled(lab: BondLab, failover: str | None = None) -> dict[str, Any]:
    """Start nodenetd (unless running) and wait for the steady state every scenario starts
    from: m0 active in the kernel and in nodenetd, both members usable; the counts start
    here."""
    if lab.daemon is None:
        lab.start(failover or group_yaml())
    lab.wait_agreed("m0")

    def notifier_idle() -> dict[str, Any] | None:  # the start's own announcements are done
        first = lab.status()
        time.sleep(0.5)
        status = lab.status()
        return status if status["notify"] == first["notify"] else None

    status = eventually(notifier_idle, WAIT)
    assert status, lab.status()
    lab.mark()
    return status


def flap(switch: Netns, port: str, *, hz: float, seconds: float) -> int:
    """Toggle PORT at HZ for SECONDS through one ``ip -batch`` process; the number of
    down/up cycles. It ends with the port up."""
    half = 0.5 / hz
    cycles = 0
    with subprocess.Popen(switch.exec_argv("ip", "-batch", "-"), stdin=subprocess.PIPE,
                          text=True) as batch:
        assert batch.stdin is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for state in ("down", "up"):
                batch.stdin.write(f"link set {port} {state}\n")
                batch.stdin.flush()
                time.sleep(half)
            cycles += 1
        batch.stdin.close()
    return cycles




def assert_announced(lab: BondLab, port: str, what: str) -> int:
    """Since the mark, PORT (the new active member's) got nodenetd's NOTIFY_COUNT rounds plus
    the kernel's own peer notifications, and the other port none; the kernel's count."""
    announced = lab.wait_announced(port)
    kernel = lab.kernel_notifications_since_mark()
    assert lab.status()["notify"]["rounds"] - lab.rounds_at_mark == NOTIFY_COUNT
    assert len(announced.garp) == len(announced.na) == NOTIFY_COUNT + kernel
    assert kernel <= KERNEL_NOTIFY
    other = next(p for p in PORTS.values() if p != port)
    assert lab.sniffer.poll()[other] == Announcements()
    gaps = [round(t - announced.garp[0], 3) for t in announced.garp]
    print(f"{what}: {kernel} kernel notification(s) + {NOTIFY_COUNT} of nodenetd's; "
          f"gratuitous ARPs on {port} at {gaps} s")
    return kernel


# -- scenarios ---------------------------------------------------------------------------------


def test_a_created_bond_fails_over_on_cable_pulls_and_gray_failures_and_fails_back(lab, netem):
    before = settled(lab)
    start = lab.events.position
    links = lab.links()
    data = links["bond0"]["linkinfo"]["info_data"]
    assert (data["mode"], data["miimon"], data["primary_reselect"], data["num_peer_notif"]) == (
        "active-backup", 50, "failure", KERNEL_NOTIFY)
    assert [links[m]["master"] for m in PORTS] == ["bond0", "bond0"]
    assert [links[m]["linkinfo"]["info_slave_data"]["prio"] for m in PORTS] == [100, 50]
    assert lab.log_lines("created bond bond0")
    assert [m["standing"] for m in before["members"]] == ["up", "up"]

    # A pulled cable: miimon and nodenetd both see it; the bond changes its member once.
    lab.port("m0", "down")

    status = lab.wait_agreed("m1", usable=("m1",))
    links = lab.links()
    assert (lab.slave(links, "m1"), lab.slave(links, "m0")) == (("ACTIVE", "UP"),
                                                                ("BACKUP", "DOWN"))
    assert lab.proc_bonding()["mii"] == {"m0": "down", "m1": "up"}
    m0 = lab.member(status, "m0")
    assert (m0["standing"], m0["link"]["carrier"]) == ("down", False)
    assert "(carrier)" in m0["last_transition"]
    assert len(lab.log_lines("m0: up -> down (carrier)")) == 1
    assert len(lab.log_lines("m0 -> m1 (failover)")) == 1
    assert_announced(lab, "s1", "cable pull")
    assert lab.switches_since_mark() == ["m1"]

    # The cable is back: m0 (priority 100) takes over again after preempt_delay, and it is
    # nodenetd that moves it (primary_reselect failure: the kernel would have stayed).
    lab.mark()
    lab.port("m0", "up")

    lab.wait_agreed("m0")
    (line,) = lab.log_lines("m1 -> m0 (failback)")
    assert "(the kernel already had it)" not in line
    assert float(re.search(r"usable for ([\d.]+) s \(preempt_delay 1.5 s\)", line)[1]) >= 1.5
    assert_announced(lab, "s0", "failback")
    assert lab.switches_since_mark() == ["m0"]

    # A gray failure: m0 keeps its carrier but nothing reaches it any more. miimon sees no
    # fault; nodenetd's probes do, and nodenetd moves the bond.
    lab.mark()
    netem.apply(lab.switch, "s0", loss_pct=100)

    status = lab.wait_agreed("m1", usable=("m1",))
    links = lab.links()
    assert lab.slave(links, "m0") == ("BACKUP", "UP")  # miimon alone would have stayed on m0
    assert lab.proc_bonding()["mii"] == {"m0": "up", "m1": "up"}
    m0 = lab.member(status, "m0")
    assert (m0["standing"], m0["link"]["carrier"]) == ("down", True)
    assert "(probe targets lost)" in m0["last_transition"]
    (probe,) = m0["probes"]
    assert (probe["kind"], probe["state"]) == ("arp", "down") and probe["failed"] >= 3
    assert len(lab.log_lines("m0: up -> down (probe targets lost)")) == 1
    lines = lab.log_lines("m0 -> m1 (failover)")
    assert len(lines) == 2 and "(the kernel already had it)" not in lines[1]
    assert_announced(lab, "s1", "gray failure")
    assert lab.switches_since_mark() == ["m1"]
    ping = lab.switch.run("ping", "-c", "3", "-i", "0.2", "-W", "2", BOND_V4, check=False)
    assert ping.returncode == 0, ping.stdout  # m1 carries the bond's traffic

    # The path heals: m0's probes answer again, failback after preempt_delay.
    lab.mark()
    netem.clear(lab.switch, "s0")

    status = lab.wait_agreed("m0")
    assert len(lab.log_lines("m1 -> m0 (failback)")) == 2
    assert lab.switches_since_mark() == ["m0"]
    # four changes in all, each made once: miimon and nodenetd never fought
    assert lab.switches_since_mark(start) == ["m1", "m0", "m1", "m0"]

    def grew(counter: str, key: str) -> int:
        return status["counters"][counter].get(key, 0) - before["counters"][counter].get(key, 0)

    assert (grew("switches", "failover"), grew("switches", "failback")) == (2, 2)
    assert (grew("transitions", "carrier"), grew("transitions", "probe-targets-lost")) == (1, 1)
    assert [m["standing"] for m in status["members"]] == ["up", "up"]
    lab.stop()
    assert " ERROR " not in lab.daemon_log()


def test_sticky_manual_switch_hold_release_and_recovery_from_both_members_down(lab):
    settled(lab, group_yaml(failback="sticky"))
    start = lab.events.position

    # sticky: a pulled cable fails over, and the bond stays on m1 when m0 is back
    lab.port("m0", "down")
    lab.wait_agreed("m1", usable=("m1",))
    lab.port("m0", "up")

    def m0_usable_for_twice_preempt_delay() -> dict[str, Any] | None:
        status = lab.status()
        m0 = lab.member(status, "m0")
        return status if m0["usable"] and m0["since"] >= 3.0 else None

    status = eventually(m0_usable_for_twice_preempt_delay, WAIT, interval=0.2)
    assert status, lab.status()
    assert status["active"] == lab.kernel_active() == "m1"
    assert "usable (sticky)" in status["last_decision"]
    assert "failback" not in status["counters"]["switches"]
    assert lab.switches_since_mark() == ["m1"]

    # a manual switch overrules sticky, and is announced like any switch
    lab.mark()
    code, out, err = lab.ctl("failover", "switch", "bond0", "m0")

    assert code == 0, err
    assert "m1 -> m0 (manual)" in out
    status = lab.wait_agreed("m0")
    assert status["override"] == {"switch": "m0", "remaining": None}
    assert_announced(lab, "s0", "manual switch")
    assert lab.switches_since_mark() == ["m0"]

    # hold, then the held active member dies: the kernel's carrier fast path moves the bond
    # (it must), nodenetd switches nothing and says so
    lab.mark()
    code, _, err = lab.ctl("failover", "hold", "bond0")
    assert code == 0, err
    assert lab.status()["override"] == {"hold": True}
    lab.port("m0", "down")

    def kernel_moved_and_m0_unusable() -> dict[str, Any] | None:
        status = lab.status()
        usable = lab.member(status, "m0")["usable"]
        return status if not usable and lab.notified_active() == "m1" else None

    status = eventually(kernel_moved_and_m0_unusable, WAIT, interval=0.25)
    assert status, lab.status()
    assert (status["active"], status["active_usable"]) == ("m0", False)
    assert status["override"] == {"hold": True}
    assert "held by operator; m0 is NOT usable" in status["last_decision"]
    code, text, _ = lab.ctl("failover", "status")
    assert code == 0 and "HELD by operator" in text
    assert len(lab.log_lines("m0 -> m1")) == 1  # the cable pull's, before the hold
    assert lab.switches_since_mark() == ["m1"]  # the kernel's own

    # release: nodenetd decides again and finds the kernel already where it should be
    lab.mark()
    code, out, err = lab.ctl("failover", "release", "bond0")

    assert code == 0, err
    status = lab.wait_agreed("m1", usable=("m1",))
    assert status["override"] is None
    line = lab.log_lines("m0 -> m1 (failover)")[-1]
    assert "released by operator" in line and "(the kernel already had it)" in line
    assert lab.switches_since_mark() == []

    # both members down (m0 still is): nowhere to go; nodenetd keeps m1 and says so
    lab.mark()
    lab.port("m1", "down")

    def group_down() -> dict[str, Any] | None:
        status = lab.status()
        usable = [m["usable"] for m in status["members"]]
        return status if usable == [False, False] and lab.notified_active() is None else None

    status = eventually(group_down, WAIT, interval=0.25)
    assert status, lab.status()
    assert lab.kernel_active() is None
    assert (status["active"], status["active_usable"]) == ("m1", False)
    assert "no usable member" in status["last_decision"]
    proc = lab.proc_bonding()
    assert (proc["active"], proc["mii"]) == ("None", {"m0": "down", "m1": "down"})

    # the first member back carries the bond at once (the kernel), nodenetd follows
    lab.port("m0", "up")

    status = lab.wait_agreed("m0", usable=("m0",))
    assert lab.slave(lab.links(), "m0") == ("ACTIVE", "UP")
    assert lab.member(status, "m1")["standing"] == "down"
    line = lab.log_lines("m1 -> m0 (failover)")[-1]
    assert "(the kernel already had it)" in line
    assert lab.switches_since_mark() == ["m0"]
    assert lab.switches_since_mark(start) == ["m1", "m0", "m1", "m0"]
    assert status["counters"]["switches"].get("manual", 0) == 1
    lab.stop()
    assert " ERROR " not in lab.daemon_log()


def test_an_adopted_bond_keeps_its_active_member_and_restore_puts_its_options_back(lab):
    lab.ns.run("ip", "-batch", "-", input=(
        "link add bond0 type bond mode active-backup miimon 50 primary_reselect always\n"
        "link set m0 master bond0\nlink set m1 master bond0\n"
        "link set bond0 type bond primary m0\nlink set bond0 up\n"))
    lab.address_bond()

    def kernel_settled() -> bool:
        links = lab.links()
        return (lab.kernel_active() == "m0"
                and [lab.slave(links, m)[1] for m in PORTS] == ["UP", "UP"])

    assert eventually(kernel_settled, WAIT, interval=0.3)
    lab.mark()  # before nodenetd starts: adopting must move nothing

    lab.start(group_yaml())
    status = lab.wait_agreed("m0")

    assert lab.log_lines("adopted bond bond0 (active m0)")
    links = lab.links()
    data = links["bond0"]["linkinfo"]["info_data"]
    assert (data["primary"], data["primary_reselect"], data["num_peer_notif"]) == (
        "m0", "failure", KERNEL_NOTIFY)
    assert [links[m]["linkinfo"]["info_slave_data"]["prio"] for m in PORTS] == [100, 50]
    assert len(lab.log_lines("bond0 bond.primary_reselect: always -> failure")) == 1
    journal = Journal(lab.node.state_dir).originals.values()
    assert {(o.device, o.key): o.value for o in journal if o.kind == "bond"} == {
        ("bond0", "primary_reselect"): "always", ("bond0", "num_peer_notif"): 1}
    code, out, err = lab.ctl("plan", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["changes"] == []  # in sync: nothing left to apply
    assert lab.switches_since_mark() == []  # adopting moved no traffic
    assert status["counters"]["switches"] == {}

    lab.stop()
    proc = lab.ns.nodenetctl_in_process("restore", "--config", str(lab.node.config))

    assert proc.returncode == 0, proc.stdout + proc.stderr
    links = lab.links()
    data = links["bond0"]["linkinfo"]["info_data"]
    assert (data["primary"], data["primary_reselect"], data["num_peer_notif"]) == (
        "m0", "always", 1)
    assert [links[m]["linkinfo"]["info_slave_data"]["prio"] for m in PORTS] == [0, 0]
    assert lab.kernel_active() == "m0" and lab.switches_since_mark() == []


def test_a_flapping_member_is_damped_and_switches_stay_bounded(lab):
    # m0 is judged on its link alone, so each carrier loss the bond sees is one flap;
    # damping with a 2 s half-life, so it is released within this test.
    settled(lab, group_yaml(m0_probes="[]", extra="damping: {half_life: 2, max_suppress: 8}\n"))

    cycles: list[int] = []
    flapper = threading.Thread(target=lambda: cycles.append(
        flap(lab.switch, "s0", hz=10, seconds=3)))
    flapper.start()
    try:
        def suppressed() -> dict[str, Any] | None:
            status = lab.status()
            damping = lab.member(status, "m0")["damping"]
            return status if damping["suppressed"] else None

        status = eventually(suppressed, WAIT, interval=0.2)
    finally:
        flapper.join()
    assert status, lab.status()
    m0 = lab.member(status, "m0")
    assert m0["standing"] == "suppressed" and m0["damping"]["penalty"] > 2000
    assert m0["damping"]["flaps"] >= 3
    assert lab.log_lines("m0: ") and lab.log_lines("-> suppressed (damping)")

    def storm_over() -> dict[str, Any] | None:  # m0's link is back for good
        status = lab.status()
        m0 = lab.member(status, "m0")
        return status if m0["link"]["carrier"] and lab.slave(lab.links(), "m0")[1] == "UP" \
            else None

    status = eventually(storm_over, WAIT, interval=0.3)
    assert status, lab.status()
    flaps = lab.member(status, "m0")["damping"]["flaps"]
    if lab.member(status, "m0")["standing"] == "suppressed":  # still held out: m1 carries
        assert status["active"] == lab.kernel_active() == "m1"
        ping = lab.switch.run("ping", "-c", "3", "-i", "0.2", "-W", "2", BOND_V4, check=False)
        assert ping.returncode == 0, ping.stdout
    assert lab.switches_since_mark() == ["m1"]  # one switch for the whole storm

    # released once the penalty has decayed, then failback after preempt_delay
    status = lab.wait_agreed("m0")
    assert lab.switches_since_mark() == ["m1", "m0"]
    assert len(lab.log_lines("m1 -> m0 (failback)")) == 1
    print(f"flapping: {cycles} cycles, {flaps} flaps seen by nodenetd, "
          f"{lab.member(status, 'm0')['damping']}")


def test_partly_failing_targets_count_by_all_any_and_quorum(lab, make_netns, netem):
    """m0 probes two targets: the switch itself and a far host behind the bridge, whose
    replies netem drops (a partial gray failure: carrier up, one target lost). One daemon,
    the group's ``combine`` changed by reloads: ``all`` and ``quorum: 2`` fail over, ``any``
    keeps m0 (1 of 2 targets up).

    Loss, not delay: ARP replies carry no sequence number, so a reply that a constant delay
    pushes past the timeout still lands in the window of a later probe (an RTT of delay modulo
    the interval). A path that only gets slow is seen by ICMP probes, whose replies carry
    their request's sequence number."""
    far = make_netns("fo-far")
    lab.switch.run("ip", "link", "add", "h0", "type", "veth", "peer", "name", "far0", "netns",
                   far.name)
    lab.switch.run("ip", "-batch", "-", input="link set h0 master br0\nlink set h0 up\n")
    far.run("ip", "-batch", "-", input=f"addr add {FAR_V4}/24 dev far0\nlink set far0 up\n")
    both = f"[{{arp: {PEER_V4}}}, {{arp: {FAR_V4}}}]"

    def config(combine: str) -> str:  # m0's own combine (m1 has one target)
        return group_yaml(m0_probes=f"{both}, combine: {combine}")

    settled(lab, config("all"))
    netem.apply(far, "far0", loss_pct=100)  # the far host's replies never come back

    status = lab.wait_agreed("m1", usable=("m1",))
    m0 = lab.member(status, "m0")
    assert (m0["link"]["carrier"], m0["standing"]) == (True, "down")
    states = {p["target"]: p["state"] for p in m0["probes"]}
    assert states == {PEER_V4: "up", FAR_V4: "down"}, m0["probes"]
    assert lab.log_lines("m0: up -> down (probe targets lost)")
    assert lab.switches_since_mark() == ["m1"]

    def reload(combine: str) -> None:
        lab.node.config.write_text(re.sub(r"combine: (all|any|\{quorum: 2\})",
                                          f"combine: {combine}", lab.node.config.read_text()))
        code, out, err = lab.ctl("reload")
        assert code == 0, out + err

    lab.mark()
    reload("any")  # one target of two is enough: m0 is usable again and takes over
    status = lab.wait_agreed("m0", usable=("m0", "m1"))
    assert "1 of 2 targets up" in lab.member(status, "m0")["path"]
    assert lab.switches_since_mark() == ["m0"]

    lab.mark()
    reload("{quorum: 2}")
    status = lab.wait_agreed("m1", usable=("m1",))
    assert not lab.member(status, "m0")["usable"]
    assert lab.switches_since_mark() == ["m1"]

    lab.mark()
    netem.clear(far, "far0")  # the far host answers in time again: failback
    lab.wait_agreed("m0")
    assert lab.switches_since_mark() == ["m0"]
    lab.stop()
    assert " ERROR " not in lab.daemon_log()
