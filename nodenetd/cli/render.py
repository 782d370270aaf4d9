"""How plans, results and status look: aligned text grouped by interface, or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from nodenetd.config.model import Origin
from nodenetd.cpuset import CpuSetError, format_cpulist, parse_mask
from nodenetd.tuning.journal import Journal, Original
from nodenetd.tuning.kinds.qdisc import describe as describe_qdisc
from nodenetd.tuning.kinds.sysctl import sysctl_key
from nodenetd.tuning.plan import Change, InSync, Item, Plan, Skip
from nodenetd.tuning.restore import RestoreReport


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def show_setting(item: Item | Original, value: Any) -> str:
    """A value as the plan shows it: CPU masks of queue steering with their CPU list, qdisc
    trees as tc words (``fq_codel(default)``, ``fq flow_limit 100 buckets 1024``)."""
    if item.kind == "qdisc":
        return describe_qdisc(item.key, value)
    if item.kind == "steering" and item.key.endswith("_cpus") and isinstance(value, str):
        try:
            cpus = format_cpulist(parse_mask(value)) or "none"
        except CpuSetError:
            return value
        return f"{value} ({cpus})"
    return show(value)


def setting_name(item: Item | Original) -> str:
    """How a person reads a setting: 'link.mtu', or the concrete sysctl key for an interface."""
    if item.kind == "sysctl":
        return f"sysctl {sysctl_key(item.target, item.key).display}"
    return f"{item.kind}.{item.key}"


def origin_json(origin: Origin) -> dict[str, Any]:
    pos = origin.position
    return {
        "profile": origin.profile,
        "rule": origin.rule,
        "file": pos.file if pos else None,
        "line": pos.line if pos else None,
    }


def item_json(item: Item) -> dict[str, Any]:
    data: dict[str, Any] = {
        "kind": item.kind,
        "device": item.target.device,
        "setting": item.key,
        "name": setting_name(item),
        "why": origin_json(item.why),
    }
    if isinstance(item, Change):
        data |= {"current": item.current, "desired": item.desired}
    elif isinstance(item, Skip):
        data |= {"desired": item.desired, "reason": item.reason}
    elif isinstance(item, InSync):
        data |= {"value": item.value}
    return data


def _table(rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        lines.append(f"{indent}{cells}  {row[-1]}".rstrip())
    return lines


def _grouped(items: Iterable[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.target.device or "(node)", []).append(item)
    return dict(sorted(groups.items(), key=lambda g: (g[0] != "(node)", g[0])))


def plan_text(plan: Plan, profiles: Iterable[str]) -> str:
    header = (
        f"profiles: {', '.join(profiles)}; {len(plan.managed)} managed interface(s); "
        f"{len(plan.changes)} to change, {len(plan.skipped)} skipped, {len(plan.in_sync)} in sync"
    )
    lines = [header]
    if not plan.changes:
        lines.append("Nothing to change: the node matches its profiles.")
    for device, items in _grouped(plan.changes).items():
        lines.append(f"\n{device}")
        rows = [
            (setting_name(c), show_setting(c, c.current), "->", show_setting(c, c.desired),
             f"# {c.why}")
            for c in items
            if isinstance(c, Change)
        ]
        lines += _table(rows)
    if plan.skipped:
        lines.append("\nskipped (the kernel or driver cannot do these):")
        rows = [(s.target.device or "(node)", setting_name(s), s.reason) for s in plan.skipped]
        lines += _table(rows)
    if plan.owned:
        lines.append("\nleft to their owners (never written):")
        rows = [(s.target.device or "(node)", setting_name(s), s.reason) for s in plan.owned]
        lines += _table(rows)
    if plan.observed:
        lines.append("\nobserved only (differ, never written):")
        rows = [(c.target.device or "(node)", setting_name(c), show_setting(c, c.current),
                 "want", show_setting(c, c.desired)) for c in plan.observed]
        lines += _table(rows)
    if plan.warnings:
        lines.append("\nwarnings:")
        lines += _table([(w.target.device or "(node)", w.message) for w in plan.warnings])
    return "\n".join(lines)


def plan_json(plan: Plan, profiles: Iterable[str]) -> dict[str, Any]:
    return {
        "profiles": list(profiles),
        "changes": [item_json(c) for c in plan.changes],
        "skipped": [item_json(s) for s in plan.skipped],
        "owned": [item_json(s) for s in plan.owned],
        "observed": [item_json(c) for c in plan.observed],
        "warnings": [{"device": w.target.device, "kind": w.kind, "message": w.message}
                     for w in plan.warnings],
        "in_sync": len(plan.in_sync),
        "managed": plan.managed,
    }


def journal_json(journal: Journal) -> dict[str, Any]:
    return {
        "path": str(journal.path),
        "originals": [
            {"kind": o.kind, "device": o.device, "setting": o.key, "original": o.value}
            for o in journal.originals.values()
        ],
        "pending": None
        if journal.pending is None
        else {"pid": journal.pending.pid, "settings": len(journal.pending.before)},
    }


def status_json(plan: Plan, journal: Journal, profiles: Iterable[str]) -> dict[str, Any]:
    interfaces: dict[str, Any] = {}
    for device, rules in plan.managed.items():
        interfaces[device] = {"rules": rules, "settings": []}
    node: list[dict[str, Any]] = []
    for state, items in (("in-sync", plan.in_sync), ("drifted", plan.changes),
                         ("unsupported", plan.skipped), ("owned", plan.owned),
                         ("observed", plan.observed)):
        for item in items:
            entry = item_json(item) | {"state": state}
            if item.target.device in interfaces:
                interfaces[item.target.device]["settings"].append(entry)
            else:
                node.append(entry)
    return {
        "profiles": list(profiles),
        "converged": not plan.changes,
        "differing": len(plan.changes),
        "node": node,
        "interfaces": interfaces,
        "journal": journal_json(journal),
    }


def status_text(status: dict[str, Any]) -> str:
    lines = [
        f"profiles: {', '.join(status['profiles'])}",
        "state: " + ("converged" if status["converged"] else
                     f"NOT converged: {status['differing']} setting(s) differ from the profiles"),
    ]

    def settings_rows(entries: list[dict[str, Any]]) -> list[str]:
        rows = []
        for e in entries:
            value = e.get("value", e.get("current"))

            def shown(v: Any, e: dict[str, Any] = e) -> str:
                return describe_qdisc(e["setting"], v) if e["kind"] == "qdisc" else show(v)

            detail = shown(value)
            if e["state"] in ("drifted", "observed"):
                detail = f"{shown(e['current'])} (want {shown(e['desired'])})"
            elif e["state"] in ("unsupported", "owned"):
                detail = e["reason"]
            rows.append((e["name"], e["state"], detail))
        return _table(rows, "    ") if rows else []

    if status["node"]:
        lines.append("\nnode")
        lines += settings_rows(status["node"])
    for device, data in sorted(status["interfaces"].items()):
        lines.append(f"\n{device}  ({'; '.join(data['rules'])})")
        lines += settings_rows(data["settings"])
    journal = status["journal"]
    lines.append(f"\njournal {journal['path']}: {len(journal['originals'])} original(s) held")
    if journal["pending"]:
        lines.append(f"  INTERRUPTED apply by pid {journal['pending']['pid']}: "
                     "run 'nodenetctl restore' or 'nodenetctl apply' to undo it")
    return "\n".join(lines)


def restore_json(report: RestoreReport) -> dict[str, Any]:
    def entries(originals):
        return [{"kind": o.kind, "device": o.device, "setting": o.key, "value": o.value}
                for o in originals]

    return {"restored": entries(report.restored), "gone": entries(report.gone),
            "failed": report.failed}


def restore_text(report: RestoreReport) -> str:
    lines = [f"restored {len(report.restored)} setting(s)"]
    for o in report.restored:
        lines.append(f"  {o.device or '(node)'} {setting_name(o)} -> {show_setting(o, o.value)}")
    if report.gone:
        lines.append(f"forgot {len(report.gone)} setting(s) of interfaces (or queues) "
                     "that are gone")
    if report.failed:
        lines.append("FAILED to restore (kept in the journal):")
        lines += [f"  {f}" for f in report.failed]
    return "\n".join(lines)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def failover_text(status: dict[str, Any]) -> str:
    """``nodenetctl failover status``: one block per group, one row per member."""
    lines: list[str] = []
    for group in status["groups"]:
        active = group["active"] or "none"
        state = "" if group["active_usable"] else " (NOT usable: no usable member)"
        override = group["override"]
        if override and override.get("hold"):
            state += "; HELD by operator"
        elif override:
            left = override["remaining"]
            state += f"; switched to {override['switch']} by operator" + (
                f" for {left:.0f}s more" if left is not None else "")
        lines.append(f"{group['name']} ({group['type']} group, failback {group['failback']}): "
                     f"active {active}{state}")
        if group["kernel_error"]:
            lines.append(f"  kernel error: {group['kernel_error']}")
        rows = [("", "member", "prio", "standing", "link", "probes", "loss", "rtt ms",
                 "penalty")]
        for member in group["members"]:
            link = member["link"]
            carrier = "absent" if not link or not link["present"] else (
                "up" if link["carrier"] else "no carrier")
            probes = member["probes"]
            sent = sum(p["sent"] for p in probes)
            failed = sum(p["failed"] for p in probes)
            rtts = [p["last_rtt_ms"] for p in probes if p["last_rtt_ms"] is not None]
            damping = member["damping"]
            penalty = "-" if damping is None else f"{damping['penalty']:.0f}" + (
                " SUPPRESSED" if damping["suppressed"] else "")
            rows.append(("*" if member["name"] == group["active"] else "", member["name"],
                         str(member["priority"]), member["standing"], carrier,
                         f"{len(probes)} ({member['path']})" if probes else "none",
                         f"{failed / sent:.1%}" if sent else "-",
                         f"{max(rtts):.2f}" if rtts else "-", penalty))
        lines += _table(rows)
        switches = group["counters"]["switches"]
        if switches:
            lines.append("  switches: " + ", ".join(f"{k} {v}" for k, v in
                                                      sorted(switches.items())))
        if group["last_decision"]:
            lines.append(f"  last decision: {group['last_decision']}")
    for waiting in status["waiting"]:
        lines.append(f"{waiting['name']}: not running yet: {waiting['reason']}")
    return "\n".join(lines) if lines else "no failover groups configured"
