"""Every bond option failover needs, set through nodenetd and read back twice: through
nodenetd's own netlink decoding and through ``ip -j -d link show`` (iproute2, the independent
witness). Then what the options do on a real kernel bond: primary + primary_reselect=failure
keeps a manual choice, num_peer_notif/peer_notif_delay shape the gratuitous ARPs a peer sees,
and a no-op change sends nothing.

The node's bond has two veth members whose peers are ports in a 'switch' namespace; pulling a
switch port down drops the member's carrier. Gratuitous ARPs are counted on the switch port with
a packet socket opened inside the switch namespace.
"""

from __future__ import annotations

import dataclasses
import itertools
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from nodenetd.errors import Refused
from nodenetd.kernel.bond import (
    ArpValidate,
    BondAdapter,
    BondMode,
    BondOptions,
    BondStatus,
    FailOverMac,
    MemberState,
    MiiStatus,
    PrimaryReselect,
)
from nodenetd.kernel.netlink import MulticastSocket, in_netns, iter_attrs, split_messages
from tests.lab.netns import Netns

pytestmark = [pytest.mark.kernel, pytest.mark.root]

MEMBERS = {"m0": "s0", "m1": "s1"}  # member on the node -> its port on the switch
BOND_ADDR = "198.51.100.1"  # TEST-NET-2, on the bond

# BondOptions field -> the key iproute2 prints under linkinfo.info_data
IP_KEYS = {
    "mode": "mode",
    "miimon": "miimon",
    "updelay": "updelay",
    "downdelay": "downdelay",
    "peer_notif_delay": "peer_notify_delay",
    "primary": "primary",
    "primary_reselect": "primary_reselect",
    "active_slave": "active_slave",
    "fail_over_mac": "fail_over_mac",
    "num_peer_notif": "num_peer_notif",
    "arp_interval": "arp_interval",
    "arp_ip_target": "arp_ip_target",
    "arp_validate": "arp_validate",
    "arp_all_targets": "arp_all_targets",
    "arp_missed_max": "arp_missed_max",
    "ns_ip6_target": "ns_ip6_target",
    "resend_igmp": "resend_igmp",
}


def witness_options(info_data: dict[str, Any]) -> BondOptions:
    """The bond's options as iproute2 prints them, in nodenetd's form."""
    values: dict[str, Any] = {}
    for field, key in IP_KEYS.items():
        value = info_data.get(key)
        if field in ("arp_ip_target", "ns_ip6_target"):
            value = tuple(value or ())  # iproute2 leaves an empty list out
        elif field == "arp_validate" and value is None:
            value = "none"  # iproute2 prints none as null
        values[field] = value
    return BondOptions(**values)


def witness_member(slave_data: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": slave_data["state"].lower(),
        "mii_status": slave_data["mii_status"].lower(),
        "link_failure_count": slave_data["link_failure_count"],
        "perm_hwaddr": slave_data["perm_hwaddr"],
        "prio": slave_data.get("prio"),
    }


# rtnetlink: an RTM_NEWLINK carries IFLA_EVENT (44) when a netdev notifier caused it
# (include/uapi/linux/if_link.h: enum IFLA_EVENT_*)
RTNLGRP_LINK = 1
IFLA_EVENT = 44
IFLA_EVENT_NOTIFY_PEERS = 4
IFLA_EVENT_BONDING_OPTIONS = 6


def link_events(ns: Netns) -> MulticastSocket:
    """A socket in NS subscribed to link notifications."""
    return in_netns(ns.name, lambda: MulticastSocket(socket.NETLINK_ROUTE, [RTNLGRP_LINK]))


def drain_events(events: MulticastSocket) -> list[tuple[int, int | None]]:
    """(ifindex, IFLA_EVENT or None) of every queued link notification."""
    found = []
    while (data := events.recv()) is not None:
        for offset, length, mtype, _flags, _seq in split_messages(data):
            if mtype != 16:  # RTM_NEWLINK
                continue
            (index,) = struct.unpack_from("=i", data, offset + 20)
            event = None
            for atype, start, _end in iter_attrs(data, offset + 32, offset + length):
                if atype == IFLA_EVENT:
                    (event,) = struct.unpack_from("=I", data, start)
            found.append((index, event))
    return found


