"""Typed models of profiles and the node config, as the rest of nodenetd consumes them.

The loader builds these from YAML after schema and semantic validation; nothing downstream
ever sees raw YAML. Every wanted value remembers where it came from (``Origin``) so a plan
can say *why* a change is proposed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nodenetd.errors import SourcePosition

if TYPE_CHECKING:
    from nodenetd.config.failover import FailoverConfig
    from nodenetd.config.metrics import MetricsSettings

# Setting kinds an interface rule can carry, in the order a transaction applies them:
# bond options and member priorities (from failover bond groups) first, then queue counts
# (features and rings may depend on them), then offloads, then link
# attributes that may reset the device, then the qdisc tree (tc QoS), then per-interface
# sysctls, then per-queue steering and queue interrupt affinity (the queues channels left).
INTERFACE_SETTING_KINDS = (
    "bond", "bond_slave", "channels", "rings", "coalesce", "features", "link", "qdisc",
    "sysctl", "steering", "irq_affinity")

SysctlOp = Literal["=", ">=", "<="]


@dataclass(frozen=True)
class Origin:
    """Which profile, rule and file position asked for a value."""

    profile: str
    rule: str | None = None
    position: SourcePosition | None = None

    def __str__(self) -> str:
        text = f"profile {self.profile}"
        if self.rule:
            text += f", rule {self.rule}"
        if self.position:
            text += f" ({self.position})"
        return text


@dataclass(frozen=True)
class SysctlValue:
    """A sysctl value: exact, a floor (only raise) or a ceiling (only lower).

    Multi-field keys (tcp_rmem) keep one entry per field; the operator applies to each field.
    Fields are ints where the text is numeric, otherwise strings (e.g. ``bbr``).
    """

    op: SysctlOp
    fields: tuple[int | str, ...]

    def __str__(self) -> str:
        body = " ".join(str(f) for f in self.fields)
        return body if self.op == "=" else f"{self.op}{body}"


@dataclass(frozen=True)
class Wanted:
    """A desired value and where it was asked for.

    ``observe``: report when the kernel differs, never write. ``override``: the owner (see
    ``tuning.ownership``) whose key this deliberately takes over."""

    value: Any
    origin: Origin
    via: str | None = None  # the ethtool alias a feature was requested through (tso, gro...)
    observe: bool = False
    override: str | None = None


@dataclass(frozen=True)
class Selector:
    """Which interfaces a rule applies to. Every non-empty field must match (AND);
    within a field any entry may match (OR). Globs use fnmatch syntax."""

    names: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    drivers: tuple[str, ...] = ()
    macs: tuple[str, ...] = ()
    udev: tuple[tuple[str, str], ...] = ()  # (property, glob) pairs

    @property
    def needs_udev(self) -> bool:
        return bool(self.udev)

    @property
    def needs_driver(self) -> bool:
        return bool(self.drivers)


@dataclass
class InterfaceRule:
    """One entry of a profile's ``interfaces:`` list.

    ``settings`` maps a setting kind (see INTERFACE_SETTING_KINDS) to its keys. Keys are the
    kernel's names after alias expansion (``gro`` is stored as ``rx-gro``); per-interface
    sysctl keys keep the literal ``IF`` placeholder (``net.ipv4.conf.IF.rp_filter``).
    """

    name: str
    selector: Selector
    settings: dict[str, dict[str, Wanted]] = field(default_factory=dict)
    origin: Origin | None = None


@dataclass
class Profile:
    """One profile file, before inheritance is resolved."""

    name: str
    path: str
    description: str = ""
    extends: tuple[str, ...] = ()
    sysctls: dict[str, Wanted] = field(default_factory=dict)
    rules: list[InterfaceRule] = field(default_factory=list)
    # Key path in the file ("extends[1]", "interfaces[0].mtu") -> where it is written, so
    # later stages (inheritance, the CLI) can point at a line. Not part of equality.
    positions: dict[str, SourcePosition] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class ResolvedProfile:
    """The effective desired configuration: profiles in order, inheritance folded in,
    node overrides last. Later sysctls replace earlier ones; rules keep their order and
    later rules override earlier ones per setting key when both match an interface."""

    names: tuple[str, ...]
    sysctls: dict[str, Wanted] = field(default_factory=dict)
    rules: list[InterfaceRule] = field(default_factory=list)


DEFAULT_CONFIG_PATH = "/etc/nodenetd/nodenetd.yaml"
DEFAULT_STATE_DIR = "/var/lib/nodenetd"
DEFAULT_PROFILE_DIRS = ("/etc/nodenetd/profiles.d",)  # the built-in profiles/ is appended


@dataclass(frozen=True)
class DaemonSettings:
    """The service's behaviour (node config ``daemon:``); defaults match the schema's."""

    mode: Literal["enforce", "observe"] = "enforce"
    on_stop: Literal["keep", "restore"] = "keep"
    sysctl_interval: float = 30.0
    resync_interval: float = 600.0
    backoff_corrections: int = 5
    backoff_window: float = 300.0
    control_socket: str = "/run/nodenetd/control.sock"
    log_level: str = "info"


@dataclass
class NodeConfig:
    """The node's config file: which profiles, local overrides, where state lives."""

    path: str | None
    profiles: tuple[str, ...]
    profile_dirs: tuple[str, ...]
    state_dir: str = DEFAULT_STATE_DIR
    overrides: Profile | None = None
    strict: bool = False
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    failover: FailoverConfig | None = None  # None: no failover section
    metrics: MetricsSettings | None = None  # None: no metrics section (the defaults)
    # Key path in the file ("profiles[0]", "state_dir") -> where it is written.
    positions: dict[str, SourcePosition] = field(default_factory=dict, compare=False, repr=False)
