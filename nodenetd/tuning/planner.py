"""plan(desired, observed) -> changes, skips and in-sync settings. Reads only; writes nothing."""

from __future__ import annotations

from nodenetd.config.model import Wanted
from nodenetd.errors import Absent, Gone, Unsupported
from nodenetd.tuning.constraints import keep_limits_consistent
from nodenetd.tuning.desired import Desired
from nodenetd.tuning.kind import SettingKind
from nodenetd.tuning.kinds import KINDS, order_of
from nodenetd.tuning.ownership import Ownership
from nodenetd.tuning.plan import Change, InSync, Plan, Skip, Target
from nodenetd.tuning.session import KernelSession


def plan(desired: Desired, session: KernelSession) -> Plan:
    result = Plan(managed={name: b.rules for name, b in desired.interfaces.items()})
    ownership: Ownership = session.cached("ownership", lambda: Ownership.detect(session.links()))
    kinds: dict[str, None] = {}
    for kind_name, target, profile_key, wanted in desired.items():
        kind = KINDS[kind_name]
        if kind_name not in kinds:
            kinds[kind_name] = None
            kind.prepare(session, desired)
        try:  # one profile key may stand for several settings (one per queue)
            keys = kind.expand(session, target, profile_key, wanted)
        except (Unsupported, Gone) as exc:
            result.skipped.append(Skip(kind_name, target, profile_key, wanted.origin,
                                       wanted.value, exc.reason))
            continue
        for key in keys:
            _plan_one(result, session, ownership, kind, target, key, wanted)
    keep_limits_consistent(result, lambda key: KINDS["sysctl"].current(session, Target(), key))
    result.changes.sort(key=lambda c: (order_of(c.kind, c.target.device), c.target.device or "",
                                       c.key))
    for kind_name in kinds:
        result.warnings += KINDS[kind_name].warnings(session, desired, result)
    return result


def _plan_one(result: Plan, session: KernelSession, ownership: Ownership, kind: SettingKind,
              target: Target, key: str, wanted: Wanted) -> None:
    """Plan one concrete setting: left to its owner, skipped, in sync, observed or a change."""
    kind_name = kind.name
    owner = ownership.owner_of(kind_name, target, key)
    if owner is not None and not wanted.observe and wanted.override != owner.name:
        how = (f"{{enforce: VALUE, override: {owner.name}}}" if kind_name == "sysctl"
               else f"override: {owner.name} in its settings")
        result.owned.append(Skip(kind_name, target, key, wanted.origin, wanted.value,
                                 f"owned by {owner.name}: {owner.reason} (to manage it "
                                 f"anyway, write {how})"))
        return
    try:
        current = kind.current(session, target, key)
        value = kind.resolve(session, target, key, wanted, current)
    except Absent as exc:
        if wanted.via is None:
            result.skipped.append(
                Skip(kind_name, target, key, wanted.origin, wanted.value, exc.reason)
            )
        return
    except (Unsupported, Gone) as exc:
        result.skipped.append(
            Skip(kind_name, target, key, wanted.origin, wanted.value, exc.reason)
        )
        return
    if kind.in_sync(current, value):
        result.in_sync.append(InSync(kind_name, target, key, wanted.origin, current))
    elif wanted.observe:
        result.observed.append(Change(kind_name, target, key, wanted.origin, current, value))
    else:
        result.changes.append(Change(kind_name, target, key, wanted.origin, current, value))
