"""`python -m services.agent` / `meshtrust-agent`: the entry point only.

Read the settings, configure logging, then `app.serve` (connect, build, supervise until SIGTERM).
Deliberately nothing else: the wiring is `app.py`.
"""

from __future__ import annotations

import asyncio
import sys

from services.agent import app
from services.agent.settings import AgentSettings
from shared.runtime import configure_logging
from shared.runtime.memory import freeze_start_up
from shared.runtime.usage import answer_arguments

SUMMARY = """The meshtrust agent (each remote cluster): runs the IssuedCertificate state machine,
makes each key and CSR in this cluster, installs the signed certificate (Istio's cacerts) after
checking it against the pinned trust bundle, renews before expiry."""


def main() -> None:
    answer_arguments(
        sys.argv[1:], program="meshtrust-agent", summary=SUMMARY, settings=AgentSettings
    )
    settings = AgentSettings()  # the cluster comes from the environment
    configure_logging(settings.logging)
    freeze_start_up()
    asyncio.run(app.serve(settings))


if __name__ == "__main__":
    main()