ETH_P_ARP = 0x0806


SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD); also its cmsg type
_TIMESPEC = struct.Struct("=qq")


def garp_sniffer(ns: Netns, dev: str) -> socket.socket:
    """A packet socket on DEV inside NS that sees every ARP frame arriving there, stamped by
    the kernel when it arrived (userspace's own clock would bunch frames read late)."""

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((dev, ETH_P_ARP))
        return sock

    return in_netns(ns.name, make)


def gratuitous_arps(sock: socket.socket, address: str, seconds: float) -> list[float]:
    """Kernel arrival times (seconds) of the gratuitous ARPs for ADDRESS (sender IP == target
    IP) seen within SECONDS. Only their differences mean anything."""
    packed = socket.inet_aton(address)
    seen: list[float] = []
    deadline = time.monotonic() + seconds
    sock.settimeout(0.05)
    while time.monotonic() < deadline:
        try:
            frame, ancillary, _flags, _addr = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except TimeoutError:
            continue
        arp = frame[14:]
        if len(arp) >= 28 and arp[14:18] == packed and arp[24:28] == packed:
            stamps = [data for _level, kind, data in ancillary if kind == SO_TIMESTAMPNS]
            sec, nsec = _TIMESPEC.unpack(stamps[0][:16])
            seen.append(sec + nsec / 1e9)
    return seen


# -- the lab ----------------------------------------------------------------------------------


@dataclass
class Lab:
    node: Netns
    switch: Netns
    bond: BondAdapter

    def links(self) -> dict[str, dict]:
        """``ip -j -d link show`` inside the node namespace, by name: one witness call."""
        return {link["ifname"]: link for link in self.node.json("ip", "-j", "-d", "link", "show")}

    def witness(self, name: str) -> dict:
        """``ip -j -d link show NAME`` inside the node namespace."""
        return self.node.link(name)

    def info_data(self, name: str = "bond0") -> dict:
        return self.witness(name)["linkinfo"]["info_data"]

    def wait_for(
        self, what: str, check: Callable[[BondStatus], bool], timeout: float = 15.0
    ) -> BondStatus:
        """Poll the adapter until ``check`` holds (monotonic deadline); the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.bond.status("bond0")
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {status}")
            time.sleep(0.05)

    def port(self, member: str, state: str) -> None:
        """Switch port of MEMBER down or up: the member's carrier follows."""
        self.switch.run("ip", "link", "set", MEMBERS[member], state)

    def assert_agrees_with_ip(self, name: str = "bond0", *, settled: bool = True) -> BondStatus:
        """nodenetd's reading of every option and member equals iproute2's. While the members
        are in flux (``settled=False``), only the options that do not follow them."""
        status = self.bond.status(name)
        links = self.links()
        ours, witness = status.options, witness_options(links[name]["linkinfo"]["info_data"])
        if not settled:
            ours = dataclasses.replace(ours, active_slave=None)
            witness = dataclasses.replace(witness, active_slave=None)
        assert ours == witness
        for member in status.members if settled else ():
            slave = links[member.name]["linkinfo"]["info_slave_data"]
            assert witness_member(slave) == {
                "state": member.state,
                "mii_status": member.mii_status,
                "link_failure_count": member.link_failure_count,
                "perm_hwaddr": member.perm_hwaddr,
                "prio": member.prio,
            }
        return status


@pytest.fixture(scope="module")
def world() -> Iterator[Lab]:
    """The namespaces and cables, built once for this module (each ``ip`` costs ~0.5 s under
    the lab's emulation); every test gets them back clean from ``lab``."""
    node, switch = Netns.create("node"), Netns.create("switch")
    try:
        for member, port in MEMBERS.items():
            node.veth(member, port, peer_ns=switch)
        with BondAdapter(netns=node.name) as adapter:
            yield Lab(node, switch, adapter)
    finally:
        node.delete()
        switch.delete()


