"""Peer notification in namespaces: a node announcing its addresses to the router beside it.

Topology (documentation ranges; fixed MACs so the frames are known):

    node  n0 02:00:00:00:00:02                     router  r0 02:00:00:00:00:01
          192.0.2.2/24, 198.51.100.2/24     ---            192.0.2.1/24, 198.51.100.1/24
          2001:db8::2/64, fe80::ff:fe00:2                  2001:db8::1/64

The notifier runs in this process, on an asyncio loop in a worker thread that entered the node
namespace (setns affects the calling thread only, and every socket it opens belongs to the node
for good), as the daemon runs it. Two witnesses on the router side, neither of them nodenetd
code:

- an AF_PACKET socket on r0, opened in the router namespace, with kernel receive timestamps:
  which frames arrived, how many, how far apart (parsed here field by field);
- the router kernel's neighbour cache, ``ip -j neigh``: whether the frames did their job.

DAD is off in both namespaces (``accept_dad=0`` before the links exist) so every address is
usable at once, and the node's kernel announces nothing itself (``arp_notify`` and
``ndisc_notify`` are 0 in a new namespace): every announcement the router sees is ours.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

import pytest

from nodenetd.failover.notify import NotifyCounters, NotifySettings, PeerNotifier, addresses_of
from nodenetd.kernel.netlink import in_netns
from tests.lab.netns import Netns

pytestmark = pytest.mark.root

NODE_MAC, ROUTER_MAC, WRONG_MAC = "02:00:00:00:00:02", "02:00:00:00:00:01", "02:00:00:00:00:99"
NODE_V4 = ["192.0.2.2", "198.51.100.2"]
NODE_V6 = ["2001:db8::2", "fe80::ff:fe00:2"]  # the link-local one: EUI-64 of NODE_MAC
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SLACK = 0.05  # seconds of timing tolerance: the scheduling jitter of a loaded host
T = TypeVar("T")


# -- the witnesses -------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One announcement as it arrived on the router."""

    kind: str  # "garp" or "na"
    address: str
    mac: str  # what it announced: the ARP sender MAC, or the NA's target link-layer option
    eth_src: str
    flags: int  # the NA's R/S/O byte; 0 for ARP
    at: float  # kernel receive time (CLOCK_REALTIME), seconds


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def witness(frame: bytes, at: float) -> Seen | None:
    """A gratuitous ARP request or an unsolicited NA to all-nodes, else None (anything else
    the node's kernel sends: MLD reports, router solicitations...)."""
    if len(frame) < 14:
        return None
    dst, src, ethertype = struct.unpack_from("!6s6sH", frame)
    if ethertype == 0x0806 and len(frame) >= 42:
        htype, ptype, _, _, op, sha, spa, tha, tpa = struct.unpack_from(
            "!HHBBH6s4s6s4s", frame, 14
        )
        if (htype, ptype, op) == (1, 0x0800, 1) and spa == tpa and dst == b"\xff" * 6:
            assert tha == bytes(6), frame.hex()
            return Seen("garp", socket.inet_ntop(socket.AF_INET, spa), _mac(sha), _mac(src), 0, at)
    if ethertype == 0x86DD and len(frame) >= 14 + 40 + 24:
        _, _, next_header, hop_limit, _, destination = struct.unpack_from("!IHBB16s16s", frame, 14)
        kind, _, _, flags, target = struct.unpack_from("!BBHB3x16s", frame, 54)
        if next_header == 58 and kind == 136 and destination == socket.inet_pton(
            socket.AF_INET6, "ff02::1"
        ):
            assert hop_limit == 255 and dst == bytes.fromhex("333300000001"), frame.hex()
            option = frame[78:86]
            assert option[:2] == b"\x02\x01", frame.hex()  # target link-layer address option
            address = socket.inet_ntop(socket.AF_INET6, target)
            return Seen("na", address, _mac(option[2:]), _mac(src), flags, at)
    return None


