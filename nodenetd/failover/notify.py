"""Peer notification after a failover switch: gratuitous ARP and unsolicited NA, repeated.

    notifier = PeerNotifier("uplinks", NotifySettings(count=3, interval=0.2))
    ipv4, ipv6 = addresses_of("bond0")      # blocking rtnetlink read, a millisecond or so
    notifier.notify("bond0", ipv4=ipv4, ipv6=ipv6, reason="eth0 down, eth1 now active")
    notifier.counters()                     # NotifyCounters(rounds, arp_sent, na_sent, send_errors)
    notifier.close()

Why: after a switch the node's addresses are reachable through a new port, but upstream
switches still forward its MAC to the old port until their MAC tables age out (300 s by
default), and routers and hosts may hold ARP/ND entries for a MAC that changed. Detection takes
milliseconds; stale caches make the outage last minutes (vip-manager#12, keepalived#1510 in
the failover reference). Every frame sent on the new path teaches the switches where the MAC
now is; gratuitous ARP and unsolicited neighbour advertisements also rewrite the neighbours'
caches.

A round is one gratuitous ARP per IPv4 address and one unsolicited NA per IPv6 address
(``packets.build_gratuitous_arp`` and ``build_unsolicited_na``: the kernel's own frames, byte for
byte), sent through ``AF_PACKET`` sockets bound to the interface (``sockets.open_packet``),
speaking as ``mac`` or else the interface's current MAC. The first round leaves inside
``notify()``; the others follow on the event loop's timers at ``interval`` spacing, measured
from the first (monotonic ``loop.time()``). A newer ``notify()`` cancels the rounds still
pending: only the latest path is worth announcing.

Bonds: notify on the bond device itself, with the bond's MAC (the default). A frame sent on an
active-backup bond leaves through its active member, so send after the new active member is in
place (the kernel has reported it), or the first round goes out through the old one. The kernel
bond sends its own ``num_grat_arp`` announcements (default 1) as well; duplicates are harmless.
One notifier announces one interface: a bond with addressed VLAN devices on top needs one
notifier per VLAN device too (the kernel propagates its own announcements to VLANs).

What receivers do with them (Linux, verified in tests/integration/test_peer_notify.py):

- IPv4: a gratuitous ARP rewrites an existing neighbour entry (to the new MAC, STALE) whatever
  ``arp_accept`` says; ``arp_accept`` (default 0) only decides whether one *creates* an entry.
- IPv6: an NA with Override rewrites an existing entry (STALE); without an entry it is dropped
  unless ``accept_untracked_na`` is set (default 0).

Errors never reach the event loop. A frame that cannot be sent (ENETDOWN: the link is down;
ENOBUFS...) is counted in ``send_errors``, each failing round logs one warning, and the
remaining rounds still run, since the link may come back. When the interface is gone
(ENODEV/ENXIO) or cannot carry these frames at all (not Ethernet, no CAP_NET_RAW), the rounds
still pending are dropped.

Call ``notify``, ``cancel`` and ``close`` on the event loop's thread; ``counters()`` is an
immutable snapshot that any thread may read.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from nodenetd.daemon.logs import log_change
from nodenetd.errors import Gone, KernelError, NodenetdError, Unsupported
from nodenetd.health.probes import packets, sockets
from nodenetd.kernel import sysctl

__all__ = [
    "NotifyCounters",
    "NotifyError",
    "NotifySettings",
    "PeerNotifier",
    "addresses_of",
]

log = logging.getLogger("nodenetd")

MAX_COUNT = 255  # the bond's num_grat_arp/num_unsol_na range
MIN_INTERVAL = 0.01  # seconds; as for probes, what the loop's timers are good for
SETTING = "peer-notify"  # the journal's SETTING= field of notification log lines

# A classic BPF program of one instruction, BPF_RET|BPF_K 0: keep nothing. The sockets only
# send; with this filter attached before bind, no received frame is ever queued on them.
_DEAF = sockets.bpf_program((0x06, 0, 0, 0))
_GONE = (errno.ENODEV, errno.ENXIO)


class NotifyError(NodenetdError, ValueError):
    """Settings or a notify() call that cannot work; the message says what to change."""


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """How many rounds to send after a switch, and how far apart.

    ``count`` 3: the kernel bond's ``num_grat_arp``/``num_unsol_na`` and teamd's
    ``notify_peers.count`` default to 1, so a single lost frame (a congested uplink, a switch
    port still coming up) leaves the caches stale for minutes; keepalived sends
    ``garp_master_repeat`` 5 (and 5 more after ``garp_master_delay`` 5 s). Three is what the
    failover reference recommends for bonds (``num_grat_arp 3``): it survives two lost rounds
    for 3x the frames of the kernel default, a few hundred bytes per address. 0 disables.

    ``interval`` 0.2 s (the reference's ``peer_notif_delay 200``): wide enough that the
    rounds do not share one burst of loss or one switch port transition (the bond's own
    default spacing is one miimon, 100 ms), short enough that the last round is out within
    half a second, before TCP's first retransmission timeout (at least 200 ms, usually more)
    has backed off far.
    """

    count: int = 3
    interval: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise NotifyError(f"peer notification count must be an integer, not {self.count!r}")
        if not 0 <= self.count <= MAX_COUNT:
            raise NotifyError(
                f"peer notification count {self.count} is outside 0..{MAX_COUNT} (0 disables)"
            )
        interval = self.interval
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise NotifyError(f"peer notification interval must be a number, not {interval!r}")
        if not (math.isfinite(interval) and interval >= MIN_INTERVAL):
            raise NotifyError(
                f"peer notification interval {interval} s is below the minimum "
                f"{MIN_INTERVAL} s (or not a number)"
            )


@dataclass(frozen=True, slots=True)
class NotifyCounters:
    """Since the notifier was made: ``rounds`` run, frames sent by type, and frames that did
    not leave (``send_errors``). Rounds dropped by a newer switch or a vanished interface
    count nowhere: they never ran."""

    rounds: int = 0
    arp_sent: int = 0
    na_sent: int = 0
    send_errors: int = 0


def addresses_of(interface: str) -> tuple[list[IPv4Address], list[IPv6Address]]:
    """The interface's usable addresses, IPv4 and IPv6 (link-local and global), in the
    kernel's order: what to announce after a switch onto it. Tentative addresses (DAD still
    running) and ones whose DAD failed are left out, as the kernel's ``ndisc_send_unsol_na``
    leaves out tentative ones: another node may own them.

    One rtnetlink link request and one address dump (``sockets.member_facts``): it blocks for
    a millisecond or so. Raises ``Gone`` when there is no such interface."""
    facts = sockets.member_facts(interface)
    ipv4 = [a.ip for a in facts.addresses if isinstance(a, ipaddress.IPv4Interface)]
    ipv6 = [a.ip for a in facts.addresses if isinstance(a, ipaddress.IPv6Interface)]
    return ipv4, ipv6


@dataclass(slots=True, eq=False)
class _Burst:
    """The rounds of one notify() call."""

    interface: str
    mac: bytes | None
    ipv4: tuple[IPv4Address, ...]
    ipv6: tuple[IPv6Address, ...]
    reason: str
    router: bool
    start: float = 0.0
    done: int = 0  # rounds run
    handle: asyncio.TimerHandle | None = None


class PeerNotifier:
    """Sends the rounds for one group; a newer switch cancels the rounds still pending.

    ``loop``: where the later rounds run (default: the loop running when ``notify`` is
    called; with ``count`` 1 none is needed). Its ``time()`` must be monotonic, as asyncio's
    is."""

    def __init__(self, group: str, settings: NotifySettings,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.group = group
        self.settings = settings
        self._loop = loop
        self._burst: _Burst | None = None
        self._counters = NotifyCounters()
        self._closed = False

    def notify(self, interface: str, *, mac: bytes | None = None,
               ipv4: Sequence[IPv4Address], ipv6: Sequence[IPv6Address], reason: str) -> None:
        """Announce ``ipv4`` and ``ipv6`` on ``interface`` as ``mac`` (default: the interface's
        MAC at each round): the first round now, before this returns, the others on timers.
        Cancels the rounds of the previous notify() still pending.

        Raises ``NotifyError`` for arguments that cannot work (a MAC that is not 6 bytes, a
        multicast or unspecified address) before cancelling or sending anything; send errors
        are counted and logged, never raised."""
        if self._closed:
            raise RuntimeError(f"peer notifier for group {self.group} is closed")
        if mac is not None and (len(mac) != 6 or mac[0] & 0x01):
            raise NotifyError(f"group {self.group}: {mac!r} is not a unicast MAC address")
        v4: tuple[IPv4Address, ...] = _unicast(interface, ipv4, 4)
        v6: tuple[IPv6Address, ...] = _unicast(interface, ipv6, 6)
        count = self.settings.count
        idle = count == 0 or not (v4 or v6)
        loop = None
        if count > 1 and not idle:  # first, so a missing loop fails before anything happens
            loop = self._loop or asyncio.get_running_loop()
        self.cancel()
        if idle:
            why = "disabled (count 0)" if count == 0 else "no addresses to announce"
            log_change(log, logging.INFO,
                       f"group {self.group}: no peer notification on {interface}: {why}; "
                       f"{reason}", interface=interface, setting=SETTING, reason=reason)
            return
        burst = _Burst(interface, mac, v4, v6, reason, _forwards_ipv6(interface) if v6 else False)
        self._burst = burst
        if loop is not None:
            burst.start = loop.time()
        self._round(burst, loop)

    def cancel(self) -> None:
        """Drop the rounds still pending (the ones already sent stay sent)."""
        burst, self._burst = self._burst, None
        if burst is not None and burst.handle is not None:
            burst.handle.cancel()
            burst.handle = None

    def counters(self) -> NotifyCounters:
        """An immutable snapshot; safe to read from any thread."""
        return self._counters

    def close(self) -> None:
        """Cancel what is pending; notify() may not be called again. Idempotent."""
        self.cancel()
        self._closed = True

    # -- rounds ---------------------------------------------------------------------------

    def _round(self, burst: _Burst, loop: asyncio.AbstractEventLoop | None) -> None:
        if burst is not self._burst:  # superseded meanwhile
            return
        burst.handle = None
        arp, na, failures, fatal, mac = self._send(burst)
        burst.done += 1
        c = self._counters
        self._counters = NotifyCounters(c.rounds + 1, c.arp_sent + arp, c.na_sent + na,
                                        c.send_errors + sum(failures.values()))
        count = self.settings.count
        if burst.done == 1:
            self._log_burst(burst, mac)
        last = burst.done >= count
        if failures:
            problems = ", ".join(f"{name} x{n}" if n > 1 else name
                                 for name, n in failures.items())
            total = len(burst.ipv4) + len(burst.ipv6)
            if fatal and not last:
                then = f"; {fatal}, the remaining {count - burst.done} round(s) are dropped"
            elif fatal:
                then = f"; {fatal}"
            else:
                then = "" if last else "; the remaining rounds still run"
            log_change(log, logging.WARNING,
                       f"group {self.group}: peer notification round {burst.done}/{count} on "
                       f"{burst.interface}: {sum(failures.values())} of {total} frame(s) not "
                       f"sent ({problems}){then}",
                       interface=burst.interface, setting=SETTING, reason=burst.reason)
        if last or fatal or loop is None:
            self._burst = None
            return
        planned = burst.start + burst.done * self.settings.interval
        # After a stall of the loop, keep the rounds apart rather than send them back to back.
        at = max(planned, loop.time() + self.settings.interval / 2)
        burst.handle = loop.call_at(at, self._round, burst, loop)

    def _send(self, burst: _Burst) -> tuple[int, int, Counter[str], str | None, bytes | None]:
        """One round: (ARPs sent, NAs sent, failures by errno name, why no later round can
        work or None, the MAC spoken as)."""
        arp = na = 0
        failures: Counter[str] = Counter()
        fatal: str | None = None
        mac = burst.mac
        for ethertype, addresses in ((packets.ETH_P_ARP, burst.ipv4),
                                     (packets.ETH_P_IPV6, burst.ipv6)):
            if not addresses:
                continue
            try:
                sock, own_mac = sockets.open_packet(burst.interface, ethertype, _DEAF, SETTING)
            except KernelError as err:  # Gone, not Ethernet, no CAP_NET_RAW: no round can work
                failures[_name(err.errno) if err.errno else type(err).__name__] += len(addresses)
                fatal = fatal or _why_never(burst.interface, err)
                continue
            with sock:
                speak_as = burst.mac or own_mac
                mac = speak_as
                for address in addresses:
                    if ethertype == packets.ETH_P_ARP:
                        frame = packets.build_gratuitous_arp(speak_as, address.packed)
                    else:
                        frame = packets.build_unsolicited_na(speak_as, address.packed,
                                                             router=burst.router)
                    try:
                        sock.send(frame)
                    except OSError as err:
                        failures[_name(err.errno)] += 1
                        if err.errno in _GONE:
                            fatal = fatal or f"{burst.interface} is gone"
                        continue
                    if ethertype == packets.ETH_P_ARP:
                        arp += 1
                    else:
                        na += 1
        return arp, na, failures, fatal, mac

    def _log_burst(self, burst: _Burst, mac: bytes | None) -> None:
        count, interval = self.settings.count, self.settings.interval
        what = []
        if burst.ipv4:
            what.append("gratuitous ARP for " + ", ".join(map(str, burst.ipv4)))
        if burst.ipv6:
            flags = "R+O" if burst.router else "O"
            what.append(f"unsolicited NA ({flags}) for " + ", ".join(map(str, burst.ipv6)))
        speaker = f" as {packets.format_mac(mac)}" if mac else ""
        rounds = "1 round" if count == 1 else f"{count} rounds {interval * 1000:g} ms apart"
        log_change(log, logging.INFO,
                   f"group {self.group}: peer notification on {burst.interface}{speaker}, "
                   f"{rounds}: {'; '.join(what)} ({burst.reason})",
                   interface=burst.interface, setting=SETTING,
                   new=" ".join(map(str, (*burst.ipv4, *burst.ipv6))), reason=burst.reason)


def _unicast(interface: str, addresses: Iterable[object], version: int) -> tuple:
    """The addresses as IPv4Address or IPv6Address (strings are taken too), duplicates
    dropped, order kept; NotifyError for one that is not a unicast address of ``version``."""
    kind = IPv4Address if version == 4 else IPv6Address
    result: dict = {}
    for item in addresses:
        try:
            address = kind(item)  # type: ignore[arg-type]
        except ValueError:
            raise NotifyError(f"{interface}: {item!r} is not an IPv{version} address") from None
        if address.is_multicast or address.is_unspecified:
            raise NotifyError(f"{interface}: {address} is not a unicast address to announce")
        result[address] = None
    return tuple(result)


def _forwards_ipv6(interface: str) -> bool:
    """Whether ``interface`` forwards IPv6: the Router flag of its NAs says so, as the kernel's
    own (``idev->cnf.forwarding``) and keepalived's do."""
    key = sysctl.SysctlKey(("net", "ipv6", "conf", interface, "forwarding"))
    try:
        return sysctl.read(key) not in ("", "0")
    except (KernelError, OSError):
        return False


def _why_never(interface: str, err: KernelError) -> str:
    """Why no later round can work either, from the error that opening the socket raised."""
    if isinstance(err, Gone):
        return f"{interface} is gone"
    if isinstance(err, Unsupported):
        return f"{interface} is not an Ethernet interface (no ARP or neighbour discovery)"
    return err.reason


def _name(code: int | None) -> str:
    return errno.errorcode.get(code, str(code)) if code else "error"

