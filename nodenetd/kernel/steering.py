"""Queue steering and interrupt affinity through sysfs and procfs, by direct file I/O.

- Per RX queue ``/sys/class/net/IF/queues/rx-N/rps_cpus`` (hex mask) and ``rps_flow_cnt``;
  per TX queue ``tx-N/xps_cpus`` (hex mask) and ``xps_rxqs`` (a mask of RX queues, for
  busy-polling sockets: readable and writable here, not a profile setting). The queue
  directories are the queues the device has now (``real_num_rx/tx_queues``): a channel
  change adds or removes them, and a re-created queue starts from the kernel's defaults.
- ``/proc/irq/N/smp_affinity_list`` (written and read back) and ``effective_affinity_list``
  (where the interrupt is delivered; on x86 one CPU of the list, moved with the next
  interrupt). Managed interrupts, whose affinity the kernel owns, refuse writes with EIO.
- Which interrupts are the NIC's: the MSI/MSI-X vectors its PCI function lists in
  ``device/msi_irqs/`` (a virtio NIC's ``device`` is the virtio device: the vectors are its
  PCI parent's), or the single legacy ``device/irq``; which queue each serves, from the
  action names in ``/proc/interrupts`` (``mlx5_comp3@pci:0000:3b:00.0``, ``eth0-TxRx-3``,
  ``i40e-eth0-TxRx-3``, ``eth0-rx-3``, ``virtio2-input.3``). tuned cannot do this mapping.
- CPU facts (``/sys/devices/system/cpu/{online,possible,isolated,nohz_full}``), the NIC's
  NUMA node (``device/numa_node``) and a node's CPUs (``node/nodeN/cpulist``).
- Whether irqbalance runs: a process called ``irqbalance`` in ``/proc`` (its command line
  says which IRQs and modules it was told to leave alone), or a non-empty
  ``irqbalance.service`` cgroup when the process is outside our PID namespace.

``ip netns exec`` mounts a sysfs for the namespace, so ``/sys/class/net`` shows the
namespace's interfaces; ``/proc/irq`` and ``/proc/interrupts`` are the host's either way.
Both roots are parameters, so the mapping can be tested against recorded trees.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nodenetd.cpuset import CpuSetError, format_cpulist, parse_cpulist
from nodenetd.errors import Gone, KernelError, Unsupported
from nodenetd.kernel.netlink import errno_text, kernel_error

__all__ = [
    "CpuFacts",
    "Irqbalance",
    "NicIrqs",
    "QueueIrq",
    "Queues",
    "SteeringFs",
    "irq_write_error",
    "parse_interrupts",
    "queue_of_irq",
]

QUEUES_READ_ONLY = ("not writable by this process (a read-only /sys, or not root): under the "
                    "hardened systemd unit, queue steering needs ReadWritePaths=/sys/devices "
                    "and CAP_DAC_OVERRIDE (systemd/README.md)")
IRQ_READ_ONLY = ("/proc/irq is not writable by this process: interrupt affinity needs root and, "
                 "under the systemd unit, ReadWritePaths=/proc/irq (systemd/README.md)")
QUEUE_ATTRS = {"rx": ("rps_cpus", "rps_flow_cnt"), "tx": ("xps_cpus", "xps_rxqs")}
_QUEUE_RE = re.compile(r"^(rx|tx)-(\d+)$")
_PARENT_LEVELS = 3  # how far up from device/ to look for msi_irqs (virtio: one level)
_IRQBALANCE_UNIT_CGROUPS = (  # cgroup v2, v1 hybrid (unified), v1 name=systemd
    "fs/cgroup/system.slice/irqbalance.service/cgroup.procs",
    "fs/cgroup/unified/system.slice/irqbalance.service/cgroup.procs",
    "fs/cgroup/systemd/system.slice/irqbalance.service/cgroup.procs",
)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Queues:
    """The queue indexes a device has now, as sysfs lists them."""

    rx: tuple[int, ...]
    tx: tuple[int, ...]


@dataclass(frozen=True)
class CpuFacts:
    online: frozenset[int]
    nr_cpu_ids: int  # bits in every CPU mask the kernel prints: highest possible CPU + 1
    isolated: frozenset[int] = frozenset()  # isolcpus= (the scheduler-domain isolation)
    nohz_full: frozenset[int] = frozenset()

    @property
    def housekeeping(self) -> frozenset[int]:
        """Online CPUs the kernel lets RPS use (net-sysfs drops isolated and nohz_full ones)."""
        return self.online - self.isolated - self.nohz_full


@dataclass(frozen=True)
class QueueIrq:
    """One queue interrupt of a NIC: which RX and/or TX queue index it serves."""

    irq: int
    name: str
    rx: int | None
    tx: int | None

    @property
    def index(self) -> int:
        return self.rx if self.rx is not None else self.tx  # type: ignore[return-value]

    @property
    def queue(self) -> str:
        """``rxtx-3`` (a combined channel), ``rx-3`` or ``tx-3``."""
        if self.rx is not None and self.tx is not None:
            return f"rxtx-{self.rx}"
        return f"rx-{self.rx}" if self.rx is not None else f"tx-{self.tx}"


@dataclass(frozen=True)
class NicIrqs:
    """What the kernel says about a NIC's interrupts."""

    owner: str  # the sysfs device directory the vectors belong to (the PCI function)
    irqs: tuple[int, ...]  # every vector of that device, queue or not
    queues: tuple[QueueIrq, ...]  # the queue interrupts, in queue order
    names: dict[int, tuple[str, ...]] = field(default_factory=dict)
    modules: tuple[str, ...] = ()  # driver modules that own them (irqbalance --banmod=)


