"""nodenetctl's commands as Replies: what to print, the JSON document and the exit code.

nodenetctl calls these when it works standalone and the daemon calls the same functions for
its control socket, so the output is identical either way. No argparse here: the daemon
imports this module. Expected failures (NodenetdError) become Replies with their documented
exit code; anything else is a bug and propagates.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

from nodenetd.cli import render
from nodenetd.daemon.api import (
    EXIT_CHANGES_PENDING,
    EXIT_FAILED,
    EXIT_INVALID_CONFIG,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_USAGE,
    Reply,
)
from nodenetd.errors import ConfigError, LockBusy, NodenetdError
from nodenetd.tuning import engine
from nodenetd.tuning.engine import Loaded
from nodenetd.tuning.session import KernelSession

P = ParamSpec("P")

NOT_RUNNING = "nodenetd is not running"
DAEMON_ONLY = ("reload", "failover")  # what only a running nodenetd can answer


def error_reply(exc: NodenetdError) -> Reply:
    """The Reply for an expected failure: its message on stderr and its exit code."""
    if isinstance(exc, ConfigError):
        return Reply(EXIT_INVALID_CONFIG, "",
                     error=f"invalid configuration:\n{exc}\nnothing was changed")
    if isinstance(exc, LockBusy):
        return Reply(EXIT_LOCKED, "", error=f"nodenetctl: {exc}")
    return Reply(EXIT_FAILED, "", error=f"nodenetctl: {exc}")


def not_running_reply(command: str) -> Reply:
    """What a daemon-only command (reload) answers when no daemon listens."""
    return Reply(EXIT_FAILED, "",
                 error=f"nodenetctl: {NOT_RUNNING}: nothing to {command} "
                       "(start it with 'systemctl start nodenetd')")


def _replying(fn: Callable[P, Reply]) -> Callable[P, Reply]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Reply:
        try:
            return fn(*args, **kwargs)
        except NodenetdError as exc:
            return error_reply(exc)

    return wrapper


def _planned(loaded: Loaded, session: KernelSession | None):
    if session is not None:
        return engine.compute_plan(loaded, session)
    with KernelSession() as own:
        return engine.compute_plan(loaded, own)


@_replying
def plan_reply(loaded: Loaded, *, detailed: bool = False,
               session: KernelSession | None = None) -> Reply:
    """What apply would change; exit EXIT_CHANGES_PENDING when ``detailed`` and changes are
    pending. The daemon may pass its own ``session``; otherwise one is opened and closed."""
    plan = _planned(loaded, session)
    names = loaded.resolved.names
    code = EXIT_CHANGES_PENDING if detailed and plan.changes else EXIT_OK
    return Reply(code, render.plan_text(plan, names), render.plan_json(plan, names))


@_replying
def apply_reply(loaded: Loaded, *, strict: bool = False, dry_run: bool = False,
                locked: bool = False) -> Reply:
    """Apply as one transaction. ``locked``: the caller (the daemon) holds the state lock."""
    outcome = engine.apply(loaded, strict=strict, dry_run=dry_run, locked=locked)
    names = loaded.resolved.names
    data = render.plan_json(outcome.plan, names) | {
        "dry_run": dry_run,
        "recovered_interrupted_apply": outcome.recovered,
        "applied": [render.item_json(c) for c in outcome.result.applied],
        "skipped": [render.item_json(s) for s in outcome.skipped],
    }
    lines = []
    if outcome.recovered:
        lines.append("undid an interrupted earlier apply from the journal")
    lines.append(render.plan_text(outcome.plan, names))
    if dry_run:
        lines.append("\ndry run: nothing was changed")
    else:
        lines.append(f"\napplied {len(outcome.result.applied)} change(s), "
                     f"skipped {len(outcome.skipped)}; read back and verified")
        lines += [f"  skipped at apply: {skip.label}: {skip.reason}"
                  for skip in outcome.result.skipped]
    return Reply(EXIT_OK, "\n".join(lines), data)


@_replying
def status_reply(loaded: Loaded, *, session: KernelSession | None = None) -> Reply:
    """Managed interfaces, in-sync or drifted per setting, and the journal."""
    plan = _planned(loaded, session)
    status = render.status_json(plan, engine.journal_of(loaded.state_dir), loaded.resolved.names)
    return Reply(EXIT_OK, render.status_text(status), status)


@_replying
def restore_reply(state_dir: str, *, locked: bool = False) -> Reply:
    """Put back every recorded original; EXIT_FAILED when some could not be restored."""
    report = engine.restore_state(state_dir, locked=locked)
    return Reply(EXIT_FAILED if report.failed else EXIT_OK,
                 render.restore_text(report), render.restore_json(report))


# -- requests: the wire arguments of each command, shared by nodenetctl and the daemon --------

ARGS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "status": {},
    "plan": {"detailed_exitcode": bool},
    "apply": {"strict": bool, "dry_run": bool},
    "reload": {},
    "restore": {"state_dir": (str, type(None))},
    "failover": {"action": str, "group": (str, type(None)), "member": (str, type(None)),
                 "duration": (int, float, type(None))},
}
"""Each command's arguments and their types; every request may also carry ``config``."""


