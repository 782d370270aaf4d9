"""Keys that others own on a node, and whether nodenetd may touch them.

A tuner that fights kube-proxy, the CNI or the administrator's sysctl.d loses: the other
side rewrites the key (at start-up, on every hotplug, on every reconcile) and the node
flip-flops. nodenetd ships knowledge of those owners and leaves their keys alone by
default; the plan lists each such key under "left to their owners" with the reason. A
profile takes a key over only explicitly, by naming the owner it overrides::

    net.netfilter.nf_conntrack_max: {enforce: 1048576, override: kube-proxy}

The owners:

- **kube-proxy** writes ``nf_conntrack_max`` (from ``conntrack.maxPerCore`` 32768 x cores,
  at least ``min`` 131072) and the established/close-wait TCP timeouts (24 h, 1 h) at every
  start (``KubeProxyConntrackConfiguration``). Always assumed: a profile cannot know whether
  kube-proxy runs, and Kubernetes profiles are the ones that would set these.
- **the CNI** sets ``rp_filter`` on the interfaces it creates (Cilium needs 0 on them,
  cilium/cilium#10645; Calico, Flannel and others set their own), and ``conf.all.rp_filter``
  counts for every interface (the kernel uses the larger of ``all`` and the device's value),
  so that key is the CNI's too while CNI interfaces exist.
- **a CNI bandwidth manager** (Cilium's, when ``cilium_host`` exists) sets
  ``default_qdisc = fq``, the congestion control (``bbr`` when asked) and an mq+fq root qdisc
  on the native devices, and puts them back when they change.
- **systemd-sysctl**: per-interface keys (``net.ipv4.conf.IF.*``, ``net.ipv6.conf.IF.*``, the
  neighbour tables) that a sysctl.d file declares, globs included, are re-applied by
  systemd's udev rule (99-systemd.rules) every time the interface is added. Only in udev's
  namespace, the initial one: in any other namespace no such rule runs. Global keys in
  sysctl.d are applied once at boot, before nodenetd starts, and are not a conflict.
- **irqbalance**, while it runs, rewrites the affinity of every interrupt it was not told to
  leave alone (``--banirq=N``, ``--banmod=MODULE``) every 10 s, so a NIC's queue interrupt
  affinity (``irq_affinity``) is its; ``override: irqbalance`` writes it anyway.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodenetd.kernel.links import Link, in_initial_netns
from nodenetd.kernel.steering import Irqbalance, SteeringFs
from nodenetd.tuning.plan import Target

__all__ = ["CNI_INTERFACES", "KUBE_PROXY_KEYS", "Owner", "Ownership", "SysctlDEntry",
           "read_sysctl_d"]

KUBE_PROXY_KEYS = frozenset({
    "net.netfilter.nf_conntrack_max",
    "net.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
})
CNI_INTERFACES = ("cali*", "cilium_*", "lxc*", "flannel*", "cni*", "vxlan.calico", "tunl0",
                  "weave*", "kube-bridge", "kube-ipvs0", "genev_sys_*", "antrea-*",
                  "ovn-k8s-*", "nodelocaldns", "vxlan-v6.calico", "wireguard.cali")
BANDWIDTH_MANAGER_KEYS = frozenset({"net.core.default_qdisc",
                                    "net.ipv4.tcp_congestion_control"})
# systemd's lookup order (sysctl.d(5)); a file name in an earlier directory masks later ones.
SYSCTL_D_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d",
                 "/usr/lib/sysctl.d", "/lib/sysctl.d")
_PER_INTERFACE_PREFIXES = ("net.ipv4.conf.", "net.ipv6.conf.", "net.ipv4.neigh.",
                           "net.ipv6.neigh.")


@dataclass(frozen=True)
class Owner:
    name: str  # what a profile names in ``override:``
    reason: str


@dataclass(frozen=True)
class SysctlDEntry:
    pattern: str  # dotted, possibly a glob (net.ipv4.conf.*.rp_filter)
    value: str
    file: str
    line: int


def read_sysctl_d(dirs: Sequence[str] = SYSCTL_D_DIRS,
                  sysctl_conf: str = "/etc/sysctl.conf") -> list[SysctlDEntry]:
    """Every ``key = value`` systemd-sysctl would apply, per sysctl.d(5): ``*.conf`` by file
    name across the directories (the first directory with a name wins), then sysctl.conf.
    Unreadable files are skipped: they cannot be applied either."""
    chosen: dict[str, Path] = {}
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf"):
                chosen.setdefault(name, Path(directory) / name)
    files = [chosen[name] for name in sorted(chosen)] + [Path(sysctl_conf)]
    entries: list[SysctlDEntry] = []
    for path in files:
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = line.partition("=")
            key = key.strip().lstrip("-").replace("/", ".").strip(".")
            entries.append(SysctlDEntry(key, value.strip(), str(path), number))
    return entries


class Ownership:
    """Who owns what on this node, detected once per plan; ``owner_of`` answers per key."""

    def __init__(self, *, links: Iterable[str] = (), sysctl_d: Sequence[SysctlDEntry] = (),
                 hotplug_sysctls: bool = False, steering: SteeringFs | None = None) -> None:
        self._steering = steering  # irqbalance is looked for on the first IRQ question
        self._irqbalance: Irqbalance | bool | None = False  # False: not looked yet
        names = list(links)
        self.cni_interfaces = [n for n in names if _cni(n)]
        self.bandwidth_manager = "cilium_host" in names
        self.hotplug_entries = [e for e in sysctl_d
                                if e.pattern.startswith(_PER_INTERFACE_PREFIXES)] \
            if hotplug_sysctls else []

    @classmethod
    def detect(cls, links: Mapping[str, Link]) -> Ownership:
        return cls(links=links, sysctl_d=read_sysctl_d(), hotplug_sysctls=in_initial_netns(),
                   steering=SteeringFs())

    @property
    def irqbalance(self) -> Irqbalance | None:
        """The running irqbalance (looked for once), or None."""
        if self._irqbalance is False:
            self._irqbalance = self._steering.irqbalance() if self._steering else None
        return self._irqbalance  # type: ignore[return-value]

    def _irq_owner(self, device: str, key: str) -> Owner | None:
        balancer = self.irqbalance
        if balancer is None or self._steering is None:
            return None
        number = key.partition(":")[0]
        if number.isdigit() and balancer.leaves_alone(int(number),
                                                      self._steering.driver_modules(device)):
            return None
        return Owner("irqbalance", f"{balancer.who} runs and moves interrupts between CPUs "
                     "every 10 s, so it would undo this (see the warning for how to exclude "
                     "the NIC's interrupts from it)")

    def owner_of(self, kind: str, target: Target, key: str) -> Owner | None:
        if kind == "qdisc" and self.bandwidth_manager and target.device \
                and not _cni(target.device):
            return _BANDWIDTH_MANAGER
        if kind == "irq_affinity" and target.device:
            return self._irq_owner(target.device, key)
        if kind != "sysctl":
            return None
        if target.device is None:
            if key in KUBE_PROXY_KEYS:
                return _KUBE_PROXY
            if key in BANDWIDTH_MANAGER_KEYS and self.bandwidth_manager:
                return _BANDWIDTH_MANAGER
            if key == "net.ipv4.conf.all.rp_filter" and self.cni_interfaces:
                return Owner("cni", f"the CNI's interfaces ({', '.join(self.cni_interfaces[:3])}"
                                    f"{'...' if len(self.cni_interfaces) > 3 else ''}) depend "
                                    "on it: the kernel applies the larger of all and the "
                                    "device's rp_filter")
            return None
        if key == "net.ipv4.conf.IF.rp_filter" and _cni(target.device):
            return Owner("cni", f"{target.device} is a CNI interface; the CNI sets its "
                                "rp_filter (Cilium needs 0, cilium/cilium#10645)")
        concrete = key.replace(".IF.", f".{target.device}.", 1)
        for entry in reversed(self.hotplug_entries):  # the last one systemd applies wins
            if fnmatch.fnmatchcase(concrete, entry.pattern):
                return Owner("systemd-sysctl", f"{entry.file}:{entry.line} sets "
                             f"{entry.pattern} = {entry.value}, which systemd-sysctl applies "
                             f"again whenever {target.device} is added (99-systemd.rules)")
        return None


def _cni(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in CNI_INTERFACES)


_KUBE_PROXY = Owner("kube-proxy", "kube-proxy sets it from its conntrack configuration at "
                    "every start (maxPerCore 32768, min 131072; TCP established 24h, "
                    "close-wait 1h) and would undo any other value")
_BANDWIDTH_MANAGER = Owner("cni-bandwidth-manager", "Cilium runs here (cilium_host); its "
                           "bandwidth manager sets default_qdisc fq, the congestion control "
                           "and an mq+fq root qdisc on native devices, and restores them")
