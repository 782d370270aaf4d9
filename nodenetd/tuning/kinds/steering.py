"""Queue steering (kind ``steering``) and queue interrupt affinity (kind ``irq_affinity``).

Values follow the kernel's Documentation/networking/scaling.rst:

- **RPS** (``rps_cpus``): the CPUs that may process packets of an RX queue; every RX queue
  gets the same set. The kernel keeps RPS off isolated (``isolcpus=``) and ``nohz_full``
  CPUs (net-sysfs): ``all`` and ``numa-local`` leave them out, an explicit list that names
  them is skipped with that reason.
- **RFS** (``rps_flow_cnt``): the flow table size per RX queue, a power of two (the kernel
  rounds up; it refuses 1). ``auto`` is scaling.rst's ``rps_sock_flow_entries / N`` for N
  RX queues, from the value the profile gives ``net.core.rps_sock_flow_entries`` (else the
  kernel's, else scaling.rst's 32768). RFS does nothing while that global sysctl is 0: the
  plan warns.
- **XPS** (``xps_cpus``): the CPUs that transmit on a TX queue. Spread by default (each CPU
  on exactly one queue: :func:`nodenetd.cpuset.spread`), scaling.rst's "one CPU per queue"
  and, with fewer queues, CPUs grouped per queue; ``spread: false`` gives every queue the
  whole set.
- **IRQ affinity** (``irq_affinity``): each queue interrupt of the NIC to one CPU of the set,
  queue N to the N-th CPU (``spread``, the default; the same CPU as the first XPS CPU of TX
  queue N), or every interrupt to the whole set. irqbalance owns interrupt affinity while
  it runs (see :mod:`nodenetd.tuning.ownership`): the plan leaves them to it and says how
  to exclude them, unless ``override: irqbalance``.

Keys. A profile key stands for one setting per queue the interface has when planned
(``expand``): ``rx-3.rps_cpus``, ``rx-3.rps_flow_cnt``, ``tx-0.xps_cpus``, and for IRQs
``38:virtio2-input.0`` (number and action name: a number another device reuses is never
written). The journal holds each queue's own original; restore puts each back and forgets
the queues that are gone. Values are what the kernel prints (masks in its exact ``%*pb``
form, affinity lists canonical), so what is journaled goes back unchanged.

Queue counts come from ``channels``: both kinds follow it. The transaction re-plans them
after a channel change of the same interface, in the same transaction (new queues are
steered, vanished ones dropped), and restores them after the channels are restored, when
the queues they belonged to exist again. They also follow ``qdisc``: setting mqprio's
traffic classes resets XPS.
"""

from __future__ import annotations

from typing import Any

from nodenetd.config.model import Wanted
from nodenetd.cpuset import (
    CpuSetError,
    Placement,
    format_cpulist,
    format_mask,
    parse_cpulist,
    parse_mask,
    spread,
)
from nodenetd.errors import Gone, KernelError, Unsupported
from nodenetd.kernel.steering import (
    IRQ_READ_ONLY,
    QUEUES_READ_ONLY,
    CpuFacts,
    NicIrqs,
    Queues,
)
from nodenetd.tuning.kind import Batch, SettingKind, each
from nodenetd.tuning.kinds.sysctl import resolve_value
from nodenetd.tuning.plan import Plan, PlanWarning, Target
from nodenetd.tuning.session import KernelSession

SOCK_FLOW_ENTRIES = "net.core.rps_sock_flow_entries"
SCALING_SOCK_FLOW_ENTRIES = 32768  # scaling.rst: "a value of 32768 ... works fairly well"
PROFILE_KEYS = {"rps_cpus": "rx", "rps_flow_cnt": "rx", "xps_cpus": "tx"}


# --------------------------------------------------------------------------- shared reads


def _queues(session: KernelSession, target: Target) -> Queues:
    cache: dict[str, Queues] = session.cached("steering:queues", dict)
    device = target.device or ""
    if device not in cache:
        cache[device] = session.steering.queues(device)
    return cache[device]


def _facts(session: KernelSession) -> CpuFacts:
    return session.cached("steering:cpus", session.steering.cpu_facts)


def _local(session: KernelSession, target: Target) -> frozenset[int] | None:
    cache: dict[str, frozenset[int] | None] = session.cached("steering:numa", dict)
    device = target.device or ""
    if device not in cache:
        node = session.steering.numa_node(device)
        cache[device] = None if node is None else (session.steering.node_cpus(node) or None)
    return cache[device]