class BadRequest(NodenetdError):
    """A control request with an unknown command or arguments of the wrong name or type."""


def check_args(command: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of a request, checked against ARGS; raises BadRequest."""
    if command not in ARGS:
        raise BadRequest(f"unknown command {command!r} (known: {', '.join(ARGS)})")
    if not isinstance(args, Mapping):
        raise BadRequest(f"{command}: args must be an object, not {type(args).__name__}")
    spec = ARGS[command] | {"config": (str, type(None))}
    for key, value in args.items():
        if key not in spec:
            raise BadRequest(f"{command}: unknown argument {key!r}")
        if not isinstance(value, spec[key]):
            raise BadRequest(f"{command}: argument {key!r} has the wrong type "
                             f"({type(value).__name__})")
    return dict(args)


def run_local(command: str, args: Mapping[str, Any]) -> Reply:
    """Standalone: load the config named in ``args`` and run the command under its own lock."""
    try:
        args = check_args(command, args)
    except BadRequest as exc:
        return Reply(EXIT_USAGE, "", error=f"nodenetctl: {exc}")
    config = args.get("config")
    if command in DAEMON_ONLY:
        return not_running_reply(command)
    if command == "restore":  # works even when the config is broken
        return restore_reply(args.get("state_dir") or engine.state_dir_for_restore(config))
    try:
        loaded = engine.load(config)
    except NodenetdError as exc:
        return error_reply(exc)
    return run_loaded(loaded, command, args)


def run_loaded(loaded: Loaded, command: str, args: Mapping[str, Any], *, locked: bool = False,
               session: KernelSession | None = None) -> Reply:
    """Run status, plan, apply or restore against an already loaded config; the daemon calls
    this with its running config, ``locked=True`` (it holds the state lock for its life) and
    optionally its own KernelSession for the read-only commands. Blocking: run it in a worker
    thread. ``reload`` is the daemon's own and is refused here."""
    try:
        args = check_args(command, args)
    except BadRequest as exc:
        return Reply(EXIT_USAGE, "", error=f"nodenetctl: {exc}")
    if command == "status":
        return status_reply(loaded, session=session)
    if command == "plan":
        return plan_reply(loaded, detailed=args.get("detailed_exitcode", False), session=session)
    if command == "apply":
        return apply_reply(loaded, strict=args.get("strict", False),
                           dry_run=args.get("dry_run", False), locked=locked)
    if command == "restore":
        state_dir = args.get("state_dir") or loaded.state_dir
        ours = os.path.realpath(state_dir) == os.path.realpath(loaded.state_dir)
        return restore_reply(state_dir, locked=locked and ours)  # another dir: take its lock
    return Reply(EXIT_USAGE, "", error=f"nodenetctl: {command} is not a local command")
