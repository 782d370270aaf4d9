"""nodenetctl: validate, plan, apply, status and restore the node's network tuning."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from nodenetd import __version__
from nodenetd.cli import render
from nodenetd.config.loader import validate_files
from nodenetd.errors import ApplyFailed, ConfigError, LockBusy, NodenetdError
from nodenetd.tuning import engine
from nodenetd.tuning.session import KernelSession

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CHANGES_PENDING = 2
EXIT_INVALID_CONFIG = 3
EXIT_LOCKED = 4
EXIT_USAGE = 64

EXIT_CODES = f"""exit codes:
  {EXIT_OK}   success (plan: nothing to change, unless --detailed-exitcode says otherwise)
  {EXIT_FAILED}   failure: apply failed and was rolled back, restore incomplete, kernel error
  {EXIT_CHANGES_PENDING}   plan --detailed-exitcode: changes are pending
  {EXIT_INVALID_CONFIG}   invalid node config or profile (nothing was changed)
  {EXIT_LOCKED}   another nodenetctl or nodenetd holds the lock (nothing was changed)
  {EXIT_USAGE}  bad command line
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code 2 means "changes pending"
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE",
                        help="node config (default /etc/nodenetd/nodenetd.yaml)")
    common.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="output format")
    common.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")

    parser = _Parser(
        prog="nodenetctl",
        description="Plan, apply and restore declarative network tuning on this node.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"nodenetctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    validate = sub.add_parser("validate", parents=[common],
                              help="check profiles and node configs without touching anything")
    validate.add_argument("files", nargs="+", metavar="FILE")

    plan = sub.add_parser("plan", parents=[common], help="show what apply would change")
    plan.add_argument("--detailed-exitcode", action="store_true",
                      help=f"exit {EXIT_CHANGES_PENDING} when changes are pending")

    apply = sub.add_parser("apply", parents=[common],
                           help="apply the profiles as one transaction (rolled back on failure)")
    apply.add_argument("--dry-run", action="store_true", help="plan under the lock, change nothing")
    apply.add_argument("--strict", action="store_true",
                       help="settings the driver cannot take fail the apply instead of skipping")

    sub.add_parser("status", parents=[common],
                   help="managed interfaces, in-sync or drifted per setting, the journal")
    restore = sub.add_parser("restore", parents=[common],
                             help="put back every original value nodenetd recorded")
    restore.add_argument("--state-dir", help="journal location (default: from the config)")
    return parser


def _print(args: argparse.Namespace, text: str, data: object) -> None:
    print(render.dumps(data) if args.output == "json" else text)


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


def cmd_plan(args: argparse.Namespace) -> int:
    loaded = engine.load(args.config)
    with KernelSession() as session:
        plan = engine.compute_plan(loaded, session)
    names = loaded.resolved.names
    _print(args, render.plan_text(plan, names), render.plan_json(plan, names))
    return EXIT_CHANGES_PENDING if args.detailed_exitcode and plan.changes else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    loaded = engine.load(args.config)
    outcome = engine.apply(loaded, strict=args.strict, dry_run=args.dry_run)
    names = loaded.resolved.names
    if args.output == "json":
        data = render.plan_json(outcome.plan, names) | {
            "dry_run": args.dry_run,
            "recovered_interrupted_apply": outcome.recovered,
            "applied": [render.item_json(c) for c in outcome.result.applied],
            "skipped": [render.item_json(s) for s in outcome.skipped],
        }
        print(render.dumps(data))
        return EXIT_OK
    if outcome.recovered:
        print("undid an interrupted earlier apply from the journal")
    print(render.plan_text(outcome.plan, names))
    if args.dry_run:
        print("\ndry run: nothing was changed")
    else:
        print(f"\napplied {len(outcome.result.applied)} change(s), "
              f"skipped {len(outcome.skipped)}; read back and verified")
        for skip in outcome.result.skipped:
            print(f"  skipped at apply: {skip.label}: {skip.reason}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    loaded = engine.load(args.config)
    with KernelSession() as session:
        plan = engine.compute_plan(loaded, session)
    status = render.status_json(plan, engine.journal_of(loaded.state_dir), loaded.resolved.names)
    _print(args, render.status_text(status), status)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or engine.state_dir_for_restore(args.config)
    report = engine.restore_state(state_dir)
    _print(args, render.restore_text(report), render.restore_json(report))
    return EXIT_FAILED if report.failed else EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "plan": cmd_plan,
    "apply": cmd_apply,
    "status": cmd_status,
    "restore": cmd_restore,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="nodenetctl: %(levelname)s: %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"invalid configuration:\n{exc}\nnothing was changed", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    except LockBusy as exc:
        print(f"nodenetctl: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except (ApplyFailed, NodenetdError) as exc:
        print(f"nodenetctl: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
