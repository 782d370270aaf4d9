"""nodenetd: the long-running service (see nodenetd.daemon.service)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from nodenetd import __version__
from nodenetd.daemon.logs import setup_logging
from nodenetd.daemon.service import Service
from nodenetd.errors import ConfigError
from nodenetd.tuning import engine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodenetd",
        description="Network tuning daemon: applies the node's profiles, tunes interfaces as "
        "they appear, corrects drift. Reload with SIGHUP (systemctl reload nodenetd).",
        epilog="exit codes: 0 stopped cleanly, 3 invalid configuration, "
        "4 another nodenetd/nodenetctl holds the lock",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="node config (default /etc/nodenetd/nodenetd.yaml)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="override the config's daemon.log_level")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config and its profiles, then exit")
    parser.add_argument("--version", action="version", version=f"nodenetd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.check_config:
        try:
            loaded = engine.load(args.config)
        except ConfigError as exc:
            print(f"nodenetd: invalid configuration:\n{exc}", file=sys.stderr)
            return 3
        print(f"nodenetd: config ok: profiles {', '.join(loaded.resolved.names)}")
        return 0
    setup_logging(args.log_level or "info")
    return asyncio.run(Service(args.config, log_level=args.log_level).run())


if __name__ == "__main__":
    sys.exit(main())
