"""`meshtrust` (also `python -m cli`): the operator's command line.

Subcommands register in `COMMANDS` (name -> (help, add_arguments, run)), a module each: `demo`
and `devstack` (the local stack), `status` (every IssuedCertificate of the management cluster),
`audit` (the event stream), `ledger` (every signature), `nats-config` (per-cluster NATS users),
`rotate` (a CertificateRotation: start, status, approve, abort).
The CLI imports `shared` and `devstack`, never a service: it reads what the services publish in
their published formats.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from cli import audit, demo, ledger, natsconfig, rotate, stack, status
from shared.runtime import LoggingSettings, configure_logging

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]

COMMANDS: dict[str, Command] = {
    "demo": (demo.HELP, demo.add_arguments, demo.run),
    "devstack": (stack.HELP, stack.add_arguments, stack.run),
    "status": (status.HELP, status.add_arguments, status.run),
    "audit": (audit.HELP, audit.add_arguments, audit.run),
    "ledger": (ledger.HELP, ledger.add_arguments, ledger.run),
    "nats-config": (natsconfig.HELP, natsconfig.add_arguments, natsconfig.run),
    "rotate": (rotate.HELP, rotate.add_arguments, rotate.run),
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
