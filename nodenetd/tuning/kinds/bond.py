"""Bond options (``bond``) and member priorities (``bond_slave``) as tuning settings.

A failover bond group declares the bond's options (miimon, updelay, num_peer_notif...) and
its members' priorities; they are planned, journaled, applied, verified, restored and kept
from drifting like any other setting, through the bond adapter (one rtnetlink socket).
Creating the bond and steering its active member are the failover group's business, not
settings: only values that have an original to go back to are tuned here.

Values are the adapter's canonical forms (ints, enum names, address tuples), so what is
journaled reads like ``ip -d link`` and goes back into :class:`BondOptions` unchanged.
"""

from __future__ import annotations

from typing import Any

from nodenetd.errors import Gone, KernelError, Unsupported
from nodenetd.kernel.bond import BondOptions, BondStatus
from nodenetd.tuning.kind import Batch, SettingKind, each
from nodenetd.tuning.kinds.link import link_of
from nodenetd.tuning.plan import Target
from nodenetd.tuning.session import KernelSession


def _bond_status(session: KernelSession, name: str) -> BondStatus:
    statuses: dict[str, BondStatus] = session.cached("bond", dict)
    if name not in statuses:
        statuses[name] = session.bonds.status(name)
    return statuses[name]


def _canonical(value: Any) -> Any:
    """Journal-friendly: enums as their names, address lists as tuples."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return str(value) if isinstance(value, str) else value


class BondKind(SettingKind):
    name = "bond"

    def current(self, session: KernelSession, target: Target, key: str) -> Any:
        link = link_of(session, target)
        if link.kind != "bond":
            raise Unsupported(str(target), f"bond.{key}", "not a bond interface")
        value = getattr(_bond_status(session, link.name).options, key)
        if value is None and key not in ("primary", "active_slave"):
            raise Unsupported(str(target), f"bond.{key}", "this kernel does not report it")
        return _canonical("" if value is None else value)

    def resolve(self, session: KernelSession, target: Target, key: str, wanted: Any,
                current: Any) -> Any:
        return _canonical(getattr(BondOptions(**{key: wanted.value}), key))

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        def write(target: Target, values: Any) -> None:
            session.bonds.set_options(target.device or "", BondOptions(**dict(values)))

        return each(batch, write)


class BondSlaveKind(SettingKind):
    name = "bond_slave"

    def current(self, session: KernelSession, target: Target, key: str) -> Any:
        link = link_of(session, target)
        master = next((m for m in session.links().values() if m.index == link.master), None)
        if link.slave_kind != "bond" or master is None:
            raise Gone(str(target), f"bond_slave.{key}", "not a bond member (yet)")
        prio = _bond_status(session, master.name).member(link.name).prio
        if prio is None:
            raise Unsupported(str(target), "bond_slave.prio",
                              "this kernel has no member priorities (Linux 6.0+)")
        return prio

    def apply(self, session: KernelSession, batch: Batch) -> list[KernelError | None]:
        return each(batch, lambda target, values: session.bonds.set_member_prio(
            target.device or "", int(values["prio"])))

    def refresh(self, session: KernelSession) -> None:
        session.invalidate("bond")
