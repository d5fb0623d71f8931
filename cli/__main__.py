"""`meshtrust` (also `python -m cli`): the operator's command line.

Subcommands register themselves in `COMMANDS` (name -> (help, add_arguments, run)); `ledger`
lists the issuance ledger. Later subcommands (demo, devstack, status, audit, nats-config) add an
entry and a module each. The CLI imports `shared` only, never a service: it reads what the
services publish in its published formats.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cli import ledger
from shared.runtime import LoggingSettings, configure_logging

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: dict[str, Command] = {
    "ledger": (ledger.HELP, ledger.add_arguments, ledger.run),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="meshtrust", description="meshtrust: one root of trust for many service meshes."
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Logs go to stderr, and only warnings: stdout is the command's output.
    configure_logging(LoggingSettings(level="warning", format="console"))
    _, _, run = COMMANDS[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