@pytest.fixture
def lab(world: Lab) -> Iterator[Lab]:
    """The module's lab; afterwards no bond, members and switch ports up (deleting the bond
    releases the members: their prio goes with it, the kernel restores their MACs)."""
    yield world
    batch = "".join(f"link set {member} up\n" for member in MEMBERS)
    world.node.run("ip", "-force", "-batch", "-", input=f"link del bond0\n{batch}", check=False)
    ports = "".join(f"link set {port} up\n" for port in MEMBERS.values())
    world.switch.run("ip", "-force", "-batch", "-", input=ports, check=False)


@pytest.fixture
def running(lab: Lab) -> Lab:
    """bond0: active-backup, miimon 50, both members up, m0 active."""
    lab.bond.create("bond0", BondOptions(miimon=50))
    for member in MEMBERS:
        lab.bond.enslave("bond0", member)
    lab.bond.set_up("bond0")
    lab.wait_for(
        "an active member and both members up",
        lambda s: s.active_member is not None
        and all(m.mii_status is MiiStatus.UP for m in s.members),
    )
    if lab.bond.status("bond0").active_member != "m0":
        lab.bond.set_active("bond0", "m0")
    return lab


# -- create, adopt ----------------------------------------------------------------------------


def test_create_sets_every_mii_monitor_option_in_one_go(lab):
    options = BondOptions(
        miimon=100,
        updelay=200,
        downdelay=300,
        peer_notif_delay=400,
        primary_reselect="better",
        fail_over_mac="active",
        num_peer_notif=4,
        resend_igmp=3,
        arp_missed_max=5,
        arp_ip_target=("192.0.2.1", "192.0.2.2"),
        arp_all_targets="all",
        ns_ip6_target=("2001:db8::1", "2001:db8::2"),
    )

    status = lab.bond.create("bond0", options)

    assert status.mode is BondMode.ACTIVE_BACKUP  # create's default
    assert {k: getattr(status.options, k) for k in options.given()} == options.given()
    assert status == lab.assert_agrees_with_ip()
    data = lab.info_data()
    assert (data["peer_notify_delay"], data["arp_missed_max"]) == (400, 5)
    assert data["ns_ip6_target"] == ["2001:db8::1", "2001:db8::2"]
    assert (data["fail_over_mac"], data["primary_reselect"]) == ("active", "better")
    assert (data["num_peer_notif"], data["resend_igmp"]) == (4, 3)


def test_create_sets_every_arp_monitor_option_in_one_go(lab):
    options = BondOptions(
        arp_interval=100,
        arp_ip_target=("192.0.2.1",),
        ns_ip6_target=("2001:db8::7",),
        arp_validate="all",
        arp_all_targets="all",
        arp_missed_max=3,
    )

    status = lab.bond.create("bond0", options)

    assert status.options.miimon == 0  # no miimon default when the ARP monitor is asked for
    assert (status.options.arp_interval, status.options.arp_validate) == (100, ArpValidate.ALL)
    lab.assert_agrees_with_ip()
    data = lab.info_data()
    assert (data["arp_interval"], data["arp_validate"], data["arp_missed_max"]) == (100, "all", 3)
    assert data["arp_ip_target"] == ["192.0.2.1"]
    assert data["ns_ip6_target"] == ["2001:db8::7"]


def test_create_defaults_to_active_backup_with_a_link_monitor(lab):
    status = lab.bond.create("bond0")

    # the kernel's own default for a new bond is balance-rr with miimon 0: no failure detection
    assert (status.mode, status.options.miimon) == (BondMode.ACTIVE_BACKUP, 100)
    data = lab.info_data()
    assert (data["mode"], data["miimon"]) == ("active-backup", 100)


