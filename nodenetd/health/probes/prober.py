"""The prober: periodic path probes from one member, on the daemon's asyncio event loop.

One ``Prober`` per member. It opens that member's sockets (see ``sockets``) and runs one timer
that does everything, in this order, each time it wakes:

1. **Read** every reply queued on the member's sockets. Each carries the kernel's receive
   timestamp (``SO_TIMESTAMPNS``), so what a reply proves does not depend on when the loop
   gets to it: its RTT is receive time minus the monotonic time taken just before
   ``sendto``, and it counts only if it arrived by the probe's deadline.
2. **Time out** every probe whose deadline has passed.
3. **Send** every probe whose slot has come.
4. **Sleep** until the earlier of the next slot and the oldest unanswered probe's deadline.

Why this shape: on the hosts this was measured on, an event-loop wakeup costs 30-50 us of
CPU, far more than the work of one probe. Reading replies at the next wakeup instead of as
they arrive makes 10 ms probing cost one wakeup per slot for every member and target
together (slots lie on a shared grid, below). Success is then reported up to one interval
late, which no health decision needs sooner. When the next wakeup is more than
``PROMPT_READ`` (50 ms) away the sockets are also watched with ``loop.add_reader``, so slow
probes still report replies as they come; at that rate wakeups cost nothing.

Slots. Probe *k* of a spec with interval *I* goes out at a multiple of *I* on the monotonic
clock (the first one at once, at start). Computed from the clock, not accumulated: no drift.
Every prober and spec with the same interval shares those instants, so the loop wakes once for
all of them. When the loop was late by more than an interval (a stall, a suspend), the missed
slots are skipped and counted (``skipped``), never sent in a burst.

Deadlines. A probe times out ``timeout`` after its slot, and never less than ``timeout / 2``
after it was actually sent (a loop that is badly late does not fail a healthy path). Counted
from the slot, a timeout that is a multiple of the interval ends exactly on a later slot, so
even a dead path costs no extra wakeups. The default timeout is the interval: the bonding ARP
monitor's and teamd's reply window; it bounds detection to (fall + 1) x interval with ``fall``
consecutive failures (40 ms for 10 ms probes x 3); and with at most one probe per target in
flight, an ARP or NA reply (which carry no sequence number) can hardly be credited to the wrong
probe. Paths whose RTT approaches the interval need a longer timeout.

Matching. ICMP: identifier (one random 16-bit value per prober, also filtered in the kernel),
sequence number (one counter per socket) and the sender's address. ARP: sender IP, our MAC and
our source IP as the target. NA: target address, our MAC (all-nodes when soliciting from ::)
and the solicited flag. An ARP or NA reply goes to the oldest unanswered probe of its target
that was sent before the reply arrived; one that matches nothing outstanding, or arrived after
the deadline, counts as ``late``. A reply to the kernel's own ARP/ND for the same neighbour is
indistinguishable from one to us; it still proves the neighbour answered on this member.

ARP and NS start broadcast (multicast for NS) and go unicast to the MAC that answered, as the
kernel's own reachability probes do, so 10 ms probes do not flood the segment. After a timeout
the next probe is broadcast again, so a target whose MAC moved is found within one probe.

Bond members. A bond's members share the bond's MAC. Probes sent from a backup member with that
MAC teach the switch that the bond's MAC lives behind the backup's port, and the switch then
delivers the active member's traffic to the backup, where the bond drops it; at 10 ms intervals
that is constant loss, and some switches shut a port down for MAC flapping. So on a bond member
the prober speaks, by default, as the member's permanent MAC (the bond's slave data), adds it to
the member's unicast filter, and asks "who has T" from 0.0.0.0 (an RFC 5227 probe, which no
neighbour caches) and solicits from the EUI-64 link-local address of that MAC, so no neighbour
cache maps the bond's addresses to a member's MAC either. The member whose MAC the bond took
(the first one enslaved) has no MAC of its own left; it gets a locally administered one derived
from that MAC and its name. Each member's port thus shows the switch one more MAC (mind a
port-security limit of one). ``mac=`` overrides the MAC; with a MAC that is not the member's
current one, ARP/NS sources default the same way.

Results go to ``on_result`` one by one, on the loop thread, in order of ``at`` (so per target
a timeout never follows a newer success); the callback must not block.
``counters()`` returns immutable snapshots that other threads may keep.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
import secrets
import socket
import struct
import time
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from nodenetd.errors import NodenetdError
from nodenetd.health.probes import packets, sockets
from nodenetd.health.signals import ProbeResult, target_key

__all__ = [
    "MIN_INTERVAL",
    "PROMPT_READ",
    "RTT_BUCKETS",
    "ProbeCounters",
    "ProbeKind",
    "ProbeResult",
    "ProbeSpec",
    "ProbeSpecError",
    "Prober",
]

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.01  # seconds; the scheduler and the CPU budget are measured down to this
PROMPT_READ = 0.05  # watch the sockets when the next wakeup is further away than this
_READ_BUDGET = 256  # datagrams read per socket per wakeup, so a flood cannot starve the loop
_BUFSIZE = 2048
_ANCSIZE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("=qq")
_EARLY = 1e-6  # a timer may fire this much before its time and still count as on time
# Upper bounds (seconds) of the RTT histogram kept per probe for the metrics: 25 us doubling
# to ~0.8 s, so a veth (~30 us), a LAN (~0.2 ms) and a WAN path each land in a few buckets.
RTT_BUCKETS = tuple(25e-6 * 2**k for k in range(16))


_CLOCK_SLACK = 20e-6  # how far apart the clock reads behind an offset may be


def _clock_offset() -> tuple[float, float]:
    """(monotonic now, realtime minus monotonic). The realtime read is bracketed by two
    monotonic ones and retried when they lie far apart (the thread was preempted between
    them), so the offset that converts kernel receive stamps is good to ``_CLOCK_SLACK``."""
    best = (math.inf, 0.0, 0.0)
    for _ in range(3):
        before = time.monotonic()
        real = time.time()
        after = time.monotonic()
        if after - before < best[0]:
            best = (after - before, after, real - (before + after) / 2)
        if after - before < _CLOCK_SLACK:
            break
    return best[1], best[2]


class ProbeKind(StrEnum):
    ICMP = "icmp"  # ICMP echo, IPv4
    ICMP6 = "icmp6"  # ICMPv6 echo
    ARP = "arp"  # ARP request, IPv4
    NS = "ns"  # IPv6 neighbour solicitation


_VERSION = {ProbeKind.ICMP: 4, ProbeKind.ARP: 4, ProbeKind.ICMP6: 6, ProbeKind.NS: 6}
_NEIGHBOUR = (ProbeKind.ARP, ProbeKind.NS)


class ProbeSpecError(NodenetdError, ValueError):
    """A probe spec that cannot work; the message names the spec and what to change."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """One probe target of a member.

    ``timeout`` defaults to ``interval``. ``source``: for ICMP, the local address to bind
    (default: the kernel's choice for the member); for ARP/NS, the sender address written
    into the request (default: the member's own address nearest the target, else its
    master's; else 0.0.0.0 or ::, which targets still answer, as to a host checking for an
    address conflict; see "Bond members" in the module docstring for bond members).
    """

    kind: ProbeKind
    target: str
    interval: float = 1.0
    timeout: float | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        label = f"{self.kind} probe to {self.target}"
        try:
            kind = ProbeKind(self.kind)
        except ValueError:
            kinds = ", ".join(k.value for k in ProbeKind)
            raise ProbeSpecError(f"{label}: unknown kind (expected one of {kinds})") from None
        object.__setattr__(self, "kind", kind)
        target = _address(label, "target", self.target, _VERSION[kind])
        if target.is_multicast or target.is_unspecified:
            raise ProbeSpecError(f"{label}: the target must be a unicast address")
        object.__setattr__(self, "target", str(target))
        if self.source is not None:
            source = _address(label, "source", self.source, _VERSION[kind])
            object.__setattr__(self, "source", str(source))
        if not self.interval >= MIN_INTERVAL:
            raise ProbeSpecError(
                f"{label}: interval {self.interval} s is below the minimum {MIN_INTERVAL} s"
            )
        if self.timeout is None:
            object.__setattr__(self, "timeout", float(self.interval))
        elif not self.timeout > 0:
            raise ProbeSpecError(f"{label}: timeout must be positive, not {self.timeout}")

    @property
    def key(self) -> tuple[ProbeKind, str]:
        return (self.kind, self.target)


def _address(label: str, what: str, text: str, version: int):
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise ProbeSpecError(f"{label}: {what} {text!r} is not an IP address") from None
    if address.version != version:
        raise ProbeSpecError(f"{label}: {what} {text} is not an IPv{version} address")
    return address


@dataclass(frozen=True, slots=True)
class ProbeCounters:
    """Counters of one (kind, target) of a member since start; an immutable snapshot."""

    sent: int = 0
    ok: int = 0
    timeouts: int = 0
    send_errors: int = 0
    late: int = 0  # replies after their deadline, or matching nothing outstanding
    skipped: int = 0  # send slots missed because the loop was late by a whole interval
    last_rtt: float | None = None
    # RTTs of the ``ok`` replies: per RTT_BUCKETS bucket (not cumulative, the last one above
    # every bound), and their sum
    rtt_counts: tuple[int, ...] = ()
    rtt_sum: float = 0.0

    @property
    def failed(self) -> int:
        return self.timeouts + self.send_errors


class _Pending:
    __slots__ = ("deadline", "done", "probe", "sent_at", "seq")

    def __init__(self, probe: _Probe, sent_at: float, deadline: float) -> None:
        self.probe = probe
        self.seq = 0
        self.sent_at = sent_at
        self.deadline = deadline
        self.done = False


class _Probe:
    """The running state of one spec."""

    __slots__ = (
        "channel",
        "frame",
        "frame_for",
        "interval",
        "key",
        "kind",
        "last_rtt",
        "late",
        "next_at",
        "ok",
        "outstanding",
        "peer_mac",
        "rtt_counts",
        "rtt_sum",
        "send_errors",
        "sent",
        "skipped",
        "slot",
        "sockaddr",
        "source",
        "source_text",
        "spec",
        "target",
        "target_packed",
        "timeout",
        "timeouts",
    )

    def __init__(self, spec: ProbeSpec, channel: _Channel, source_text: str | None) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.target = spec.target
        self.key = target_key(spec.kind, spec.target)
        self.interval = float(spec.interval)
        self.timeout = float(spec.timeout or spec.interval)
        self.channel = channel
        family = socket.AF_INET if _VERSION[spec.kind] == 4 else socket.AF_INET6
        self.target_packed = socket.inet_pton(family, spec.target)
        self.source_text = source_text
        self.source = socket.inet_pton(family, source_text) if source_text else b""
        self.sockaddr: tuple = ()
        self.peer_mac: bytes | None = None
        self.frame = b""  # the ARP/NS frame last built, and the peer MAC it was built for
        self.frame_for: bytes | None = None
        self.outstanding: deque[_Pending] = deque()
        self.next_at = 0.0
        self.slot: int | None = None  # index of the next slot on the grid, after the first
        self.sent = self.ok = self.timeouts = self.send_errors = self.late = self.skipped = 0
        self.last_rtt: float | None = None
        self.rtt_counts = [0] * (len(RTT_BUCKETS) + 1)
        self.rtt_sum = 0.0

    def counters(self) -> ProbeCounters:
        return ProbeCounters(
            self.sent,
            self.ok,
            self.timeouts,
            self.send_errors,
            self.late,
            self.skipped,
            self.last_rtt,
            tuple(self.rtt_counts),
            self.rtt_sum,
        )

    def oldest(self) -> _Pending | None:
        """The oldest probe still waiting, dropping answered ones from the front."""
        outstanding = self.outstanding
        while outstanding:
            head = outstanding[0]
            if not head.done:
                return head
            outstanding.popleft()
        return None


class _Channel(ABC):
    """One socket of a member and the probes that use it."""

    def __init__(self, prober: Prober, sock: socket.socket) -> None:
        self.prober = prober
        self.sock = sock
        self.by_target: dict[bytes, _Probe] = {}
        self.read_errors = 0

    def add(self, probe: _Probe) -> None:
        self.by_target[probe.target_packed] = probe

    @abstractmethod
    def send(self, probe: _Probe, pending: _Pending) -> None:
        """Put one probe on the wire."""

    def expired(self, pending: _Pending) -> None:  # noqa: B027 - an optional hook
        """A probe of this channel timed out (channels that track neighbours override it)."""

    def drain(self, now: float, offset: float) -> None:
        """Read every queued datagram, each with its kernel receive time on the monotonic
        clock (the realtime stamp moved by ``offset``, realtime minus monotonic, and never
        later than ``now``)."""
        sock = self.sock
        for _ in range(_READ_BUDGET):
            try:
                data, ancillary, _, address = sock.recvmsg(_BUFSIZE, _ANCSIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # e.g. ENETDOWN once the member is gone
                self.read_errors += 1
                if self.read_errors == 1:
                    log.warning("%s: reading probe replies failed: %s", self.prober.member, err)
                return
            received = now
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == sockets.SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    received = min(now, seconds - offset + nanoseconds * 1e-9)
            self.received(data, address, received)

    @abstractmethod
    def received(self, data: bytes, address: tuple, at: float) -> None:
        """Match one received datagram to the probe it answers."""

    def answered_by_neighbour(self, probe: _Probe, at: float, mac: bytes) -> None:
        """An ARP or NA reply for ``probe``'s target: credit the oldest unanswered probe that
        was sent before the reply arrived and whose deadline it met."""
        for pending in probe.outstanding:
            if pending.sent_at > at + _CLOCK_SLACK:
                break
            if not pending.done and at <= pending.deadline:
                probe.peer_mac = mac
                self.prober._answered(pending, at)
                return
        probe.late += 1  # after its probe's deadline, or an answer to the kernel's own query


class _EchoChannel(_Channel):
    """ICMP or ICMPv6 echo on a raw socket; one sequence space for all its targets."""

    def __init__(self, prober: Prober, sock: socket.socket, six: bool) -> None:
        super().__init__(prober, sock)
        self.six = six
        self.ident = prober.ident
        self.seq = secrets.randbelow(0x10000)
        self.pending: dict[int, _Pending] = {}
        self.build = packets.build_echo6_request if six else packets.build_echo_request

    def add(self, probe: _Probe) -> None:
        super().add(probe)
        if self.six:
            address = ipaddress.IPv6Address(probe.target)
            scope = self.prober.facts.index if address.is_link_local else 0
            probe.sockaddr = (probe.target, 0, 0, scope)
        else:
            probe.sockaddr = (probe.target, 0)

    def send(self, probe: _Probe, pending: _Pending) -> None:
        seq = self.seq = (self.seq + 1) & 0xFFFF
        pending.seq = seq
        self.sock.sendto(self.build(self.ident, seq), probe.sockaddr)
        self.pending[seq] = pending

    def expired(self, pending: _Pending) -> None:
        self.pending.pop(pending.seq, None)

    def received(self, data: bytes, address: tuple, at: float) -> None:
        if self.six:
            reply = packets.parse_echo6_reply(data)
            if reply is None:
                return
            source = socket.inet_pton(socket.AF_INET6, address[0].partition("%")[0])
        else:
            reply = packets.parse_echo_reply(data)
            if reply is None:
                return
            source = reply.source
        if reply.ident != self.ident or reply.payload != packets.ECHO_PAYLOAD:
            return
        pending = self.pending.get(reply.seq)
        if pending is None or pending.probe.target_packed != source:
            probe = self.by_target.get(source)
            if probe is not None:
                probe.late += 1
            return
        if self.prober._answered(pending, at):
            del self.pending[reply.seq]


class _NeighbourChannel(_Channel):
    """A packet socket speaking as ``mac``; a probe's frame is rebuilt only when the
    target's MAC becomes known (broadcast first, unicast after)."""

    def __init__(self, prober: Prober, sock: socket.socket, mac: bytes) -> None:
        super().__init__(prober, sock)
        self.mac = mac

    @abstractmethod
    def build_frame(self, probe: _Probe) -> bytes:
        """The request frame for ``probe`` as addressed now."""

    def send(self, probe: _Probe, pending: _Pending) -> None:
        if probe.frame_for != probe.peer_mac or not probe.frame:  # the same frame every time
            probe.frame = self.build_frame(probe)
            probe.frame_for = probe.peer_mac
        self.sock.send(probe.frame)


class _ArpChannel(_NeighbourChannel):
    def build_frame(self, probe: _Probe) -> bytes:
        dst = probe.peer_mac or packets.BROADCAST_MAC
        return packets.build_arp_request(self.mac, probe.source, probe.target_packed, dst)

    def received(self, data: bytes, address: tuple, at: float) -> None:
        reply = packets.parse_arp_reply(data)
        if reply is None:
            return
        probe = self.by_target.get(reply.sender_ip)
        if probe is None or reply.target_mac != self.mac or reply.target_ip != probe.source:
            return
        self.answered_by_neighbour(probe, at, reply.sender_mac)


class _NdChannel(_NeighbourChannel):
    def build_frame(self, probe: _Probe) -> bytes:
        return packets.build_neighbor_solicit(
            self.mac, probe.source, probe.target_packed, probe.peer_mac
        )

    def received(self, data: bytes, address: tuple, at: float) -> None:
        advert = packets.parse_neighbor_advert(data)
        if advert is None:
            return
        probe = self.by_target.get(advert.target)
        if probe is None:
            return
        if probe.source == packets.UNSPECIFIED6:  # the answer to a DAD-style NS: all-nodes
            if advert.eth_dst != packets.ALL_NODES_MAC or advert.destination != packets.ALL_NODES:
                return
        elif not (
            advert.solicited and advert.eth_dst == self.mac and advert.destination == probe.source
        ):
            return
        self.answered_by_neighbour(probe, at, advert.target_mac or advert.eth_src)


class Prober:
    """Path probes from one member: ``start(loop)``, results to ``on_result``, ``close()``.

    ``mac``: the MAC that ARP/NS probes speak as (default: see "Bond members" in the module
    docstring; otherwise the member's own).

    Starting reads the member over rtnetlink (a millisecond or so, blocking) and raises
    nodenetd's kernel errors: ``Gone`` (no such member), ``Refused`` (no CAP_NET_RAW),
    ``Unsupported`` (ARP/NS on a non-Ethernet member). Nothing is left open on failure.
    """

    def __init__(
        self,
        member: str,
        specs: Sequence[ProbeSpec],
        on_result: Callable[[ProbeResult], None],
        *,
        mac: str | None = None,
    ) -> None:
        keys = [spec.key for spec in specs]
        duplicates = sorted({f"{k} {t}" for k, t in keys if keys.count((k, t)) > 1})
        if duplicates:
            raise ProbeSpecError(f"{member}: probes listed twice: {', '.join(duplicates)}")
        if not specs:
            raise ProbeSpecError(f"{member}: no probes to run")
        self.member = member
        self.specs = tuple(specs)
        self.on_result = on_result
        self.ident = secrets.randbelow(0x10000)
        self._mac_option = packets.parse_mac(mac) if mac is not None else None
        self.mac: bytes | None = None  # what ARP/NS speak as, once started
        self.facts: sockets.MemberFacts
        self._probes: list[_Probe] = []
        self._channels: list[_Channel] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watching = False
        self._results: list[ProbeResult] = []  # outcomes of this wakeup, delivered sorted
        self._closed = False
        self._callback_errors = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open the sockets and send the first probes on ``loop`` (default: the running
        loop), whose ``time()`` must be ``time.monotonic()``, as asyncio's is."""
        if self._loop is not None or self._closed:
            raise RuntimeError(f"prober for {self.member} already started")
        loop = loop or asyncio.get_running_loop()
        self.facts = sockets.member_facts(self.member)
        try:
            self._open()
        except BaseException:
            self._close_sockets()
            raise
        self._loop = loop
        now = time.monotonic()
        for probe in self._probes:
            probe.next_at = now
            log.info(
                "probing %s: %s %s every %g ms, timeout %g ms, from %s%s",
                self.member,
                probe.kind,
                probe.target,
                probe.interval * 1000,
                probe.timeout * 1000,
                probe.source_text or "the kernel's choice of address",
                f" as {packets.format_mac(self.mac)}"
                if probe.kind in _NEIGHBOUR and self.mac
                else "",
            )
        self._timer = loop.call_soon(self._wake)

    def close(self) -> None:
        """Stop probing and close the sockets; unfinished probes report nothing."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch(False)
        self._close_sockets()
        self._loop = None

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closed

    def counters(self) -> dict[tuple[ProbeKind, str], ProbeCounters]:
        """Per (kind, target) counters: immutable snapshots."""
        return {(probe.kind, probe.target): probe.counters() for probe in self._probes}

    def sources(self) -> dict[tuple[ProbeKind, str], str | None]:
        """The source address each probe speaks from (None: the kernel's choice)."""
        return {(probe.kind, probe.target): probe.source_text for probe in self._probes}

    # -- sockets --------------------------------------------------------------------------

    def _choose_mac(self) -> tuple[bytes | None, bool]:
        """The MAC ARP/NS probes speak as, and whether it is not the member's current one."""
        facts = self.facts
        current = packets.parse_mac(facts.mac) if facts.mac else None
        if self._mac_option is not None:
            chosen: bytes | None = self._mac_option
        elif facts.slave_kind == "bond" and facts.perm_mac and facts.perm_mac != facts.mac:
            chosen = packets.parse_mac(facts.perm_mac)
        elif facts.slave_kind == "bond" and current is not None:
            # the member whose MAC the bond took: no MAC of its own left to probe with
            chosen = packets.local_mac(current + self.member.encode())
        else:
            chosen = current
        return chosen, chosen != current

    def _default_source(self, spec: ProbeSpec, private: bool) -> str:
        if private:
            if spec.kind == ProbeKind.ARP:
                return "0.0.0.0"
            assert self.mac is not None
            return socket.inet_ntop(socket.AF_INET6, packets.link_local_from_mac(self.mac))
        address = self.facts.source_for(ipaddress.ip_address(spec.target))
        if address is not None:
            return str(address.ip)
        return "0.0.0.0" if spec.kind == ProbeKind.ARP else "::"

    def _open(self) -> None:
        private = False
        if any(spec.kind in _NEIGHBOUR for spec in self.specs):
            self.mac, private = self._choose_mac()
        sources = {
            spec.key: spec.source or self._default_source(spec, private)
            for spec in self.specs
            if spec.kind in _NEIGHBOUR
        }
        unicast = self.mac if private else None
        all_nodes = (packets.ALL_NODES_MAC,) if "::" in sources.values() else ()
        echo: dict[tuple[bool, str | None], _EchoChannel] = {}
        neighbour: dict[ProbeKind, _Channel] = {}
        for spec in self.specs:
            channel: _Channel
            if spec.kind in _NEIGHBOUR:
                if spec.kind not in neighbour:
                    neighbour[spec.kind] = self._neighbour_channel(spec.kind, unicast, all_nodes)
                channel = neighbour[spec.kind]
                source = sources[spec.key]
            else:
                six = spec.kind == ProbeKind.ICMP6
                if (six, spec.source) not in echo:
                    echo[(six, spec.source)] = self._echo_channel(six, spec.source)
                channel = echo[(six, spec.source)]
                source = spec.source
            probe = _Probe(spec, channel, source)
            channel.add(probe)
            self._probes.append(probe)

    def _neighbour_channel(
        self, kind: ProbeKind, unicast: bytes | None, all_nodes: tuple[bytes, ...]
    ) -> _Channel:
        if kind == ProbeKind.ARP:
            sock, mac = sockets.open_packet(
                self.member,
                packets.ETH_P_ARP,
                sockets.arp_reply_program(),
                "arp probe socket",
                unicast=unicast,
            )
            channel: _Channel = _ArpChannel(self, sock, self.mac or mac)
        else:
            sock, mac = sockets.open_packet(
                self.member,
                packets.ETH_P_IPV6,
                sockets.neighbor_advert_program(),
                "ns probe socket",
                unicast=unicast,
                multicast=all_nodes,
            )
            channel = _NdChannel(self, sock, self.mac or mac)
        self._channels.append(channel)
        return channel

    def _echo_channel(self, six: bool, source: str | None) -> _EchoChannel:
        family = socket.AF_INET6 if six else socket.AF_INET
        bind: tuple | None = None
        if source is not None:
            scope = self.facts.index if ipaddress.ip_address(source).is_link_local else 0
            bind = (source, 0, 0, scope) if six else (source, 0)
        sock = sockets.open_icmp(self.member, family, self.ident, bind)
        self._channels.append(channel := _EchoChannel(self, sock, six))
        return channel

    def _watch(self, on: bool) -> None:
        """Register the sockets with the loop's reader callbacks, or stop."""
        loop = self._loop
        if on == self._watching or loop is None or loop.is_closed():
            return
        for channel in self._channels:
            if on:
                loop.add_reader(channel.sock.fileno(), self._collect)
            else:
                loop.remove_reader(channel.sock.fileno())
        self._watching = on

    def _close_sockets(self) -> None:
        for channel in self._channels:
            channel.sock.close()
        self._channels.clear()

    # -- the timer ------------------------------------------------------------------------

    def _wake(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            now = self._collect()
            for probe in self._probes:
                if probe.next_at <= now + _EARLY:
                    self._send(probe, probe.next_at)
                    # the next slot index, from the clock; never the same slot twice
                    slot = math.floor(now / probe.interval) + 1
                    if probe.slot is not None:
                        probe.skipped += max(0, slot - probe.slot - 1)
                        slot = max(slot, probe.slot + 1)
                    probe.slot = slot
                    probe.next_at = slot * probe.interval
        finally:
            self._flush()
            if not self._closed and self._loop is not None:
                self._schedule()

    def _collect(self) -> float:
        """Read the replies of every socket (all of them: a reply still queued on another one
        may be the one that meets a deadline), time out what is overdue, and deliver the
        outcomes in order of ``at``; returns now."""
        now, offset = _clock_offset()
        try:
            for channel in self._channels:
                channel.drain(now, offset)
            for probe in self._probes:
                self._expire(probe, now)
        finally:
            self._flush()
        return now

    def _flush(self) -> None:
        results, self._results = self._results, []
        results.sort(key=_at)
        for result in results:
            try:
                self.on_result(result)
            except Exception:
                self._callback_errors += 1
                if self._callback_errors == 1:
                    log.exception("%s: probe result callback failed (logged once)", self.member)

    def _schedule(self) -> None:
        wake = min(probe.next_at for probe in self._probes)
        for probe in self._probes:
            oldest = probe.oldest()
            if oldest is not None and oldest.deadline < wake:
                wake = oldest.deadline
        assert self._loop is not None
        self._watch(wake - time.monotonic() > PROMPT_READ)
        self._timer = self._loop.call_at(wake, self._wake)

    def _expire(self, probe: _Probe, now: float) -> None:
        while (pending := probe.oldest()) is not None and pending.deadline <= now + _EARLY:
            probe.outstanding.popleft()
            pending.done = True
            probe.timeouts += 1
            probe.peer_mac = None  # the next ARP/NS goes broadcast again
            probe.channel.expired(pending)
            self._emit(ProbeResult(self.member, probe.key, False, None, pending.deadline,
                                   pending.sent_at, "timeout"))

    def _send(self, probe: _Probe, slot: float) -> None:
        sent_at = time.monotonic()
        deadline = max(slot + probe.timeout, sent_at + probe.timeout / 2)
        pending = _Pending(probe, sent_at, deadline)
        try:
            probe.channel.send(probe, pending)
        except OSError as err:
            probe.send_errors += 1
            name = errno.errorcode.get(err.errno or 0, str(err.errno))
            self._emit(ProbeResult(self.member, probe.key, False, None, sent_at, sent_at,
                                   f"send: {name}"))
            return
        probe.sent += 1
        probe.outstanding.append(pending)

    # -- replies --------------------------------------------------------------------------

    def _answered(self, pending: _Pending, at: float) -> bool:
        """A reply received at ``at`` for ``pending``; False if it came after the deadline
        (the probe then times out as if it had never come)."""
        probe = pending.probe
        if at > pending.deadline:
            probe.late += 1
            return False
        pending.done = True
        rtt = max(0.0, at - pending.sent_at)
        probe.ok += 1
        probe.last_rtt = rtt
        probe.rtt_counts[bisect_left(RTT_BUCKETS, rtt)] += 1
        probe.rtt_sum += rtt
        probe.oldest()  # drop it (and any answered before it) from the front
        self._emit(ProbeResult(self.member, probe.key, True, rtt, at, pending.sent_at))
        return True

    def _emit(self, result: ProbeResult) -> None:
        self._results.append(result)


def _at(result: ProbeResult) -> float:
    return result.at