@dataclass(frozen=True)
class Irqbalance:
    """A running irqbalance and what it was told to leave alone."""

    pid: int | None  # None: seen only as a non-empty irqbalance.service cgroup
    banned_irqs: frozenset[int] = frozenset()
    banned_modules: frozenset[str] = frozenset()
    oneshot: bool = False

    def leaves_alone(self, irq: int, modules: tuple[str, ...] = ()) -> bool:
        return irq in self.banned_irqs or any(m in self.banned_modules for m in modules)

    @property
    def who(self) -> str:
        return f"irqbalance (pid {self.pid})" if self.pid else "irqbalance.service"


# --------------------------------------------------------------------------- parsing


def parse_interrupts(text: str) -> dict[int, tuple[str, ...]]:
    """``/proc/interrupts`` -> {irq: action names}. Lines are ``N: <one count per online
    CPU> <chip> <hwirq>-<handler>  <name>[, <name>...]`` (kernel/irq/proc.c
    ``show_interrupts``); the names follow the last run of two or more spaces. Architecture
    rows (``NMI:``, ``LOC:``) are skipped; an IRQ with no handler has no names."""
    lines = text.splitlines()
    if not lines:
        return {}
    ncpus = len(lines[0].split())
    result: dict[int, tuple[str, ...]] = {}
    for line in lines[1:]:
        number, colon, rest = line.partition(":")
        number = number.strip()
        if not colon or not number.isdigit():
            continue
        fields = rest.split(None, ncpus)
        counts = fields[:ncpus]
        if len(fields) <= ncpus or not all(c.isdigit() for c in counts):
            result[int(number)] = ()
            continue
        segments = re.split(r"\s{2,}", fields[ncpus].strip())
        last = segments[-1]
        if len(segments) < 2 or re.fullmatch(r"(?:\S+ )?\d+[- ]\w+", last):
            result[int(number)] = ()  # no action: the line ends at the hwirq-handler field
            continue
        result[int(number)] = tuple(name.strip() for name in last.split(", ") if name.strip())
    return result


_COMBINED = r"TxRx|txrx|RxTx|rxtx|Tx-Rx|TX-RX|fp"
_NOT_A_QUEUE = re.compile(r"ctrl|misc|async|cmd|pages|config|fdir|event|control|link",
                          re.IGNORECASE)


