"""``python3 -m nodenetd.metrics hash-password [--iterations N]``: read a password (from the
terminal without echo, or one line of standard input) and print a hash for
``metrics.basic_auth``."""

from __future__ import annotations

import argparse
import getpass
import sys

from nodenetd.metrics.auth import PBKDF2_ITERATIONS, hash_password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m nodenetd.metrics")
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser("hash-password", help="print a pbkdf2_sha256 hash")
    hashing.add_argument("--iterations", type=int, default=PBKDF2_ITERATIONS)
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(password, iterations=args.iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
