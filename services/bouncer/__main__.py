"""`meshtrust-bouncer` / `python -m services.bouncer`: the entry point only.

Settings from the environment, logging, then `app.serve`; the wiring is in `app.py`.
"""

from __future__ import annotations

import asyncio
import sys

from services.bouncer import app
from services.bouncer.settings import BouncerSettings
from shared.runtime import configure_logging
from shared.runtime.memory import freeze_start_up
from shared.runtime.usage import answer_arguments

SUMMARY = """The meshtrust bouncer (each remote cluster): restarts the pods of a PodBounceDirective,
in order, once per issuance."""


def main() -> None:
    answer_arguments(
        sys.argv[1:], program="meshtrust-bouncer", summary=SUMMARY, settings=BouncerSettings
    )
    settings = BouncerSettings()  # the cluster comes from the environment
    configure_logging(settings.logging)
    freeze_start_up()
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
