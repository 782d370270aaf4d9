"""nodenetctl: validate, plan, apply, status and restore the node's network tuning."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from nodenetd import __version__
from nodenetd.cli import commands, render
from nodenetd.config.loader import validate_files
from nodenetd.daemon import control
from nodenetd.daemon.api import (
    EXIT_CHANGES_PENDING,
    EXIT_FAILED,
    EXIT_INVALID_CONFIG,
    EXIT_LOCKED,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_USAGE,
    Reply,
)
from nodenetd.errors import ConfigError, LockBusy, NodenetdError
from nodenetd.tuning import engine

__all__ = [
    "EXIT_CHANGES_PENDING", "EXIT_FAILED", "EXIT_INVALID_CONFIG", "EXIT_LOCKED", "EXIT_NOPERM",
    "EXIT_OK", "EXIT_USAGE", "build_parser", "main",
]

log = logging.getLogger("nodenetctl")

DEFAULT_TIMEOUT = 120.0

EXIT_CODES = f"""daemon:
  plan, apply, status, restore and reload go through nodenetd's control socket when it
  runs (--socket, else ${control.SOCKET_ENV}, else {control.DEFAULT_SOCKET}), and work
  standalone when it does not; the output is the same either way. reload and failover need
  the daemon.
  --standalone forces local mode; while nodenetd runs it holds the lock, so apply and restore
  then exit {EXIT_LOCKED}.

exit codes:
  {EXIT_OK}   success (plan: nothing to change, unless --detailed-exitcode says otherwise)
  {EXIT_FAILED}   failure: apply failed and was rolled back, restore incomplete, kernel error,
      reload without a running nodenetd, no answer from nodenetd in time
  {EXIT_CHANGES_PENDING}   plan --detailed-exitcode: changes are pending
  {EXIT_INVALID_CONFIG}   invalid node config or profile (nothing was changed)
  {EXIT_LOCKED}   another nodenetctl or nodenetd holds the lock (nothing was changed)
  {EXIT_USAGE}  bad command line
  {EXIT_NOPERM}  nodenetd's control socket serves root only
"""

ROUTED = ("plan", "apply", "status", "restore", "reload", "failover")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code 2 means "changes pending"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _options(*, top: bool) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options every command takes, and those of the commands the daemon serves.

    They are accepted before and after the command. The subcommands' copies default to
    SUPPRESS, or argparse would let their defaults override a value given before the command.
    """

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=default(None),
                        help="node config (default /etc/nodenetd/nodenetd.yaml)")
    common.add_argument("-o", "--output", choices=("text", "json"), default=default("text"),
                        help="output format")
    common.add_argument("-v", "--verbose", action="store_true", default=default(False),
                        help="log each step to stderr")
    routing = argparse.ArgumentParser(add_help=False)
    routing.add_argument("--standalone", action="store_true", default=default(False),
                         help="do not use nodenetd's control socket even when it runs")
    routing.add_argument("--socket", metavar="PATH", default=default(None),
                         help=f"nodenetd's control socket (default ${control.SOCKET_ENV}, "
                              f"else {control.DEFAULT_SOCKET})")
    routing.add_argument("--timeout", metavar="SECONDS", type=_seconds,
                         default=default(DEFAULT_TIMEOUT),
                         help=f"wait this long for nodenetd's answer (default "
                              f"{DEFAULT_TIMEOUT:g})")
    return common, routing


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common, routing = _options(top=False)
    parser = _Parser(
        prog="nodenetctl",
        description="Plan, apply and restore declarative network tuning on this node.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(_options(top=True)),
    )
    parser.add_argument("--version", action="version", version=f"nodenetctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    routed = [common, routing]

    validate = sub.add_parser("validate", parents=[common],
                              help="check profiles and node configs without touching anything")
    validate.add_argument("files", nargs="+", metavar="FILE")

    plan = sub.add_parser("plan", parents=routed, help="show what apply would change")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help=f"exit {EXIT_CHANGES_PENDING} when changes are pending")

    apply = sub.add_parser("apply", parents=routed,
                           help="apply the profiles as one transaction (rolled back on failure)")
    apply.add_argument("--dry-run", action="store_true", help="plan under the lock, change nothing")
    apply.add_argument("--strict", action="store_true",
                       help="settings the driver cannot take fail the apply instead of skipping")

    sub.add_parser("status", parents=routed,
                   help="managed interfaces, in-sync or drifted per setting, the journal")
    restore = sub.add_parser("restore", parents=routed,
                             help="put back every original value nodenetd recorded")
    restore.add_argument("--state-dir", help="journal location (default: from the config)")
    sub.add_parser("reload", parents=routed,
                   help="make the running nodenetd re-read its config and apply the difference")
    _failover_parser(sub, routed)
    return parser


