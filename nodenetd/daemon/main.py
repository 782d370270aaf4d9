"""nodenetd: the long-running service. Until the event loop lands (issue 4) this entry point
parses its arguments and loads and validates the node config, exactly as the service will."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nodenetd import __version__
from nodenetd.errors import ConfigError
from nodenetd.tuning import engine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodenetd", description="Network tuning daemon.")
    parser.add_argument("--config", metavar="FILE",
                        help="node config (default /etc/nodenetd/nodenetd.yaml)")
    parser.add_argument("--version", action="version", version=f"nodenetd {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = engine.load(args.config)
    except ConfigError as exc:
        print(f"nodenetd: invalid configuration:\n{exc}", file=sys.stderr)
        return 3
    print(f"nodenetd: config ok: profiles {', '.join(loaded.resolved.names)}, "
          f"state in {loaded.state_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
