"""plan(desired, observed) -> changes, skips and in-sync settings. Reads only; writes nothing."""

from __future__ import annotations

from nodenetd.errors import Absent, Gone, Unsupported
from nodenetd.tuning.desired import Desired
from nodenetd.tuning.kinds import KINDS, order_of
from nodenetd.tuning.plan import Change, InSync, Plan, Skip
from nodenetd.tuning.session import KernelSession


def plan(desired: Desired, session: KernelSession) -> Plan:
    result = Plan(managed={name: b.rules for name, b in desired.interfaces.items()})
    for kind_name, target, key, wanted in desired.items():
        kind = KINDS[kind_name]
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
        else:
            result.changes.append(Change(kind_name, target, key, wanted.origin, current, value))
    result.changes.sort(key=lambda c: (order_of(c.kind, c.target.device), c.target.device or "",
                                       c.key))
    return result