def _failover_parser(sub: Any, routed: list[argparse.ArgumentParser]) -> None:
    failover = sub.add_parser(
        "failover", parents=routed, help="failover groups: status, manual switch, hold",
        description="Show and steer the running nodenetd's failover groups.")
    actions = failover.add_subparsers(dest="action", required=True, parser_class=_Parser)
    actions.add_parser("status", parents=routed,
                       help="groups, members, health, probe RTT/loss, damping, active member")
    switch = actions.add_parser(
        "switch", parents=routed,
        help="make MEMBER active (while it stays usable) for DURATION or until release")
    switch.add_argument("group")
    switch.add_argument("member")
    switch.add_argument("--for", dest="duration", metavar="DURATION", type=_duration,
                        help="how long: 90, 90s, 15m, 2h (default: until release)")
    hold = actions.add_parser(
        "hold", parents=routed,
        help="freeze the group's choice for maintenance (no automatic switch) until release")
    hold.add_argument("group")
    release = actions.add_parser("release", parents=routed,
                                 help="end a switch or hold: automatic selection again")
    release.add_argument("group")


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h`` or ``1d`` as seconds."""
    number, unit = text.rstrip("smhd"), text[len(text.rstrip("smhd")):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (expected e.g. 90, 90s, 15m, 2h)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def emit(args: argparse.Namespace, reply: Reply) -> int:
    """Print a Reply as nodenetctl does in either mode and return its exit code."""
    if args.output == "json":
        if reply.data or reply.text:
            print(render.dumps(reply.data))
    elif reply.text:
        print(reply.text)
    if reply.error:
        print(reply.error, file=sys.stderr)
    return reply.exit_code


def request_args(args: argparse.Namespace) -> dict[str, Any]:
    """The command's arguments as sent to the daemon (see commands.ARGS)."""
    wire: dict[str, Any] = {"config": os.path.abspath(args.config) if args.config else None}
    if args.command == "plan":
        wire["detailed_exitcode"] = args.detailed_exitcode
    elif args.command == "apply":
        wire |= {"strict": args.strict, "dry_run": args.dry_run}
    elif args.command == "restore":
        wire["state_dir"] = os.path.abspath(args.state_dir) if args.state_dir else None
    elif args.command == "failover":
        wire |= {"action": args.action, "group": getattr(args, "group", None),
                 "member": getattr(args, "member", None),
                 "duration": getattr(args, "duration", None)}
    return wire


def routed(args: argparse.Namespace) -> Reply:
    """Through the daemon when its socket answers, standalone when nothing listens there."""
    wire = request_args(args)
    if not args.standalone:
        path = control.socket_path(
            args.socket, engine.peek(args.config, "daemon", "control_socket"))
        try:
            return control.call(path, args.command, wire, timeout=args.timeout)
        except control.DaemonUnavailable as exc:
            log.info("%s; working standalone", exc)
        except control.ControlError as exc:
            return Reply(exc.exit_code, "", error=f"nodenetctl: {exc}")
    return commands.run_local(args.command, wire)


def cmd_validate(args: argparse.Namespace) -> int:
    issues = validate_files(args.files)
    if args.output == "json":
        print(render.dumps({"valid": not issues, "issues": [str(i) for i in issues]}))
    elif issues:
        for issue in issues:
            print(issue, file=sys.stderr)
    else:
        print(f"valid: {', '.join(args.files)}")
    return EXIT_INVALID_CONFIG if issues else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="nodenetctl: %(levelname)s: %(message)s",
    )
    if args.command in ROUTED:
        return emit(args, routed(args))
    try:
        return cmd_validate(args)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}\nnothing was changed", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    except LockBusy as exc:
        print(f"nodenetctl: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except NodenetdError as exc:
        print(f"nodenetctl: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
