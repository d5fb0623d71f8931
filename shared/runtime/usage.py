"""The services' command line: none but `--help`; every setting is an environment variable.

`answer_arguments(argv, ...)` runs first in a service's `main()`, before its settings are read:
`-h`/`--help` prints what the program is and the variables its settings class reads, then exits
0 (so that `docker run IMAGE meshtrust-issuer --help` answers instead of starting a service that
waits for NATS); any other argument prints the same text on stderr and exits 2, as argparse
does, rather than being ignored.

Deliberately not here: reading the environment (the settings class does that, once, after this)
or parsing options: a service that took both flags and variables would have two sources of
truth.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic_settings import BaseSettings


def variables(settings: type[BaseSettings]) -> list[tuple[str, str]]:
    """(variable, description) for every field of `settings`; a group of settings (a field
    whose type is itself a settings class) is one line, `PREFIX*`."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseSettings):
            group_prefix = str(group.model_config.get("env_prefix", ""))
            summary = (group.__doc__ or "").strip().split("\n")[0]
            rows.append((f"{group_prefix}*", summary or "a group: see the README's Configuration"))
            continue
        description = (field.description or "").split(". ")[0].rstrip(".")
        rows.append(((prefix + name).upper(), description))
    return rows


def usage(*, program: str, summary: str, settings: type[BaseSettings]) -> str:
    lines = [
        f"usage: {program}",
        "",
        summary.strip(),
        "",
        "No arguments: every setting is an environment variable, read once at start:",
    ]
    rows = variables(settings)
    width = max(len(variable) for variable, _ in rows)
    lines += [f"  {variable.ljust(width)}  {text}".rstrip() for variable, text in rows]
    return "\n".join(lines) + "\n"


def answer_arguments(
    argv: Sequence[str], *, program: str, summary: str, settings: type[BaseSettings]
) -> None:
    """Return if `argv` (without the program name) is empty; else print the usage and exit:
    0 for `-h`/`--help`, 2 for anything else."""
    if not argv:
        return
    text = usage(program=program, summary=summary, settings=settings)
    if list(argv) in (["-h"], ["--help"]):
        sys.stdout.write(text)
        raise SystemExit(0)
    sys.stderr.write(text + f"\n{program}: takes no arguments, got {' '.join(argv)}\n")
    raise SystemExit(2)