def test_create_refuses_options_the_kernel_would_refuse_or_bend(lab):
    with pytest.raises(Refused) as err:
        lab.bond.create("bond0", BondOptions(miimon=100, updelay=250))
    assert err.value.setting == "bond.updelay"
    with pytest.raises(Refused) as err:
        lab.bond.create("bond0", BondOptions(arp_validate="all"))  # with the default miimon
    assert err.value.setting == "bond.arp_validate"

    assert lab.node.run("ip", "link", "show", "bond0", check=False).returncode != 0


def test_adopt_reads_a_bond_that_ip_made(lab):
    lab.node.run("ip", "-batch", "-", input="""
        link add bond0 type bond mode active-backup miimon 100 updelay 200 peer_notify_delay 300
        link set bond0 type bond num_grat_arp 2 arp_missed_max 4 primary_reselect failure
        link set bond0 type bond ns_ip6_target 2001:db8::9
        link set m0 down
        link set m0 master bond0
        link set m1 down
        link set m1 master bond0
        link set bond0 up
        link set m1 type bond_slave prio 7
        link set bond0 type bond primary m1
    """)
    lab.wait_for("both members up", lambda s: all(m.mii_status is MiiStatus.UP for m in s.members))

    status = lab.bond.adopt("bond0")

    assert status == lab.assert_agrees_with_ip()
    assert (status.options.primary, status.options.primary_reselect) == ("m1", "failure")
    assert (status.options.peer_notif_delay, status.options.num_peer_notif) == (300, 2)
    assert status.options.ns_ip6_target == ("2001:db8::9",)
    assert (status.member("m0").prio, status.member("m1").prio) == (0, 7)
    assert [m.name for m in status.members] == ["m0", "m1"]


def test_adopting_a_bond_that_is_not_active_backup_is_refused(lab):
    lab.node.run("ip", "link", "add", "bond0", "type", "bond", "mode", "balance-rr")

    with pytest.raises(Refused) as err:
        lab.bond.adopt("bond0")

    assert (err.value.target, err.value.setting) == ("bond0", "adopt bond")
    assert "mode balance-rr" in err.value.reason


# -- live changes -----------------------------------------------------------------------------


def test_every_live_option_changes_on_a_running_bond_and_reads_back(running):
    lab = running
    options = BondOptions(
        updelay=100,
        downdelay=150,
        peer_notif_delay=200,
        primary="m1",
        primary_reselect="failure",
        num_peer_notif=3,
        resend_igmp=5,
        arp_missed_max=4,
        arp_ip_target=("192.0.2.1", "192.0.2.2"),
        arp_all_targets="all",
        ns_ip6_target=("2001:db8::1", "2001:db8::2", "2001:db8::3"),
    )

    changed = lab.bond.set_options("bond0", options)

    assert set(changed) == set(options.given())
    status = lab.assert_agrees_with_ip()
    assert {k: getattr(status.options, k) for k in options.given()} == options.given()
    data = lab.info_data()
    assert (data["updelay"], data["downdelay"], data["peer_notify_delay"]) == (100, 150, 200)
    assert (data["primary"], data["primary_reselect"]) == ("m1", "failure")
    assert (data["num_peer_notif"], data["resend_igmp"], data["arp_missed_max"]) == (3, 5, 4)
    assert data["ns_ip6_target"] == ["2001:db8::1", "2001:db8::2", "2001:db8::3"]

    # and the lists clear
    lab.bond.set_options("bond0", BondOptions(arp_ip_target=(), ns_ip6_target=()))
    assert lab.assert_agrees_with_ip().options.ns_ip6_target == ()
    assert "ns_ip6_target" not in lab.info_data()