def queue_of_irq(name: str, ifname: str, virtio: str | None = None,
                 *, strict: bool = True) -> tuple[int | None, int | None] | None:
    """Which (rx, tx) queue index an interrupt serves, from its action name; None when it is
    not a queue interrupt (the NIC's admin, async or config vector, another device's).

    Names per driver (each driver's request_irq): mlx5 ``mlx5_comp<N>@pci:<BDF>`` (completion
    vector N serves channel N), mlx4 ``mlx4-<N>@<BDF>``, ixgbe/igb/bnxt/hns3
    ``<if>-TxRx-<N>`` (or ``<if>-rx-<N>``/``<if>-tx-<N>`` when RX and TX have their own
    vectors), i40e/ice/iavf ``<driver>-<if>-TxRx-<N>``, ena ``<if>-Tx-Rx-<N>``, qede
    ``<if>-fp-<N>``, virtio-net ``virtio<M>-input.<N>``/``-output.<N>``. Names carrying an
    interface name must carry this one (``strict``); drivers name vectors when they open the
    device, so after a rename ``strict=False`` accepts any interface name in that place."""
    if virtio:
        match = re.fullmatch(rf"{re.escape(virtio)}-(input|output)\.(\d+)", name)
        if match:
            index = int(match.group(2))
            return (index, None) if match.group(1) == "input" else (None, index)
    match = re.fullmatch(r"mlx[45](?:_comp|-)(\d+)(?:@.*)?", name)
    if match:
        index = int(match.group(1))
        return index, index
    owner = re.escape(ifname) if strict else r"[^\s@]+"
    match = re.search(rf"(?:^|[-_])({owner})-({_COMBINED}|rx|Rx|RX|tx|Tx|TX)-(\d+)$", name)
    if not match or (not strict and _NOT_A_QUEUE.search(name)):
        return None
    index = int(match.group(3))
    kind = match.group(2).lower()
    if kind == "rx":
        return index, None
    if kind == "tx":
        return None, index
    return index, index


def irq_write_error(exc: OSError, irq: int, text: str, target: str,
                    setting: str) -> KernelError:
    """What a refused write of ``smp_affinity_list`` means (kernel/irq/proc.c,
    ``irq_affinity_proc_write``, and irq_set_affinity): EIO when the kernel owns the
    affinity (a managed interrupt: ``!irq_can_set_affinity_usr``), ENOSPC when no vector is
    free on those CPUs (x86), EACCES/EROFS without root or with /proc read-only."""
    code = exc.errno
    if code == errno.EIO:
        return Unsupported(target, setting, f"IRQ {irq} is a managed interrupt: the kernel "
                           f"spreads it itself and refuses changes ({errno_text(code)})", code)
    if code == errno.ENOSPC:
        return Unsupported(target, setting, f"no free interrupt vector on CPUs {text} "
                           f"({errno_text(code)})", code)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Unsupported(target, setting, f"{IRQ_READ_ONLY} ({errno_text(code)})", code)
    return kernel_error(exc, target, setting, f"write '{text}' to IRQ {irq} failed")


# --------------------------------------------------------------------------- the filesystem


def _read(path: Path | str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 1 << 20).decode(errors="replace").strip()
    finally:
        os.close(fd)