class Capture:
    """Every frame r0 receives, from a packet socket opened in the router namespace."""

    def __init__(self, router: Netns, ifname: str = "r0") -> None:
        def opener() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
            return sock

        self.sock = in_netns(router.name, opener)

    def drain(self) -> list[Seen]:
        """The announcements received so far, oldest first."""
        seen: list[Seen] = []
        errors = 0
        while True:
            try:
                frame, ancdata, _, address = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return seen
            except OSError as err:  # ENETDOWN once, when r0 went away with its peer
                errors += 1
                assert err.errno == errno.ENETDOWN and errors < 3, err
                continue
            if address[2] == PACKET_OUTGOING:
                continue
            at = time.time()
            for level, kind, data in ancdata:
                if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS):
                    sec, nsec = struct.unpack("=qq", data[:16])
                    at = sec + nsec / 1e9
            if (item := witness(frame, at)) is not None:
                seen.append(item)

    def close(self) -> None:
        self.sock.close()


def tally(seen: list[Seen]) -> Counter[tuple[str, str]]:
    return Counter((item.kind, item.address) for item in seen)


# -- the lab -------------------------------------------------------------------------------


@dataclass
class Lab:
    node: Netns
    router: Netns
    capture: Capture

    def neighbours(self) -> dict[str, dict[str, Any]]:
        """The router's neighbour cache on r0, by address."""
        entries = self.router.json("ip", "-j", "neigh", "show", "dev", "r0")
        return {entry["dst"]: entry for entry in entries or []}

    def run(self, scenario: Callable[[asyncio.AbstractEventLoop], Awaitable[T]],
            timeout: float = 30) -> T:
        """``scenario(loop)`` on a fresh event loop inside the node namespace. Fails if any
        callback raised into the loop: notification errors must never get there."""

        async def main() -> T:
            loop = asyncio.get_running_loop()
            raised: list[dict] = []
            loop.set_exception_handler(lambda _, context: raised.append(context))
            result = await scenario(loop)
            await asyncio.sleep(0)
            assert raised == [], raised
            return result

        return in_netns(self.node.name, lambda: asyncio.run(asyncio.wait_for(main(), timeout)))


@pytest.fixture
def lab(make_netns) -> Lab:
    node, router = make_netns("notify-node"), make_netns("notify-rtr")
    for ns in (node, router):
        ns.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0",
               "net.ipv6.conf.all.accept_dad=0")
    node.run("ip", "link", "add", "n0", "address", NODE_MAC, "type", "veth",
             "peer", "name", "r0", "address", ROUTER_MAC)
    node.run("ip", "link", "set", "r0", "netns", router.name)
    for address in ("192.0.2.2/24", "198.51.100.2/24"):
        node.run("ip", "addr", "add", address, "dev", "n0")
    node.run("ip", "addr", "add", "2001:db8::2/64", "dev", "n0", "nodad")
    for address in ("192.0.2.1/24", "198.51.100.1/24"):
        router.run("ip", "addr", "add", address, "dev", "r0")
    router.run("ip", "addr", "add", "2001:db8::1/64", "dev", "r0", "nodad")
    node.run("ip", "link", "set", "n0", "up")
    router.run("ip", "link", "set", "r0", "up")
    wait_for(lambda: node.link("n0")["operstate"] == "UP", "n0 up")
    capture = Capture(router)
    yield Lab(node, router, capture)
    capture.close()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def rounds_of(seen: list[Seen], per_round: int) -> list[list[Seen]]:
    """The frames in arrival order, cut into rounds of ``per_round``."""
    ordered = sorted(seen, key=lambda item: item.at)
    return [ordered[i : i + per_round] for i in range(0, len(ordered), per_round)]


# -- what to announce ------------------------------------------------------------------------


def test_addresses_of_reads_the_usable_addresses_link_local_included(lab):
    ipv4, ipv6 = in_netns(lab.node.name, lambda: addresses_of("n0"))

    assert [str(a) for a in ipv4] == NODE_V4
    assert sorted(map(str, ipv6)) == sorted(NODE_V6)
    assert all(isinstance(a, ipaddress.IPv4Address) for a in ipv4)
    assert all(isinstance(a, ipaddress.IPv6Address) for a in ipv6)