def machine_cpus(session: KernelSession, target: Target, placement: Placement,
                 setting: str) -> frozenset[int]:
    """The CPUs a placement stands for here; Unsupported for CPUs this machine has not got."""
    facts = _facts(session)
    cpus = placement.cpus.resolve(facts.online, _local(session, target))
    absent = cpus - facts.online
    if absent:
        plural = len(absent) > 1
        raise Unsupported(str(target), setting,
                          f"CPU{'s' if plural else ''} {format_cpulist(absent)} "
                          f"{'are' if plural else 'is'} not online on this machine "
                          f"(online: {format_cpulist(facts.online)})")
    return cpus


def _split(key: str) -> tuple[str, str]:
    queue, _, attr = key.partition(".")
    return queue, attr


def _pow2(count: int) -> int:
    """The table size the kernel makes of a requested count: 0 stays 0 (RFS off), else the
    next power of two, at least 2 (net-sysfs refuses 1)."""
    return 0 if count <= 0 else max(2, 1 << (count - 1).bit_length())


# --------------------------------------------------------------------------- RPS, RFS, XPS


class SteeringKind(SettingKind):
    name = "steering"
    multi_key = False  # one sysfs file per queue attribute: its own write and result
    follows = ("channels", "qdisc")

    def prepare(self, session: KernelSession, desired: Any) -> None:
        """The rps_sock_flow_entries ``auto`` flow counts divide: the profile's value if it
        sets one, else the kernel's (if RFS is on), else scaling.rst's 32768."""
        now = session.steering.sock_flow_entries()
        wanted = desired.sysctls.get(SOCK_FLOW_ENTRIES)
        entries = now or 0
        if wanted is not None:
            try:
                entries = int(resolve_value(wanted.value, str(now or 0)).split()[0])
            except (ValueError, IndexError):
                entries = 0
        session.cached("steering:entries", dict)["value"] = entries or SCALING_SOCK_FLOW_ENTRIES

    def expand(self, session: KernelSession, target: Target, key: str,
               wanted: Wanted) -> list[str]:
        direction = PROFILE_KEYS[key]
        indexes = getattr(_queues(session, target), direction)
        if not indexes:
            raise Unsupported(str(target), f"steering.{key}",
                              f"the device has no {direction.upper()} queues")
        # one skip for the interface, not one per queue
        if not session.steering.queue_writable(target.device or "", f"{direction}-{indexes[0]}",
                                               key):
            raise Unsupported(str(target), f"steering.{key}", QUEUES_READ_ONLY)
        if key != "rps_flow_cnt":
            self._cpus(session, target, key, wanted.value)
        return [f"{direction}-{index}.{key}" for index in indexes]

    def profile_key(self, key: str) -> str:
        return _split(key)[1] or key

    def _cpus(self, session: KernelSession, target: Target, attr: str,
              placement: Placement) -> frozenset[int]:
        setting = f"steering.{attr}"
        cpus = machine_cpus(session, target, placement, setting)
        if attr == "rps_cpus":
            kept = cpus & _facts(session).housekeeping
            left_out = cpus - kept
            if left_out and (placement.cpus.word is None or not kept):
                raise Unsupported(str(target), setting,
                                  f"CPUs {format_cpulist(left_out)} are isolated (isolcpus= or "
                                  "nohz_full=): the kernel keeps RPS off them")
            cpus = kept
        return cpus

    def current(self, session: KernelSession, target: Target, key: str) -> Any:
        queue, attr = _split(key)
        values: dict[tuple[str, str], str] = session.cached(self.name, dict)
        slot = (target.device or "", key)
        if slot not in values:
            values[slot] = session.steering.read_queue(target.device or "", queue, attr)
        text = values[slot]
        if attr == "rps_flow_cnt":
            try:
                return int(text)
            except ValueError:
                raise Unsupported(str(target), f"steering.{key}",
                                  f"unreadable flow count {text!r}") from None
        return text

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> Any:
        queue, attr = _split(key)
        if attr == "rps_flow_cnt":
            count = wanted.value
            if count == "auto":
                entries = session.cached("steering:entries", dict).get(
                    "value", SCALING_SOCK_FLOW_ENTRIES)
                rx_queues = max(1, len(_queues(session, target).rx))
                count = -(-entries // rx_queues)
            return _pow2(int(count))
        placement: Placement = wanted.value
        cpus = self._cpus(session, target, attr, placement)
        if attr == "xps_cpus" and placement.spread:
            tx = _queues(session, target).tx
            index = int(queue.partition("-")[2])
            cpus = spread(cpus, tx.index(index) if index in tx else index, len(tx))
        return format_mask(cpus, _facts(session).nr_cpu_ids)

    def in_sync(self, current: Any, desired: Any) -> bool:
        if isinstance(desired, int) or isinstance(current, int):
            return current == desired
        try:
            return parse_mask(str(current)) == parse_mask(str(desired))
        except CpuSetError:
            return current == desired

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        def write(target: Target, values: Any) -> None:
            for key, value in values.items():
                queue, attr = _split(key)
                session.steering.write_queue(target.device or "", queue, attr, str(value))

        return each(batch, write)

    def refresh(self, session: KernelSession) -> None:
        for name in (self.name, "steering:queues"):
            session.invalidate(name)

    def warnings(self, session: KernelSession, desired: Any, plan: Plan) -> list[PlanWarning]:
        found: list[PlanWarning] = []
        flows = sorted(name for name, bound in desired.interfaces.items()
                       if bound.settings.get(self.name, {}).get("rps_flow_cnt") is not None
                       and bound.settings[self.name]["rps_flow_cnt"].value != 0)
        if flows and SOCK_FLOW_ENTRIES not in desired.sysctls:
            now = session.steering.sock_flow_entries()
            where = ", ".join(flows[:4]) + ("..." if len(flows) > 4 else "")
            if now is None:
                found.append(PlanWarning(Target(), self.name, (
                    f"rps_flow_cnt (RFS) on {where} needs {SOCK_FLOW_ENTRIES}, a global sysctl "
                    "of the initial network namespace, which this namespace cannot see: RFS "
                    "steers nothing until the host sets it (scaling.rst suggests 32768)")))
            elif now == 0:
                found.append(PlanWarning(Target(), self.name, (
                    f"rps_flow_cnt (RFS) on {where} has no effect while {SOCK_FLOW_ENTRIES} "
                    f"is 0: add '{SOCK_FLOW_ENTRIES}: 32768' to the profile's sysctls "
                    "(Documentation/networking/scaling.rst, RFS)")))
        found += requeue_warnings(self.name, plan)
        return found


def requeue_warnings(kind: str, plan: Plan) -> list[PlanWarning]:
    """One line per interface whose queue count this plan changes while ``kind`` has
    per-queue settings on it: those are re-planned after the channel change."""
    found = []
    changed: dict[Target, list[str]] = {}
    for change in plan.changes:
        if change.kind == "channels":
            changed.setdefault(change.target, []).append(
                f"{change.key} {change.current} -> {change.desired}")
    planned = {i.target for i in (*plan.changes, *plan.in_sync) if i.kind == kind}
    for target, what in changed.items():
        if target in planned:
            found.append(PlanWarning(target, kind, (
                f"channels change the queue count ({', '.join(what)}): {kind} is shown for the "
                "queues there are now, and re-planned for the queues there are after the "
                "channels are set, in the same transaction")))
    return found


# --------------------------------------------------------------------------- IRQ affinity


def _irq_names(session: KernelSession) -> dict[int, tuple[str, ...]]:
    return session.cached("steering:irqnames", session.steering.interrupts)


def _nic(session: KernelSession, target: Target) -> NicIrqs | None:
    cache: dict[str, NicIrqs | None] = session.cached("steering:nic", dict)
    device = target.device or ""
    if device not in cache:
        cache[device] = session.steering.nic_irqs(device, _irq_names(session))
    return cache[device]


def _irq_key(key: str) -> tuple[int, str]:
    number, _, name = key.partition(":")
    return int(number), name


class IrqAffinityKind(SettingKind):
    name = "irq_affinity"
    multi_key = False  # one /proc/irq file per interrupt
    follows = ("channels",)

    def expand(self, session: KernelSession, target: Target, key: str,
               wanted: Wanted) -> list[str]:
        nic = _nic(session, target)
        if nic is None:
            raise Unsupported(str(target), "irq_affinity",
                              "a virtual interface has no queue interrupts (this setting is "
                              "for NICs with MSI/MSI-X vectors)")
        if not nic.irqs:
            raise Unsupported(str(target), "irq_affinity",
                              "the device lists no interrupts (no msi_irqs, no irq)")
        queues = _queues(session, target)
        count = max(len(queues.rx), len(queues.tx))
        chosen = [q for q in nic.queues if q.index < count]
        if not chosen:
            sample = ", ".join(n for names in list(nic.names.values())[:4] for n in names)
            raise Unsupported(str(target), "irq_affinity",
                              f"none of its {len(nic.irqs)} interrupts is named like a queue "
                              f"interrupt ({sample or 'no names in /proc/interrupts'})")
        machine_cpus(session, target, wanted.value, "irq_affinity")
        if not session.steering.irq_writable(chosen[0].irq):
            raise Unsupported(str(target), "irq_affinity", IRQ_READ_ONLY)
        return [f"{q.irq}:{q.name}" for q in chosen]

    def profile_key(self, key: str) -> str:
        return "cpus"

    def _check(self, session: KernelSession, target: Target, key: str) -> int:
        """The IRQ number of a key, if it still carries the action name it was planned with
        (IRQ numbers are reused when a driver re-creates its vectors)."""
        irq, name = _irq_key(key)
        if name not in _irq_names(session).get(irq, ()):
            raise Gone(str(target), f"irq_affinity.{key}",
                       f"IRQ {irq} is no longer {name}")
        return irq

    def current(self, session: KernelSession, target: Target, key: str) -> str:
        irq = self._check(session, target, key)
        values: dict[int, str] = session.cached(self.name, dict)
        if irq not in values:
            values[irq] = format_cpulist(session.steering.irq_affinity(irq))
        return values[irq]

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Wanted,
                current: Any) -> str:
        placement: Placement = wanted.value
        cpus = machine_cpus(session, target, placement, "irq_affinity")
        if placement.spread and cpus:
            irq, _ = _irq_key(key)
            nic = _nic(session, target)
            queue = next((q for q in (nic.queues if nic else ()) if q.irq == irq), None)
            if queue is not None:
                ordered = sorted(cpus)
                cpus = frozenset({ordered[queue.index % len(ordered)]})
        return format_cpulist(cpus)

    def in_sync(self, current: Any, desired: Any) -> bool:
        try:
            return parse_cpulist(str(current)) == parse_cpulist(str(desired))
        except CpuSetError:
            return current == desired

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        def write(target: Target, values: Any) -> None:
            for key, value in values.items():
                irq = self._check(session, target, key)
                session.steering.set_irq_affinity(irq, parse_cpulist(str(value)),
                                                  target=str(target),
                                                  setting=f"irq_affinity.{key}")

        return each(batch, write)

    def refresh(self, session: KernelSession) -> None:
        for name in (self.name, "steering:irqnames", "steering:nic", "steering:queues"):
            session.invalidate(name)

    def warnings(self, session: KernelSession, desired: Any, plan: Plan) -> list[PlanWarning]:
        ownership = session.cached("ownership", lambda: None)
        balancer = getattr(ownership, "irqbalance", None)
        found: list[PlanWarning] = []
        if balancer is not None:
            left: dict[Target, list[int]] = {}
            for skip in plan.owned:
                if skip.kind == self.name:
                    left.setdefault(skip.target, []).append(_irq_key(skip.key)[0])
            for target, irqs in left.items():
                found.append(PlanWarning(target, self.name, irqbalance_advice(
                    balancer.who, target, sorted(irqs),
                    session.steering.driver_modules(target.device or ""))))
            overridden = sorted({c.target.device or "" for c in plan.changes
                                 if c.kind == self.name})
            if overridden:
                found.append(PlanWarning(Target(), self.name, (
                    f"{balancer.who} runs and may move the interrupts of "
                    f"{', '.join(overridden)} again (override: irqbalance); the daemon corrects "
                    "them and backs off if it keeps happening")))
        found += requeue_warnings(self.name, plan)
        return found


def irqbalance_advice(who: str, target: Target, irqs: list[int],
                      modules: tuple[str, ...]) -> str:
    """How to hand a NIC's interrupts from irqbalance to nodenetd (irqbalance(1))."""
    bans = " ".join(f"--banirq={irq}" for irq in irqs)
    module = f" (or --banmod={modules[-1]}, which survives renumbering)" if modules else ""
    return (f"{who} balances the queue interrupts of {target} (IRQ "
            f"{', '.join(map(str, irqs))}), so nodenetd leaves their affinity to it. To let "
            f"nodenetd set it, exclude them from irqbalance: IRQBALANCE_ARGS=\"{bans}\"{module} "
            "in /etc/default/irqbalance (Debian, Ubuntu; /etc/sysconfig/irqbalance on RHEL, "
            "Fedora), then restart irqbalance (irqbalance(1); IRQBALANCE_BANNED_CPULIST only "
            "keeps CPUs free of other interrupts, it still moves these). Or write override: "
            "irqbalance in steering.irq_affinity to set them anyway")
