"""What the commands that talk to a server share: their coroutine run to an exit code.

A failure the command expects (the server unreachable, a stream missing) is one line on stderr
and exit code 1, never a traceback; anything else is a bug and surfaces as one.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any


def run_async(
    command: str, main: Coroutine[Any, Any, int], *, errors: tuple[type[Exception], ...]
) -> int:
    """`main`'s exit code, or 1 with `meshtrust <command>: <error>` on stderr for `errors`."""
    try:
        return asyncio.run(main)
    except errors as exc:
        print(f"meshtrust {command}: {exc}", file=sys.stderr)
        return 1