def test_addresses_of_leaves_out_tentative_and_duplicate_addresses(lab):
    # n1 runs DAD slowly (10 s per probe), so its addresses stay tentative; the router already
    # owns 2001:db8:1::7 and answers the node's DAD probe, so that one fails DAD
    node = lab.node
    node.run("ip", "link", "add", "n1", "type", "veth", "peer", "name", "r1")
    node.run("ip", "link", "set", "r1", "netns", lab.router.name)
    node.run("sysctl", "-qw", "net.ipv6.conf.n1.accept_dad=1",
              "net.ipv6.neigh.n1.retrans_time_ms=10000")
    lab.router.run("ip", "addr", "add", "2001:db8:1::7/64", "dev", "r1", "nodad")
    lab.router.run("ip", "link", "set", "r1", "up")
    node.run("ip", "addr", "add", "203.0.113.2/24", "dev", "n1")
    node.run("ip", "addr", "add", "2001:db8:1::7/64", "dev", "n1")
    node.run("ip", "addr", "add", "2001:db8:1::8/64", "dev", "n1")
    node.run("ip", "link", "set", "n1", "up")

    def flags() -> dict[str, set[str]]:
        info = node.json("ip", "-j", "addr", "show", "dev", "n1")[0]["addr_info"]
        return {a["local"]: {k for k in ("tentative", "dadfailed") if a.get(k)} for a in info
                if a["family"] == "inet6"}

    wait_for(lambda: flags().get("2001:db8:1::7") == {"tentative", "dadfailed"}, "DAD failure")
    ipv4, ipv6 = in_netns(node.name, lambda: addresses_of("n1"))

    seen = flags()
    assert seen["2001:db8:1::8"] == {"tentative"}
    assert any(a.startswith("fe80:") and s == {"tentative"} for a, s in seen.items()), seen
    assert [str(a) for a in ipv4] == ["203.0.113.2"]
    assert ipv6 == []  # tentative (link-local and ::8) and dadfailed (::7) are not ours yet


# -- frames on the wire --------------------------------------------------------------------


def test_each_round_announces_every_address_once_at_the_interval(lab):
    settings = NotifySettings(count=3, interval=0.2)

    async def scenario(loop):
        ipv4, ipv6 = addresses_of("n0")
        notifier = PeerNotifier("uplinks", settings)
        notifier.notify("n0", ipv4=ipv4, ipv6=ipv6, reason="test: n0 became active")
        at_return = notifier.counters()  # before the loop ran anything
        await asyncio.sleep(0.1)
        first = lab.capture.drain()
        await until(lambda: notifier.counters().rounds == 3, "three rounds")
        await asyncio.sleep(0.3)  # and nothing after them
        notifier.close()
        return at_return, first, notifier.counters()

    at_return, first, counters = lab.run(scenario)
    seen = first + lab.capture.drain()

    # the first round left before notify() returned; the others on timers
    assert at_return == NotifyCounters(rounds=1, arp_sent=2, na_sent=2, send_errors=0)
    assert tally(first) == Counter({("garp", a): 1 for a in NODE_V4}
                                   | {("na", a): 1 for a in NODE_V6})
    assert counters == NotifyCounters(rounds=3, arp_sent=6, na_sent=6, send_errors=0)
    # exactly count x addresses frames of each type, as the node's MAC, from it
    assert tally(seen) == Counter({("garp", a): 3 for a in NODE_V4}
                                  | {("na", a): 3 for a in NODE_V6})
    assert {(item.mac, item.eth_src) for item in seen} == {(NODE_MAC, NODE_MAC)}
    assert {item.flags for item in seen if item.kind == "na"} == {0x20}  # O; R and S clear
    # rounds of 4 frames, never closer together than the interval allows (timers never fire
    # early, and a late loop still keeps rounds interval/2 apart); how late a loaded host
    # sends them is not this test's business (no upper bound: no timed assertions)
    rounds = rounds_of(seen, 4)
    assert [len({(i.kind, i.address) for i in r}) for r in rounds] == [4, 4, 4]
    gaps = [later[0].at - earlier[0].at for earlier, later in pairwise(rounds)]
    assert all(gap >= 0.2 - SLACK for gap in gaps), gaps


