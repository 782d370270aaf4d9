"""The names profiles may use: kernel offload features and their ethtool aliases,
channel, ring and coalescing parameters, link attributes.

Validation uses these for "did you mean"; the tuning kinds use them to expand aliases.
Feature names are the kernel's ``netdev_features_strings`` (what ``ethtool -k`` prints
for individual features).
"""

from __future__ import annotations

KERNEL_FEATURES: frozenset[str] = frozenset(
    """
    tx-scatter-gather tx-checksum-ipv4 tx-checksum-ip-generic tx-checksum-ipv6 highdma
    tx-scatter-gather-fraglist tx-vlan-hw-insert rx-vlan-hw-parse rx-vlan-filter
    vlan-challenged tx-generic-segmentation tx-lockless netns-local rx-gro rx-lro
    tx-tcp-segmentation tx-gso-robust tx-tcp-ecn-segmentation tx-tcp-mangleid-segmentation
    tx-tcp6-segmentation tx-tcp-accecn-segmentation tx-fcoe-segmentation tx-gre-segmentation
    tx-gre-csum-segmentation tx-ipxip4-segmentation tx-ipxip6-segmentation
    tx-udp_tnl-segmentation tx-udp_tnl-csum-segmentation tx-gso-partial
    tx-tunnel-remcsum-segmentation tx-sctp-segmentation tx-esp-segmentation
    tx-udp-segmentation tx-gso-list tx-checksum-fcoe-crc tx-checksum-sctp fcoe-mtu
    rx-ntuple-filter rx-hashing rx-checksum tx-nocache-copy loopback rx-fcs rx-all
    tx-vlan-stag-hw-insert rx-vlan-stag-hw-parse rx-vlan-stag-filter l2-fwd-offload
    hw-tc-offload esp-hw-offload esp-tx-csum-hw-offload rx-udp_tunnel-port-offload
    tls-hw-tx-offload tls-hw-rx-offload rx-gro-hw tls-hw-record rx-gro-list
    macsec-hw-offload rx-udp-gro-forwarding hsr-tag-ins-offload hsr-tag-rm-offload
    hsr-fwd-offload hsr-dup-offload
    """.split()
)

_TX_CSUM = (
    "tx-checksum-ipv4",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv6",
    "tx-checksum-fcoe-crc",
    "tx-checksum-sctp",
)
_TSO = (
    "tx-tcp-segmentation",
    "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation",
    "tx-tcp6-segmentation",
    "tx-tcp-accecn-segmentation",
)
_SG = ("tx-scatter-gather", "tx-scatter-gather-fraglist")

# ethtool's short aliases and its long display names, each standing for one or more
# kernel features (as ``ethtool -K dev tso on`` switches every TSO feature).
FEATURE_ALIASES: dict[str, tuple[str, ...]] = {
    "rx": ("rx-checksum",),
    "rx-checksumming": ("rx-checksum",),
    "tx": _TX_CSUM,
    "tx-checksumming": _TX_CSUM,
    "sg": _SG,
    "scatter-gather": _SG,
    "tso": _TSO,
    "tcp-segmentation-offload": _TSO,
    "gso": ("tx-generic-segmentation",),
    "generic-segmentation-offload": ("tx-generic-segmentation",),
    "gro": ("rx-gro",),
    "generic-receive-offload": ("rx-gro",),
    "lro": ("rx-lro",),
    "large-receive-offload": ("rx-lro",),
    "rxvlan": ("rx-vlan-hw-parse",),
    "rx-vlan-offload": ("rx-vlan-hw-parse",),
    "txvlan": ("tx-vlan-hw-insert",),
    "tx-vlan-offload": ("tx-vlan-hw-insert",),
    "ntuple": ("rx-ntuple-filter",),
    "ntuple-filters": ("rx-ntuple-filter",),
    "rxhash": ("rx-hashing",),
    "receive-hashing": ("rx-hashing",),
}

FEATURE_NAMES: frozenset[str] = KERNEL_FEATURES | frozenset(FEATURE_ALIASES)


def expand_feature(name: str) -> tuple[str, ...]:
    """Kernel feature names a profile feature key stands for."""
    return FEATURE_ALIASES.get(name, (name,))


def is_alias(name: str) -> bool:
    return name in FEATURE_ALIASES


CHANNEL_KEYS: tuple[str, ...] = ("rx", "tx", "other", "combined")
RING_KEYS: tuple[str, ...] = ("rx", "rx-mini", "rx-jumbo", "tx", "rx-buf-len", "cqe-size")

COALESCE_BOOL_KEYS: tuple[str, ...] = ("adaptive-rx", "adaptive-tx", "cqe-mode-rx", "cqe-mode-tx")
COALESCE_INT_KEYS: tuple[str, ...] = (
    "rx-usecs",
    "rx-frames",
    "rx-usecs-irq",
    "rx-frames-irq",
    "tx-usecs",
    "tx-frames",
    "tx-usecs-irq",
    "tx-frames-irq",
    "stats-block-usecs",
    "pkt-rate-low",
    "rx-usecs-low",
    "rx-frames-low",
    "tx-usecs-low",
    "tx-frames-low",
    "pkt-rate-high",
    "rx-usecs-high",
    "rx-frames-high",
    "tx-usecs-high",
    "tx-frames-high",
    "sample-interval",
    "tx-aggr-max-bytes",
    "tx-aggr-max-frames",
    "tx-aggr-time-usecs",
)
COALESCE_KEYS: tuple[str, ...] = COALESCE_BOOL_KEYS + COALESCE_INT_KEYS

LINK_KEYS: tuple[str, ...] = ("mtu", "txqueuelen", "state")
LINK_STATES: tuple[str, ...] = ("up", "down")

# Interface kinds a selector may name. "physical" is a NIC with a bus device and no
# rtnetlink kind; "bond-member" is any link enslaved to a bond.
INTERFACE_KINDS: tuple[str, ...] = (
    "physical",
    "veth",
    "bond",
    "bond-member",
    "bridge",
    "bridge-member",
    "vlan",
    "macvlan",
    "ipvlan",
    "vxlan",
    "geneve",
    "tun",
    "team",
    "dummy",
    "ifb",
    "wireguard",
    "loopback",
    "other",
)

# Per-interface sysctl families; a profile writes the interface as the literal IF.
PER_INTERFACE_SYSCTL_PREFIXES: tuple[str, ...] = (
    "net.ipv4.conf.IF.",
    "net.ipv6.conf.IF.",
    "net.ipv4.neigh.IF.",
    "net.ipv6.neigh.IF.",
)
