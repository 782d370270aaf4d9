"""Kernel bonding over rtnetlink: the only place nodenetd creates, changes or reads a bond.

Failover in nodenetd is a policy layer on top of kernel bonding (as teamd's active-backup
runner is on top of team): the kernel keeps the fast path and its MII monitor, and nodenetd
decides which member should be active. So this adapter needs exactly four things from the
kernel: make an active-backup bond, attach and detach members, read who is active and how each
member is doing, and move the active member. Everything goes over rtnetlink (pyroute2), never
through ``ip`` or /sys/class/net/*/bonding, so the values read back are the kernel's own
attributes (IFLA_BOND_ACTIVE_SLAVE, IFLA_BOND_SLAVE_STATE, IFLA_BOND_SLAVE_MII_STATUS) and
errors arrive as errnos that map onto nodenetd's typed errors.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nodenetd.errors import Gone, KernelError, Refused, Unsupported

__all__ = [
    "BondAdapter",
    "BondMember",
    "BondOptions",
    "BondStatus",
    "MemberState",
    "MiiStatus",
]

# Kernel enums (include/uapi/linux/if_bonding.h). The kernel speaks numbers; nodenetd speaks
# the names that ``ip -d link`` and /proc/net/bonding use, so logs and witnesses agree.
_MODES = {
    0: "balance-rr",
    1: "active-backup",
    2: "balance-xor",
    3: "broadcast",
    4: "802.3ad",
    5: "balance-tlb",
    6: "balance-alb",
}
_ACTIVE_BACKUP = 1


class MemberState(StrEnum):
    """IFLA_BOND_SLAVE_STATE: whether the bond transmits through this member."""

    ACTIVE = "active"  # BOND_STATE_ACTIVE = 0
    BACKUP = "backup"  # BOND_STATE_BACKUP = 1


class MiiStatus(StrEnum):
    """IFLA_BOND_SLAVE_MII_STATUS: the bond's own view of the member's link.

    ``fail`` and ``back`` are the transitional states while downdelay/updelay run: the
    carrier has changed but the bond has not acted on it yet.
    """

    UP = "up"  # BOND_LINK_UP = 0
    FAIL = "fail"  # BOND_LINK_FAIL = 1: carrier lost, downdelay running
    DOWN = "down"  # BOND_LINK_DOWN = 2
    BACK = "back"  # BOND_LINK_BACK = 3: carrier back, updelay running


_STATES = {0: MemberState.ACTIVE, 1: MemberState.BACKUP}
_MII = {0: MiiStatus.UP, 1: MiiStatus.FAIL, 2: MiiStatus.DOWN, 3: MiiStatus.BACK}


@dataclass(frozen=True)
class BondOptions:
    """The active-backup options nodenetd sets at creation (all in milliseconds).

    miimon is on by default: without a link monitor the kernel never notices a dead member
    and never fails over, which is the one thing an active-backup bond is for.
    """

    miimon: int = 100
    updelay: int = 0
    downdelay: int = 0

    def __post_init__(self) -> None:
        for name in ("miimon", "updelay", "downdelay"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0 ms, got {value}")


@dataclass(frozen=True)
class BondMember:
    """One enslaved interface as the bond sees it."""

    name: str
    index: int
    state: MemberState | None
    mii_status: MiiStatus | None
    link_failure_count: int
    perm_hwaddr: str | None


@dataclass(frozen=True)
class BondStatus:
    """A bond read back from the kernel: its mode, options, active member and members."""

    name: str
    index: int
    mode: str
    active_member: str | None
    miimon: int
    updelay: int
    downdelay: int
    members: tuple[BondMember, ...]

    def member(self, name: str) -> BondMember:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"{name} is not a member of {self.name}")


def _translate(
    exc: NetlinkError, target: str, setting: str, unsupported_hint: str = ""
) -> KernelError:
    """Map an rtnetlink errno onto nodenetd's error kinds, keeping target and setting."""
    code = exc.code
    reason = exc.args[1] if len(exc.args) > 1 else str(exc)
    # ENOTSUP and EOPNOTSUPP share a number on Linux; rtnetlink means the latter.
    name = "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code, str(code))
    reason = f"{reason} ({name})"
    if code == errno.EOPNOTSUPP:
        if unsupported_hint:
            reason = f"{reason}; {unsupported_hint}"
        return Unsupported(target, setting, reason, code)
    if code == errno.ENODEV:
        return Gone(target, setting, reason, code)
    return Refused(target, setting, reason, code)


@contextmanager
def _netlink(target: str, setting: str, unsupported_hint: str = "") -> Iterator[None]:
    try:
        yield
    except NetlinkError as exc:
        raise _translate(exc, target, setting, unsupported_hint) from exc


def _linkinfo(msg: Any) -> Any:
    return msg.get_attr("IFLA_LINKINFO")