def test_the_router_flag_follows_the_interfaces_ipv6_forwarding(lab):
    lab.node.run("sysctl", "-qw", "net.ipv6.conf.n0.forwarding=1")

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", NotifySettings(count=1))
        notifier.notify("n0", ipv4=[], ipv6=NODE_V6[:1], reason="test: forwarding node")
        await asyncio.sleep(0.05)

    lab.run(scenario)
    seen = lab.capture.drain()

    assert [(item.kind, item.address, item.flags) for item in seen] == [
        ("na", NODE_V6[0], 0xA0)  # R and O: what the kernel's own NAs from n0 now say
    ]


def test_an_explicit_mac_is_announced_instead_of_the_interfaces(lab):
    virtual = "02:00:5e:00:01:07"

    async def scenario(loop):
        notifier = PeerNotifier("vip", NotifySettings(count=1))
        notifier.notify("n0", mac=bytes.fromhex(virtual.replace(":", "")), ipv4=NODE_V4[:1],
                        ipv6=NODE_V6[:1], reason="test: virtual MAC")
        await asyncio.sleep(0.05)

    lab.run(scenario)
    seen = lab.capture.drain()

    assert {(item.kind, item.mac, item.eth_src) for item in seen} == {
        ("garp", virtual, virtual),
        ("na", virtual, virtual),
    }


# -- what the router's kernel does with them -----------------------------------------------


def test_stale_wrong_entries_on_the_router_are_rewritten_to_the_nodes_mac(lab):
    # Linux rewrites an *existing* entry from a gratuitous ARP whatever arp_accept says
    # (arp_process: the entry is looked up first; arp_is_garp forces the override), and from
    # an NA with the Override flag; arp_accept and accept_untracked_na only decide whether a
    # *new* entry is created (the next test). Both are 0 here, their defaults.
    assert lab.router.sysctl("net.ipv4.conf.r0.arp_accept") == "0"
    assert lab.router.sysctl("net.ipv6.conf.r0.accept_untracked_na") == "0"
    for address in NODE_V4 + NODE_V6:
        lab.router.run("ip", "neigh", "replace", address, "lladdr", WRONG_MAC, "nud", "stale",
                       "dev", "r0")
    before = lab.neighbours()
    assert {a: (before[a]["lladdr"], before[a]["state"]) for a in NODE_V4 + NODE_V6} == {
        a: (WRONG_MAC, ["STALE"]) for a in NODE_V4 + NODE_V6
    }

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", NotifySettings(count=1))
        ipv4, ipv6 = addresses_of("n0")
        notifier.notify("n0", ipv4=ipv4, ipv6=ipv6, reason="test: stale caches")
        return notifier.counters()

    assert lab.run(scenario) == NotifyCounters(rounds=1, arp_sent=2, na_sent=2)
    wait_for(lambda: all(lab.neighbours()[a]["lladdr"] == NODE_MAC for a in NODE_V4 + NODE_V6),
             "the router's entries to follow")

    after = lab.neighbours()
    # STALE, not REACHABLE: an announcement proves no reachability, the router's NUD will
    # confirm the entry when it next uses it
    assert {a: (after[a]["lladdr"], after[a]["state"]) for a in NODE_V4 + NODE_V6} == {
        a: (NODE_MAC, ["STALE"]) for a in NODE_V4 + NODE_V6
    }


