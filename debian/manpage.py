"""Write a man page (roff, section 8) for a nodenetd command from its argparse parser.

    python debian/manpage.py nodenetd.cli.main > nodenetctl.8

MODULE must have ``build_parser()``. NAME comes from the parser's description, OPTIONS and
COMMANDS (subcommands, recursively) from its actions, EXIT STATUS and other sections from
its epilog (blocks introduced by "title:" at the start of a line); FILES and SEE ALSO are
the package's. The date is SOURCE_DATE_EPOCH's, so the build is reproducible.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time

import nodenetd

FILES = [
    ("/etc/nodenetd/nodenetd.yaml", "the node config (profiles, overrides, daemon settings)"),
    ("/etc/nodenetd/profiles.d/", "local profiles, searched before the built-in ones"),
    ("/usr/share/nodenetd/profiles/", "built-in profiles"),
    ("/var/lib/nodenetd/", "the journal of original values and the lock"),
    ("/run/nodenetd/control.sock", "the daemon's control socket (root only)"),
    ("/etc/default/nodenetd", "what package removal does with the tuning"),
]
SEE_ALSO = {
    "nodenetd": ["nodenetctl(8)", "systemctl(1)", "journalctl(1)", "systemd.exec(5)"],
    "nodenetctl": ["nodenetd(8)", "ethtool(8)", "sysctl(8)", "ip(8)"],
}


def text(value: str) -> str:
    """Escape running text for roff."""
    value = value.replace("\\", "\\e")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in value.splitlines())


def literal(value: str) -> str:
    """An option name or command line: minus signs, not hyphens."""
    return text(value).replace("-", "\\-")


def first_sentence(description: str) -> str:
    sentence = re.split(r"(?<=[.:])\s", description.strip(), maxsplit=1)[0].rstrip(".:")
    return sentence[0].lower() + sentence[1:] if sentence[:2].istitle() else sentence


def usage(parser: argparse.ArgumentParser) -> str:
    line = " ".join(parser.format_usage().split())
    return line.removeprefix("usage: ")


def help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._expand_help(action) if action.help else ""


def option_items(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings and set(action.option_strings) & skip:
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{literal(o)}\\fR" for o in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or (
                    "{" + ",".join(action.choices) + "}" if action.choices
                    else action.dest.upper())
                names += f" \\fI{literal(str(metavar))}\\fR"
        else:
            names = f"\\fI{literal(str(action.metavar or action.dest))}\\fR"
        out += [".TP", names, text(help_of(parser, action))]
    return out


def subcommands(parser: argparse.ArgumentParser, skip: set[str], path: str) -> list[str]:
    out = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        for name, sub in action.choices.items():
            out += [f'.SS "{literal(f"{path} {name}")}"', f".B {literal(usage(sub))}", ".PP",
                    text(sub.description or helps.get(name, ""))]
            out += option_items(sub, skip | {"-h"})
            out += subcommands(sub, skip, f"{path} {name}")
    return out


def epilog_sections(epilog: str) -> list[str]:
    out = []
    blocks = re.split(r"^(\w[\w ]*):[ \t]*", epilog.strip(), flags=re.M)
    for title, body in zip(blocks[1::2], blocks[2::2], strict=True):
        heading = "EXIT STATUS" if title == "exit codes" else title.upper()
        lines = [line for line in body.strip("\n").splitlines() if line.strip()]
        out.append(f".SH {heading}")
        if len(lines) > 1:
            out += [".nf", *(text(line.strip()) if not line.startswith(" " * 4) else
                             text("    " + line.strip()) for line in lines), ".fi"]
        else:
            out.append(text(" ".join(lines)))
    return out


def render(parser: argparse.ArgumentParser, version: str, date: str) -> str:
    prog = parser.prog
    top_options = {o for a in parser._actions for o in a.option_strings}
    lines = [
        f'.TH {prog.upper()} 8 "{date}" "nodenetd {version}" "System Administration"',
        ".SH NAME", f"{prog} \\- {text(first_sentence(parser.description or prog))}",
        ".SH SYNOPSIS", f".B {literal(usage(parser))}",
        ".SH DESCRIPTION", text(parser.description or ""),
        ".SH OPTIONS", *option_items(parser, set()),
    ]
    commands = subcommands(parser, top_options, prog)
    if commands:
        lines += [".SH COMMANDS",
                  "Options before the command apply to it as well; each command also takes"
                  " the options of the command line above.", *commands]
    lines += epilog_sections(parser.epilog or "")
    lines.append(".SH FILES")
    for path, what in FILES:
        lines += [".TP", f"\\fI{literal(path)}\\fR", text(what)]
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{literal(ref.split('(')[0])}\\fR(" +
                                        ref.split("(")[1] for ref in SEE_ALSO.get(prog, [])),
              ".PP", "/usr/share/doc/nodenetd/README.md.gz, "
                     "/usr/share/doc/nodenetd/README.Debian."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 64
    parser = importlib.import_module(argv[0]).build_parser()
    stamp = float(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%Y-%m-%d", time.gmtime(stamp))
    sys.stdout.write(render(parser, nodenetd.__version__, date))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
