"""What the kernel's types and related keys require of sysctl values, applied at plan time.

- **Type ranges.** Most ``net.*`` sysctls are C ``int`` (``proc_dointvec``): a value beyond
  2^31-1 is refused with EINVAL and would fail the whole transaction. A few are unsigned or
  ``long`` (the memory-pressure triples). A field outside its key's range is clamped to it
  and the plan says so, instead of failing on the node.
- **Dependent limits.** ``net.core.rmem_max``/``wmem_max`` cap what a socket may ask for with
  SO_RCVBUF/SO_SNDBUF; a profile that raises ``tcp_rmem``/``tcp_wmem``'s maximum above them
  leaves applications that size their buffers explicitly stuck at the old cap (bpftune's
  consistency rule). When the plan leaves ``*_max`` below the TCP maximum, it adds a change
  that raises it, with that reason. Neighbour-table thresholds stay ordered the same way
  (gc_thresh1 <= gc_thresh2 <= gc_thresh3: the kernel garbage-collects against them in that
  order), one step at a time, so raising gc_thresh1 raises the others behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nodenetd.config.model import Origin
from nodenetd.errors import KernelError
from nodenetd.tuning.plan import Change, Plan, Target

__all__ = ["LIMITS", "clamp_fields", "keep_limits_consistent"]

INT = (-(2**31), 2**31 - 1)
UINT = (0, 2**32 - 1)
LONG = (-(2**63), 2**63 - 1)
_RANGES = {
    "net.ipv4.tcp_mem": LONG, "net.ipv4.udp_mem": LONG, "net.sctp.sctp_mem": LONG,
    "net.netfilter.nf_conntrack_max": UINT, "net.netfilter.nf_conntrack_buckets": UINT,
    "net.core.rps_sock_flow_entries": UINT,
}


def clamp_fields(key: str, fields: tuple[int | str, ...]) -> tuple[tuple[int | str, ...], str]:
    """The fields within the key's type range, and what was clamped ("" when nothing)."""
    low, high = _RANGES.get(key, INT)
    clamped = tuple(min(max(f, low), high) if isinstance(f, int) else f for f in fields)
    if clamped == fields:
        return fields, ""
    return clamped, (f"{key}: {' '.join(map(str, fields))} clamped to "
                     f"{' '.join(map(str, clamped))} (the kernel's range {low}..{high})")


@dataclass(frozen=True)
class Limit:
    limit: str  # the cap, e.g. net.core.rmem_max
    source: str  # the key whose last field must not exceed it


LIMITS = (Limit("net.core.rmem_max", "net.ipv4.tcp_rmem"),
          Limit("net.core.wmem_max", "net.ipv4.tcp_wmem"),
          *(Limit(f"net.ipv{v}.neigh.default.gc_thresh{n + 1}",
                  f"net.ipv{v}.neigh.default.gc_thresh{n}") for v in (4, 6) for n in (1, 2)))


def keep_limits_consistent(plan: Plan, read: Callable[[str], str]) -> None:
    """Add or raise ``*_max`` changes so no cap stays below the TCP maximum the plan sets.
    ``read`` gives a global sysctl's current value (raises KernelError when it is absent)."""
    node = Target()
    for rule in LIMITS:
        source = _planned(plan, rule.source)
        if source is None:
            continue
        value, origin = source
        try:
            wanted = int(str(value).split()[-1])
        except (ValueError, IndexError):
            continue
        existing = next((c for c in plan.changes if c.target == node and c.key == rule.limit),
                        None)
        try:
            current = existing.current if existing else read(rule.limit)
            planned = int(existing.desired) if existing else int(current)
        except (KernelError, ValueError):
            continue  # no such key here (a pod's namespace): nothing to keep consistent
        if planned >= wanted:
            continue
        why = Origin(origin.profile, f"keeps {rule.limit} >= {rule.source} max",
                     origin.position)
        change = Change("sysctl", node, rule.limit, why, current, str(wanted))
        if existing is not None:
            plan.changes[plan.changes.index(existing)] = change
        else:
            plan.changes.append(change)
            plan.in_sync[:] = [i for i in plan.in_sync
                               if not (i.target == node and i.key == rule.limit)]


def _planned(plan: Plan, key: str) -> tuple[str, Origin] | None:
    node = Target()
    for change in plan.changes:
        if change.target == node and change.key == key:
            return str(change.desired), change.why
    for item in plan.in_sync:
        if item.target == node and item.key == key:
            return str(item.value), item.why
    return None