def test_without_an_entry_the_router_learns_only_when_told_to_accept(lab):
    # IPv4: arp_accept=1 lets a gratuitous ARP create an entry (2: only from its own subnet).
    # IPv6: accept_untracked_na=1 lets an unsolicited NA create one, but only on a router
    # (RFC 9131: ndisc_recv_na also checks the receiving interface's forwarding).
    lab.router.run("ip", "neigh", "flush", "dev", "r0")

    def announce() -> None:
        async def scenario(loop):
            notifier = PeerNotifier("uplinks", NotifySettings(count=1))
            notifier.notify("n0", ipv4=NODE_V4, ipv6=NODE_V6, reason="test: no entries")
            await asyncio.sleep(0.05)

        lab.run(scenario)
        assert tally(lab.capture.drain()) == Counter({("garp", a): 1 for a in NODE_V4}
                                                     | {("na", a): 1 for a in NODE_V6})

    def learned() -> dict[str, tuple[str, list[str]]]:
        return {a: (e.get("lladdr"), e["state"]) for a, e in lab.neighbours().items()
                if a in NODE_V4 + NODE_V6 and e.get("lladdr")}

    announce()
    time.sleep(0.1)
    assert learned() == {}  # the defaults: nothing new is created from announcements

    lab.router.run("sysctl", "-qw", "net.ipv4.conf.r0.arp_accept=1",
                   "net.ipv6.conf.r0.accept_untracked_na=1")
    announce()
    wait_for(lambda: len(learned()) == 2, "the router to learn the IPv4 addresses")
    time.sleep(0.1)
    assert learned() == {a: (NODE_MAC, ["STALE"]) for a in NODE_V4}  # not IPv6: no router

    lab.router.run("sysctl", "-qw", "net.ipv6.conf.r0.forwarding=1")
    announce()
    wait_for(lambda: len(learned()) == 4, "the router to learn the IPv6 addresses")

    assert learned() == {a: (NODE_MAC, ["STALE"]) for a in NODE_V4 + NODE_V6}


# -- cancellation --------------------------------------------------------------------------


def test_a_newer_switch_cancels_the_rounds_still_pending(lab):
    settings = NotifySettings(count=5, interval=0.2)

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", settings)
        notifier.notify("n0", ipv4=NODE_V4[:1], ipv6=[], reason="test: first switch")
        # 100 ms later, between the first burst's rounds 1 and 2: a second switch
        loop.call_later(0.1, lambda: notifier.notify(
            "n0", ipv4=NODE_V4[1:], ipv6=NODE_V6[:1], reason="test: second switch"))
        await until(lambda: notifier.counters().rounds == 6, "the second burst")
        await asyncio.sleep(0.5)  # long enough for the first burst's rounds 2-5, had they run
        notifier.close()
        return notifier.counters()

    counters = lab.run(scenario)
    seen = lab.capture.drain()

    assert counters == NotifyCounters(rounds=6, arp_sent=6, na_sent=5, send_errors=0)
    assert tally(seen) == Counter({("garp", NODE_V4[0]): 1, ("garp", NODE_V4[1]): 5,
                                   ("na", NODE_V6[0]): 5})
    first = [item.at for item in seen if item.address == NODE_V4[0]]
    second = sorted(item.at for item in seen if item.address == NODE_V4[1])
    assert second[0] - first[0] >= 0.1 - SLACK  # the new burst's round 1, after the first's
    gaps = [b - a for a, b in pairwise(second)]
    assert all(gap >= 0.2 - SLACK for gap in gaps), gaps


def test_cancel_and_close_drop_the_pending_rounds(lab):
    settings = NotifySettings(count=5, interval=0.2)

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", settings)
        notifier.notify("n0", ipv4=NODE_V4[:1], ipv6=[], reason="test: cancelled")
        loop.call_later(0.1, notifier.cancel)
        await asyncio.sleep(0.6)
        cancelled = notifier.counters()
        notifier.notify("n0", ipv4=NODE_V4[1:], ipv6=[], reason="test: closed")
        loop.call_later(0.3, notifier.close)  # after rounds at 0 and 0.2 s
        await asyncio.sleep(0.8)
        with pytest.raises(RuntimeError, match="closed"):
            notifier.notify("n0", ipv4=NODE_V4, ipv6=[], reason="test: after close")
        return cancelled, notifier.counters()

    cancelled, closed = lab.run(scenario)

    assert cancelled == NotifyCounters(rounds=1, arp_sent=1)
    assert closed == NotifyCounters(rounds=3, arp_sent=3)
    assert tally(lab.capture.drain()) == Counter({("garp", NODE_V4[0]): 1,
                                                  ("garp", NODE_V4[1]): 2})


# -- the interface fails mid-burst ---------------------------------------------------------