class BondAdapter:
    """Bond operations over one rtnetlink socket.

    ``netns`` names a namespace under /run/netns to work in; the daemon uses the namespace it
    runs in (None), tests point it at a lab namespace. Use it as a context manager, or call
    ``close``.
    """

    def __init__(self, netns: str | None = None) -> None:
        if netns is None:
            self._ipr = IPRoute()
            return
        try:
            # flags=0: a namespace that does not exist is an error, not created on the fly
            # (pyroute2's default, O_CREAT, would silently work in a new empty namespace).
            self._ipr = IPRoute(netns=netns, flags=0)
        except FileNotFoundError as exc:
            raise Gone(
                f"netns {netns}", "open namespace", "no such namespace", errno.ENOENT
            ) from exc

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> BondAdapter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writes ---------------------------------------------------------------------------

    def create_active_backup(self, name: str, options: BondOptions | None = None) -> None:
        """Create an active-backup bond, left down (the caller enslaves, then brings it up)."""
        opts = options or BondOptions()
        hint = "this kernel has no bonding support: load the 'bonding' module"
        with _netlink(name, "create bond (mode active-backup)", hint):
            self._ipr.link(
                "add",
                ifname=name,
                kind="bond",
                bond_mode=_ACTIVE_BACKUP,
                bond_miimon=opts.miimon,
                bond_updelay=opts.updelay,
                bond_downdelay=opts.downdelay,
            )

    def delete(self, name: str) -> None:
        """Delete the bond; its members are released by the kernel."""
        index = self._index(name, "delete bond")
        with _netlink(name, "delete bond"):
            self._ipr.link("del", index=index)

    def set_up(self, name: str) -> None:
        """Bring the bond up administratively."""
        index = self._index(name, "set state up")
        with _netlink(name, "set state up"):
            self._ipr.link("set", index=index, state="up")

    def enslave(self, bond: str, member: str) -> None:
        """Attach ``member`` to ``bond``.

        The member is set down first: the kernel refuses to enslave an interface that is up
        (EPERM, "Device can not be enslaved while up"); the bond opens it again itself.
        """
        bond_index = self._index(bond, f"enslave {member}")
        member_index = self._index(member, f"enslave to {bond}")
        with _netlink(member, f"enslave to {bond}"):
            self._ipr.link("set", index=member_index, state="down")
            self._ipr.link("set", index=member_index, master=bond_index)

    def release(self, member: str) -> None:
        """Detach ``member`` from whatever bond holds it."""
        member_index = self._index(member, "release from bond")
        with _netlink(member, "release from bond"):
            self._ipr.link("set", index=member_index, master=0)

    def set_active(self, bond: str, member: str) -> None:
        """Make ``member`` the active member (IFLA_BOND_ACTIVE_SLAVE).

        The kernel refuses (EINVAL) a member that is not enslaved to this bond or whose link is
        down, and a bond whose mode has no active member; that arrives as Refused.
        """
        bond_index = self._index(bond, f"active member {member}")
        member_index = self._index(member, f"active member of {bond}")
        with _netlink(bond, f"active member {member}"):
            self._ipr.link("set", index=bond_index, kind="bond", bond_active_slave=member_index)

    # -- reads ----------------------------------------------------------------------------

    def status(self, name: str) -> BondStatus:
        """Read the bond and its members in one dump, so they describe the same instant."""
        with _netlink(name, "read bond"):
            links = list(self._ipr.get_links())
        by_index = {msg["index"]: msg for msg in links}
        bond = next((m for m in links if m.get_attr("IFLA_IFNAME") == name), None)
        if bond is None:
            raise Gone(name, "read bond", "no such interface", errno.ENODEV)
        info = _linkinfo(bond)
        if info is None or info.get_attr("IFLA_INFO_KIND") != "bond":
            raise Refused(name, "read bond", "not a bond interface", errno.EINVAL)
        data = info.get_attr("IFLA_INFO_DATA")

        def opt(attr: str) -> int:
            value = data.get_attr(attr) if data is not None else None
            return int(value or 0)

        mode_code = data.get_attr("IFLA_BOND_MODE") if data is not None else None
        active_index = data.get_attr("IFLA_BOND_ACTIVE_SLAVE") if data is not None else None
        active = by_index.get(active_index) if active_index else None
        members = tuple(
            self._member(msg)
            for msg in links
            if msg.get_attr("IFLA_MASTER") == bond["index"] and _is_bond_slave(msg)
        )
        return BondStatus(
            name=name,
            index=bond["index"],
            mode=_MODES.get(mode_code, f"unknown({mode_code})"),
            active_member=active.get_attr("IFLA_IFNAME") if active is not None else None,
            miimon=opt("IFLA_BOND_MIIMON"),
            updelay=opt("IFLA_BOND_UPDELAY"),
            downdelay=opt("IFLA_BOND_DOWNDELAY"),
            members=tuple(sorted(members, key=lambda m: m.name)),
        )

    # -- helpers --------------------------------------------------------------------------

    def _index(self, name: str, setting: str) -> int:
        with _netlink(name, setting):
            found = self._ipr.link_lookup(ifname=name)
        if not found:
            raise Gone(name, setting, "no such interface", errno.ENODEV)
        return int(found[0])

    @staticmethod
    def _member(msg: Any) -> BondMember:
        data = _linkinfo(msg).get_attr("IFLA_INFO_SLAVE_DATA")
        state = data.get_attr("IFLA_BOND_SLAVE_STATE") if data is not None else None
        mii = data.get_attr("IFLA_BOND_SLAVE_MII_STATUS") if data is not None else None
        failures = data.get_attr("IFLA_BOND_SLAVE_LINK_FAILURE_COUNT") if data is not None else 0
        return BondMember(
            name=msg.get_attr("IFLA_IFNAME"),
            index=msg["index"],
            state=_STATES.get(state) if state is not None else None,
            mii_status=_MII.get(mii) if mii is not None else None,
            link_failure_count=int(failures or 0),
            perm_hwaddr=data.get_attr("IFLA_BOND_SLAVE_PERM_HWADDR") if data is not None else None,
        )


def _is_bond_slave(msg: Any) -> bool:
    info = _linkinfo(msg)
    return info is not None and info.get_attr("IFLA_INFO_SLAVE_KIND") == "bond"
