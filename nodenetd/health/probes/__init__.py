"""Path probes bound to a member interface: ICMP and ICMPv6 echo, ARP and IPv6 neighbour
solicitation, on the daemon's asyncio event loop.

    from nodenetd.health.probes import Prober, ProbeSpec

    prober = Prober("eth1", [ProbeSpec("icmp", "192.0.2.1", interval=0.01),
                             ProbeSpec("arp", "192.0.2.1", interval=0.01)], on_result)
    prober.start(loop)          # results: ProbeResult(member, "icmp:192.0.2.1", ok, rtt, ...)
    prober.counters()           # {(kind, target): ProbeCounters(sent, ok, timeouts, ...)}
    prober.close()

``packets`` holds the pure builders and parsers, ``sockets`` the member-bound sockets and
their kernel filters, ``prober`` the scheduler. ``python -m nodenetd.health.probes`` runs
probers from a JSON plan and prints a JSON summary (the lab tests' driver).
"""

from nodenetd.health.probes.prober import (
    MIN_INTERVAL,
    ProbeCounters,
    ProbeKind,
    Prober,
    ProbeSpec,
    ProbeSpecError,
)
from nodenetd.health.signals import ProbeResult

__all__ = [
    "MIN_INTERVAL",
    "ProbeCounters",
    "ProbeKind",
    "ProbeResult",
    "ProbeSpec",
    "ProbeSpecError",
    "Prober",
]