def test_switching_the_link_monitor_to_arp_and_back(running):
    lab = running
    lab.bond.set_options("bond0", BondOptions(updelay=100, peer_notif_delay=150))

    lab.bond.set_options(
        "bond0",
        BondOptions(
            miimon=0,
            arp_interval=100,
            arp_ip_target=("198.51.100.2",),
            arp_validate="active",
            arp_all_targets="any",
        ),
    )

    # the ARP monitor finds no target and takes the members down meanwhile
    status = lab.assert_agrees_with_ip(settled=False)
    assert (status.options.miimon, status.options.arp_interval) == (0, 100)
    assert status.options.arp_validate is ArpValidate.ACTIVE
    data = lab.info_data()
    assert (data["arp_validate"], data["arp_interval"]) == ("active", 100)

    lab.bond.set_options("bond0", BondOptions(arp_interval=0, miimon=50))

    lab.wait_for(
        "the MII monitor to bring both members back",
        lambda s: s.active_member is not None
        and all(m.mii_status is MiiStatus.UP for m in s.members),
    )
    status = lab.assert_agrees_with_ip()
    assert (status.options.miimon, status.options.arp_interval) == (50, 0)
    # the delays were zeroed on the way out, so none of the old ticks came back
    assert (status.options.updelay, status.options.peer_notif_delay) == (0, 0)


def test_a_miimon_change_keeps_the_delays_in_milliseconds(running):
    lab = running
    lab.bond.set_options("bond0", BondOptions(updelay=200, downdelay=100, peer_notif_delay=150))

    changed = lab.bond.set_options("bond0", BondOptions(miimon=25))

    assert changed == ("miimon", "updelay", "downdelay", "peer_notif_delay")
    data = lab.info_data()
    assert (data["miimon"], data["updelay"], data["downdelay"], data["peer_notify_delay"]) == (
        25, 200, 100, 150,
    )  # fmt: skip
    lab.assert_agrees_with_ip()
    # what the kernel does alone: ticks stay, milliseconds scale with miimon
    lab.node.run("ip", "link", "set", "bond0", "type", "bond", "miimon", "50")
    data = lab.info_data()
    assert (data["updelay"], data["downdelay"]) == (400, 200)


def test_what_the_kernel_would_bend_is_refused_and_nothing_changes(running):
    lab = running
    before = lab.info_data()

    with pytest.raises(Refused) as err:  # the kernel would round it down, with a log line
        lab.bond.set_options("bond0", BondOptions(num_peer_notif=5, updelay=120))
    assert (err.value.target, err.value.setting) == ("bond0", "bond.updelay")
    assert "round it down to 100 ms" in err.value.reason
    with pytest.raises(Refused) as err:  # the kernel would silently turn miimon off
        lab.bond.set_options("bond0", BondOptions(arp_interval=100))
    assert err.value.setting == "bond.arp_interval"
    assert "exclude each other" in err.value.reason
    with pytest.raises(Refused) as err:  # the kernel would take any interface, silently
        lab.bond.set_options("bond0", BondOptions(primary="lo"))
    assert "lo is not a member of bond0" in err.value.reason

    assert lab.info_data() == before


def test_a_change_that_is_no_change_sends_nothing(running):
    """No RTM_NEWLINK for the bond or its members: nothing was written (every accepted write,
    even of an unchanged value, makes rtnetlink announce the bond again)."""
    lab = running
    lab.bond.set_options("bond0", BondOptions(num_peer_notif=2, primary="m0"))
    current = lab.bond.status("bond0")
    ours = {current.index, *(m.index for m in current.members)}
    devices = ("bond0", *MEMBERS)
    # no IPv6 autoconf chatter on these links meanwhile
    lab.node.run("sysctl", "-qw", *(f"net.ipv6.conf.{dev}.disable_ipv6=1" for dev in devices))
    events = link_events(lab.node)
    try:
        # Settle first: after the setup the kernel announces the bond once more on its own,
        # without any IFLA_EVENT, 0.3-0.7 s later under the lab's emulation (seen every run).
        quiet_since, deadline = time.monotonic(), time.monotonic() + 10
        while time.monotonic() - quiet_since < 1.5 and time.monotonic() < deadline:
            if [e for e in drain_events(events) if e[0] in ours]:
                quiet_since = time.monotonic()
            time.sleep(0.02)

        assert lab.bond.set_options("bond0", current.options) == ()
        assert lab.bond.set_options("bond0", BondOptions(num_peer_notif=2, miimon=50)) == ()
        time.sleep(0.3)
        assert [e for e in drain_events(events) if e[0] in ours] == []

        assert lab.bond.set_options("bond0", BondOptions(num_peer_notif=3)) == ("num_peer_notif",)
        time.sleep(0.3)
        assert current.index in [index for index, _ in drain_events(events)]  # the control
    finally:
        events.close()
        keys = [f"net.ipv6.conf.{member}.disable_ipv6=0" for member in MEMBERS]
        lab.node.run("sysctl", "-qw", *keys)  # the members outlive this test