def _write(path: Path | str, text: str) -> None:
    """One write(2) of the whole value, so the kernel's errno reaches us unbuffered.
    (O_TRUNC as a shell's ``>`` does: sysfs and procfs ignore it.)"""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class SteeringFs:
    """Queue steering, IRQs and CPU facts under a sysfs and a procfs root."""

    def __init__(self, sys_root: str | os.PathLike[str] = "/sys",
                 proc_root: str | os.PathLike[str] = "/proc"):
        self.sys = Path(sys_root)
        self.proc = Path(proc_root)

    # -- queues ----------------------------------------------------------------------------

    def _netdev(self, ifname: str) -> Path:
        if "/" in ifname or ifname in ("", ".", ".."):
            raise Gone(ifname, "steering", "not an interface name")
        return self.sys / "class" / "net" / ifname

    def queues(self, ifname: str) -> Queues:
        """The device's RX and TX queue indexes now. Gone if the interface is."""
        try:
            entries = os.listdir(self._netdev(ifname) / "queues")
        except FileNotFoundError:
            if not self._netdev(ifname).exists():
                raise Gone(ifname, "steering", "interface no longer exists") from None
            raise Unsupported(ifname, "steering", "the device has no queues in sysfs") from None
        found: dict[str, list[int]] = {"rx": [], "tx": []}
        for entry in entries:
            match = _QUEUE_RE.match(entry)
            if match:
                found[match.group(1)].append(int(match.group(2)))
        return Queues(tuple(sorted(found["rx"])), tuple(sorted(found["tx"])))

    def _queue_file(self, ifname: str, queue: str, attr: str) -> Path:
        direction = queue.partition("-")[0]
        if not _QUEUE_RE.match(queue) or attr not in QUEUE_ATTRS.get(direction, ()):
            raise Unsupported(ifname, f"steering.{queue}.{attr}", "no such queue attribute")
        return self._netdev(ifname) / "queues" / queue / attr

    def _missing(self, ifname: str, queue: str, attr: str, exc: OSError) -> KernelError:
        setting = f"steering.{queue}.{attr}"
        if not self._netdev(ifname).exists():
            return Gone(ifname, setting, "interface no longer exists", errno.ENOENT)
        if not (self._netdev(ifname) / "queues" / queue).exists():
            return Gone(ifname, setting, f"queue {queue} no longer exists", errno.ENOENT)
        what = "RPS (CONFIG_RPS)" if attr.startswith("rps") else "XPS (CONFIG_XPS)"
        return Unsupported(ifname, setting, f"this kernel has no {what}", exc.errno)

    def read_queue(self, ifname: str, queue: str, attr: str) -> str:
        """``rps_cpus`` etc. of ``rx-N``/``tx-N`` as the kernel prints it."""
        path = self._queue_file(ifname, queue, attr)
        try:
            return _read(path)
        except FileNotFoundError as exc:
            raise self._missing(ifname, queue, attr, exc) from exc
        except OSError as exc:
            raise kernel_error(exc, ifname, f"steering.{queue}.{attr}", "read failed") from exc

    def write_queue(self, ifname: str, queue: str, attr: str, value: str) -> None:
        path = self._queue_file(ifname, queue, attr)
        setting = f"steering.{queue}.{attr}"
        try:
            _write(path, value)
        except FileNotFoundError as exc:
            raise self._missing(ifname, queue, attr, exc) from exc
        except OSError as exc:
            detail = f"write '{value}' failed"
            if exc.errno == errno.EOVERFLOW:
                detail += " (a CPU beyond the kernel's nr_cpu_ids)"
            elif exc.errno == errno.EINVAL and attr == "rps_cpus":
                detail += " (only isolated or nohz_full CPUs?)"
            elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise Unsupported(ifname, setting, QUEUES_READ_ONLY, exc.errno) from exc
            raise kernel_error(exc, ifname, setting, detail) from exc

    def queue_writable(self, ifname: str, queue: str, attr: str) -> bool:
        """Whether this process may write the attribute (a read-only sysfs mount, as under
        the hardened systemd unit, or no root: no)."""
        return os.access(self._queue_file(ifname, queue, attr), os.W_OK)

    # -- CPUs and NUMA ---------------------------------------------------------------------

    def _cpu_list(self, name: str) -> frozenset[int]:
        try:
            return parse_cpulist(_read(self.sys / "devices" / "system" / "cpu" / name))
        except (FileNotFoundError, CpuSetError):
            return frozenset()

    def cpu_facts(self) -> CpuFacts:
        online = self._cpu_list("online")
        possible = self._cpu_list("possible") or online
        if not online:
            online = frozenset({0})
            possible = possible or online
        return CpuFacts(online, max(possible | online) + 1, self._cpu_list("isolated"),
                        self._cpu_list("nohz_full"))

    def _device_chain(self, ifname: str) -> list[Path]:
        """The netdev's device directory and its parents (resolved), nearest first; empty for
        a virtual interface (no ``device`` link)."""
        device = self._netdev(ifname) / "device"
        if not device.exists():
            return []
        real = Path(os.path.realpath(device))
        chain = [real]
        for _ in range(_PARENT_LEVELS - 1):
            real = real.parent
            chain.append(real)
        return chain

    def numa_node(self, ifname: str) -> int | None:
        """The NIC's NUMA node, or None when the kernel reports none (-1) or it is virtual."""
        for directory in self._device_chain(ifname):
            try:
                node = int(_read(directory / "numa_node"))
            except (FileNotFoundError, ValueError):
                continue
            return node if node >= 0 else None
        return None

    def node_cpus(self, node: int) -> frozenset[int]:
        try:
            return parse_cpulist(_read(self.sys / "devices" / "system" / "node" / f"node{node}"
                                       / "cpulist"))
        except (FileNotFoundError, CpuSetError):
            return frozenset()

    # -- IRQs ------------------------------------------------------------------------------

    def interrupts(self) -> dict[int, tuple[str, ...]]:
        try:
            return parse_interrupts(_read(self.proc / "interrupts"))
        except FileNotFoundError:
            return {}

    def nic_irqs(self, ifname: str, names: dict[int, tuple[str, ...]] | None = None
                 ) -> NicIrqs | None:
        """The NIC's interrupts and the queues they serve; None for a virtual interface.
        ``names``: a parsed /proc/interrupts to reuse (one read for every NIC of a plan)."""
        chain = self._device_chain(ifname)
        if not chain:
            return None
        owner = next((d for d in chain if (d / "msi_irqs").is_dir()), None)
        irqs: list[int] = []
        if owner is not None:
            irqs = sorted(int(n) for n in os.listdir(owner / "msi_irqs") if n.isdigit())
        else:
            owner = chain[0]
            try:
                legacy = int(_read(owner / "irq"))
            except (FileNotFoundError, ValueError):
                legacy = 0
            irqs = [legacy] if legacy > 0 else []
        names = self.interrupts() if names is None else names
        virtio = chain[0].name if chain[0].name.startswith("virtio") else None
        mine = {irq: names.get(irq, ()) for irq in irqs}
        queues = self._queue_irqs(mine, ifname, virtio, strict=True)
        if not queues:  # vectors named after a former interface name (renamed while open)
            queues = self._queue_irqs(mine, ifname, virtio, strict=False)
        return NicIrqs(str(owner), tuple(irqs), tuple(queues), mine,
                       self._modules(chain))

    def driver_modules(self, ifname: str) -> tuple[str, ...]:
        """The kernel modules from the NIC's device up to the one owning its interrupts
        (``mlx5_core``; ``virtio_net``, ``virtio_pci``), that one last: what irqbalance's
        ``--banmod`` names."""
        return self._modules(self._device_chain(ifname))

    @staticmethod
    def _modules(chain: list[Path]) -> tuple[str, ...]:
        owner = next((i for i, d in enumerate(chain) if (d / "msi_irqs").is_dir()), 0)
        modules = []
        for directory in chain[:owner + 1]:
            driver = directory / "driver"
            if driver.exists():
                module = driver / "module"
                modules.append(Path(os.path.realpath(module if module.exists() else driver)).name)
        return tuple(dict.fromkeys(modules))

    @staticmethod
    def _queue_irqs(names: dict[int, tuple[str, ...]], ifname: str, virtio: str | None,
                    *, strict: bool) -> list[QueueIrq]:
        found = []
        for irq, actions in names.items():
            for name in actions:
                queue = queue_of_irq(name, ifname, virtio, strict=strict)
                if queue is not None:
                    found.append(QueueIrq(irq, name, *queue))
                    break
        return sorted(found, key=lambda q: (q.index, q.tx is not None and q.rx is None, q.irq))

    def _irq_file(self, irq: int, name: str) -> Path:
        return self.proc / "irq" / str(irq) / name

    def irq_affinity(self, irq: int) -> frozenset[int]:
        """The CPUs IRQ ``irq`` may be delivered to (``smp_affinity_list``)."""
        try:
            return parse_cpulist(_read(self._irq_file(irq, "smp_affinity_list")))
        except FileNotFoundError as exc:
            raise Gone(f"irq {irq}", "irq_affinity", "the interrupt no longer exists",
                       errno.ENOENT) from exc
        except OSError as exc:
            raise kernel_error(exc, f"irq {irq}", "irq_affinity", "read failed") from exc

    def irq_writable(self, irq: int) -> bool:
        return os.access(self._irq_file(irq, "smp_affinity_list"), os.W_OK)

    def irq_effective(self, irq: int) -> frozenset[int] | None:
        """Where the interrupt is delivered now (``effective_affinity_list``), if the kernel
        says (CONFIG_GENERIC_IRQ_EFFECTIVE_AFF_MASK)."""
        try:
            return parse_cpulist(_read(self._irq_file(irq, "effective_affinity_list")))
        except (OSError, CpuSetError):
            return None

    def set_irq_affinity(self, irq: int, cpus: frozenset[int], *, target: str = "",
                         setting: str = "irq_affinity") -> None:
        text = format_cpulist(cpus)
        where = target or f"irq {irq}"
        try:
            _write(self._irq_file(irq, "smp_affinity_list"), text)
        except FileNotFoundError as exc:
            raise Gone(where, setting, f"IRQ {irq} no longer exists", errno.ENOENT) from exc
        except OSError as exc:
            raise irq_write_error(exc, irq, text, where, setting) from exc

    def sock_flow_entries(self) -> int | None:
        """``net.core.rps_sock_flow_entries`` (RFS's global socket flow table), or None where
        the namespace cannot see it (it exists only in the initial network namespace)."""
        try:
            return int(_read(self.proc / "sys" / "net" / "core" / "rps_sock_flow_entries"))
        except (OSError, ValueError):
            return None

    # -- irqbalance ------------------------------------------------------------------------

    def irqbalance(self) -> Irqbalance | None:
        """The running irqbalance, or None."""
        try:
            entries = os.listdir(self.proc)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not entry.isdigit():
                continue
            try:
                if _read(self.proc / entry / "comm") != "irqbalance":
                    continue
                argv = (self.proc / entry / "cmdline").read_bytes().split(b"\0")
            except OSError:  # the process ended while we looked
                continue
            return _irqbalance_from(int(entry), [a.decode(errors="replace") for a in argv])
        for relative in _IRQBALANCE_UNIT_CGROUPS:
            try:
                if _read(self.sys / relative):
                    return Irqbalance(None)
            except OSError:
                continue
        return None


