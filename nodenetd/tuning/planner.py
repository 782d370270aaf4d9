"""plan(desired, observed) -> changes, skips and in-sync settings. Reads only; writes nothing."""

from __future__ import annotations

from nodenetd.errors import Absent, Gone, Unsupported
from nodenetd.tuning.constraints import keep_limits_consistent
from nodenetd.tuning.desired import Desired
from nodenetd.tuning.kinds import KINDS, order_of
from nodenetd.tuning.ownership import Ownership
from nodenetd.tuning.plan import Change, InSync, Plan, Skip, Target
from nodenetd.tuning.session import KernelSession


def plan(desired: Desired, session: KernelSession) -> Plan:
    result = Plan(managed={name: b.rules for name, b in desired.interfaces.items()})
    ownership: Ownership = session.cached("ownership", lambda: Ownership.detect(session.links()))
    for kind_name, target, key, wanted in desired.items():
        kind = KINDS[kind_name]
        owner = ownership.owner_of(kind_name, target, key)
        if owner is not None and not wanted.observe and wanted.override != owner.name:
            result.owned.append(Skip(kind_name, target, key, wanted.origin, wanted.value,
                                     f"owned by {owner.name}: {owner.reason} (to manage it "
                                     f"anyway, write {{enforce: VALUE, override: {owner.name}}})"))
            continue
        try:
            current = kind.current(session, target, key)
            value = kind.resolve(session, target, key, wanted, current)
        except Absent as exc:
            if wanted.via is None:
                result.skipped.append(
                    Skip(kind_name, target, key, wanted.origin, wanted.value, exc.reason)
                )
            continue
        except (Unsupported, Gone) as exc:
            result.skipped.append(
                Skip(kind_name, target, key, wanted.origin, wanted.value, exc.reason)
            )
            continue
        if kind.in_sync(current, value):
            result.in_sync.append(InSync(kind_name, target, key, wanted.origin, current))
        elif wanted.observe:
            result.observed.append(Change(kind_name, target, key, wanted.origin, current, value))
        else:
            result.changes.append(Change(kind_name, target, key, wanted.origin, current, value))
    keep_limits_consistent(result, lambda key: KINDS["sysctl"].current(session, Target(), key))
    result.changes.sort(key=lambda c: (order_of(c.kind, c.target.device), c.target.device or "",
                                       c.key))
    return result