def test_an_interface_deleted_mid_burst_counts_errors_and_drops_the_rest(lab, caplog):
    caplog.set_level(logging.INFO, logger="nodenetd")
    settings = NotifySettings(count=5, interval=0.2)

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", settings)
        notifier.notify("n0", ipv4=NODE_V4, ipv6=NODE_V6, reason="test: doomed")
        # blocking on purpose: round 2 cannot run before the deletion is complete
        loop.call_later(0.05, lambda: lab.node.run("ip", "link", "del", "n0"))
        await asyncio.sleep(1.3)  # all five rounds' worth
        return notifier.counters()

    counters = lab.run(scenario)
    seen = lab.capture.drain()

    # round 1 sent, round 2 found the interface gone (4 frames not sent), rounds 3-5 dropped
    assert counters == NotifyCounters(rounds=2, arp_sent=2, na_sent=2, send_errors=4)
    assert tally(seen) == Counter({("garp", a): 1 for a in NODE_V4}
                                  | {("na", a): 1 for a in NODE_V6})
    records = [r for r in caplog.records if r.name == "nodenetd"]
    lines = [(r.levelname, r.getMessage()) for r in records]
    assert len(lines) == 2, lines  # one for the burst, one for the failed round
    assert lines[0][0] == "INFO" and "peer notification on n0 as 02:00:00:00:00:02" in lines[0][1]
    assert all(a in lines[0][1] for a in NODE_V4 + NODE_V6) and "test: doomed" in lines[0][1]
    assert lines[1] == (
        "WARNING",
        "group uplinks: peer notification round 2/5 on n0: 4 of 4 frame(s) not sent "
        "(ENODEV x4); n0 is gone, the remaining 3 round(s) are dropped",
    )
    fields = records[-1].__dict__
    assert (fields["INTERFACE"], fields["SETTING"], fields["REASON"]) == (
        "n0", "peer-notify", "test: doomed")


def test_an_interface_that_cannot_carry_announcements_drops_the_burst(lab, caplog):
    caplog.set_level(logging.WARNING, logger="nodenetd")

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", NotifySettings(count=3, interval=0.05))
        notifier.notify("lo", ipv4=["127.0.0.1"], ipv6=[], reason="test: loopback")
        await asyncio.sleep(0.3)
        return notifier.counters()

    assert lab.run(scenario) == NotifyCounters(rounds=1, send_errors=1)
    assert [r.getMessage() for r in caplog.records] == [
        "group uplinks: peer notification round 1/3 on lo: 1 of 1 frame(s) not sent "
        "(Unsupported); lo is not an Ethernet interface (no ARP or neighbour discovery), "
        "the remaining 2 round(s) are dropped"
    ]


def test_a_link_down_mid_burst_costs_its_rounds_and_the_rest_still_run(lab, caplog):
    caplog.set_level(logging.INFO, logger="nodenetd")
    settings = NotifySettings(count=4, interval=0.2)

    def up_again() -> None:
        lab.node.run("ip", "link", "set", "n0", "up")
        # the kernel switches the queue back on with the carrier: wait for it (blocking, so
        # the next round waits too)
        wait_for(lambda: lab.node.link("n0")["operstate"] == "UP", "n0 up again")
        time.sleep(0.02)

    async def scenario(loop):
        notifier = PeerNotifier("uplinks", settings)
        notifier.notify("n0", ipv4=NODE_V4, ipv6=NODE_V6[:1], reason="test: flapping")
        loop.call_later(0.05, lambda: lab.node.run("ip", "link", "set", "n0", "down"))
        loop.call_later(0.25, up_again)  # after round 2 (0.2 s), before round 3 (0.4 s)
        await until(lambda: notifier.counters().rounds == 4, "four rounds")
        await asyncio.sleep(0.05)
        return notifier.counters()

    counters = lab.run(scenario)
    seen = lab.capture.drain()

    assert counters == NotifyCounters(rounds=4, arp_sent=6, na_sent=3, send_errors=3)
    assert tally(seen) == Counter({("garp", NODE_V4[0]): 3, ("garp", NODE_V4[1]): 3,
                                   ("na", NODE_V6[0]): 3})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "group uplinks: peer notification round 2/4 on n0: 3 of 3 frame(s) not sent "
        "(ENETDOWN x3); the remaining rounds still run"
    ]
    start = min(item.at for item in seen)
    by_round = defaultdict(list)
    for item in seen:
        by_round[round((item.at - start) / 0.2)].append(item)
    assert sorted(by_round) == [0, 2, 3]  # round 2 (index 1) was lost to the link being down