def _irqbalance_from(pid: int, argv: list[str]) -> Irqbalance:
    """irqbalance's own options (irqbalance(1)): -i/--banirq=N and -m/--banmod=NAME, either
    ``--opt=value``, ``--opt value``, ``-i N`` or ``-iN``; -o/--oneshot."""
    irqs: set[int] = set()
    modules: set[str] = set()
    oneshot = False
    args = [a for a in argv[1:] if a]
    index = 0
    while index < len(args):
        arg = args[index]
        value = None
        for long, short, bucket in (("--banirq", "-i", "irq"), ("--banmod", "-m", "mod")):
            if arg.startswith(long + "="):
                value = (bucket, arg[len(long) + 1:])
            elif arg in (long, short) and index + 1 < len(args):
                index += 1
                value = (bucket, args[index])
            elif arg.startswith(short) and len(arg) > 2 and not arg.startswith("--"):
                value = (bucket, arg[2:])
            if value:
                break
        if value and value[0] == "irq" and value[1].isdigit():
            irqs.add(int(value[1]))
        elif value and value[0] == "mod":
            modules.add(value[1])
        elif arg in ("-o", "--oneshot"):
            oneshot = True
        index += 1
    return Irqbalance(pid, frozenset(irqs), frozenset(modules), oneshot)