def test_the_mode_changes_only_on_a_bond_that_is_down_and_empty(running):
    lab = running

    with pytest.raises(Refused) as err:
        lab.bond.set_options("bond0", BondOptions(mode="balance-xor"))
    assert err.value.setting == "bond.mode"
    assert "it has m0, m1" in err.value.reason
    with pytest.raises(Refused) as err:
        lab.bond.set_options("bond0", BondOptions(fail_over_mac="follow"))
    assert err.value.setting == "bond.fail_over_mac"
    assert lab.info_data()["fail_over_mac"] == "none"

    for member in MEMBERS:
        lab.bond.release(member)
    with pytest.raises(Refused) as err:
        lab.bond.set_options("bond0", BondOptions(mode="balance-xor"))
    assert "needs the bond down" in err.value.reason
    assert lab.info_data()["mode"] == "active-backup"

    lab.bond.set_down("bond0")
    lab.bond.set_options("bond0", BondOptions(mode="balance-xor", fail_over_mac="follow"))

    status = lab.assert_agrees_with_ip()
    data = lab.info_data()
    assert (data["mode"], data["fail_over_mac"]) == ("balance-xor", "follow")
    assert (status.mode, status.options.fail_over_mac) == (BondMode.BALANCE_XOR, FailOverMac.FOLLOW)


# -- members ----------------------------------------------------------------------------------


def test_member_prio_and_state_read_back(running):
    lab = running

    lab.bond.set_member_prio("m0", 10)
    lab.bond.set_member_prio("m1", -5)

    status = lab.assert_agrees_with_ip()
    assert (status.member("m0").prio, status.member("m1").prio) == (10, -5)
    assert lab.witness("m1")["linkinfo"]["info_slave_data"]["prio"] == -5
    m0 = status.member("m0")
    assert (m0.state, m0.mii_status) == (MemberState.ACTIVE, MiiStatus.UP)
    # fail_over_mac none: the bond took its first member's MAC and gave it to the other
    assert lab.witness("bond0")["address"] == m0.perm_hwaddr == lab.witness("m0")["address"]
    assert lab.witness("m1")["address"] == m0.perm_hwaddr != status.member("m1").perm_hwaddr


def test_active_slave_as_an_option_and_clearing_it(running):
    lab = running

    assert lab.bond.set_options("bond0", BondOptions(active_slave="m1")) == ("active_slave",)
    assert lab.info_data()["active_slave"] == "m1"
    assert lab.bond.status("bond0").member("m1").state is MemberState.ACTIVE

    lab.bond.set_active("bond0", None)  # cleared: the kernel reselects at once

    assert lab.bond.status("bond0").active_member in MEMBERS
    assert lab.info_data()["active_slave"] in MEMBERS


# -- what the options do ----------------------------------------------------------------------


@pytest.mark.parametrize("reselect", [PrimaryReselect.ALWAYS, PrimaryReselect.FAILURE])
def test_primary_reselect_failure_keeps_a_manual_choice_when_the_primary_returns(
    running, reselect
):
    lab = running
    lab.bond.set_options("bond0", BondOptions(primary="m0", primary_reselect=reselect))
    lab.bond.set_active("bond0", "m1")  # the manual choice, away from the primary
    assert lab.info_data()["active_slave"] == "m1"

    lab.port("m0", "down")
    lab.wait_for("m0 down", lambda s: s.member("m0").mii_status is MiiStatus.DOWN)
    lab.port("m0", "up")
    lab.wait_for("m0 back up", lambda s: s.member("m0").mii_status is MiiStatus.UP)

    if reselect is PrimaryReselect.ALWAYS:
        # the kernel undoes the choice as soon as the primary is back
        lab.wait_for("the kernel back on its primary", lambda s: s.active_member == "m0")
        assert lab.info_data()["active_slave"] == "m0"
    else:
        time.sleep(1.0)  # 20 MII monitor rounds
        assert lab.bond.status("bond0").active_member == "m1"
        data = lab.info_data()
        assert (data["active_slave"], data["primary"]) == ("m1", "m0")


def fail_over_and_count(lab: Lab, count: int, delay_ms: int) -> tuple[list[float], int]:
    """Set num_peer_notif/peer_notif_delay, pull m0's switch port, and count what arrives on
    m1's: (arrival times of gratuitous ARPs, NETDEV_NOTIFY_PEERS the kernel announced)."""
    lab.node.run("ip", "addr", "add", f"{BOND_ADDR}/24", "dev", "bond0")
    lab.bond.set_options("bond0", BondOptions(num_peer_notif=count, peer_notif_delay=delay_ms))
    data = lab.info_data()
    assert (data["num_peer_notif"], data["peer_notify_delay"]) == (count, delay_ms)
    bond_index = lab.bond.status("bond0").index
    sniffer = garp_sniffer(lab.switch, MEMBERS["m1"])  # m1's switch port: the new path
    events = link_events(lab.node)
    try:
        drain_events(events)
        lab.port("m0", "down")
        # No netlink reads while counting: the MII monitor takes the RTNL lock with trylock
        # and skips a round when it cannot.
        arrivals = gratuitous_arps(sniffer, BOND_ADDR, seconds=1.5)
        notified = [e for e in drain_events(events) if e == (bond_index, IFLA_EVENT_NOTIFY_PEERS)]
    finally:
        sniffer.close()
        events.close()
    assert lab.bond.status("bond0").active_member == "m1"
    return arrivals, len(notified)


@pytest.mark.parametrize(
    ("count", "delay_ms"), [(0, 0), (1, 0), (3, 100), (3, 200)], ids=lambda v: str(v)
)
def test_num_peer_notif_sends_that_many_gratuitous_arps_on_failover(running, count, delay_ms):
    arrivals, notified = fail_over_and_count(running, count, delay_ms)

    assert len(arrivals) == count, f"{len(arrivals)} gratuitous ARPs for num_peer_notif {count}"
    assert notified == count  # the kernel's own NETDEV_NOTIFY_PEERS, as RTM_NEWLINK events
    if delay_ms:
        # spaced by peer_notif_delay, not by miimon (50 ms); the first gap is one MII round
        # shorter (the failover round counts down twice, see the next test)
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        assert max(gaps) >= 0.8 * delay_ms / 1000, f"gaps {gaps}"
        assert min(gaps) >= 0.8 * (delay_ms - 50) / 1000, f"gaps {gaps}"


def test_without_peer_notif_delay_the_failover_round_can_swallow_a_notification(running):
    """A kernel quirk, and one reason nodenetd's failover sends its own notifications.

    On the lab's Debian 6.1 kernel the MII round that fails over counts send_peer_notif down
    once more without notifying (the notification decision was taken before the failover in
    that round). With peer_notif_delay below two MII rounds the peer gets num_peer_notif - 1
    gratuitous ARPs: 2 of 3 here, every run. The timing of the previous test (first gap one
    round short) fits the same model. This matches the bond_mii_monitor rework backported to
    6.1.y in late 2025 (patch.msgid.link/20251021050933.46412-1-tonghao@bamaicloud.com);
    upstream reworked it again afterwards. Either way the wire carries what the kernel announced.
    """
    arrivals, notified = fail_over_and_count(running, 3, 0)

    assert len(arrivals) == notified
    assert len(arrivals) in (2, 3), f"{len(arrivals)} gratuitous ARPs for num_peer_notif 3"
