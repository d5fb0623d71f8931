"""`meshtrust-issuer` / `python -m services.issuer`: the entry point only.

Settings from the environment, logging, then `app.serve` (or `app.provision` for
`meshtrust-issuer provision`); the wiring is in `app.py`.
"""

from __future__ import annotations

import asyncio
import sys

from services.issuer import app
from services.issuer.settings import IssuerSettings
from shared.bus import BusError
from shared.k8s import KubeError
from shared.runtime import configure_logging, get_logger
from shared.runtime.errors import TransientError
from shared.runtime.memory import freeze_start_up
from shared.runtime.usage import answer_arguments

log = get_logger(__name__)

SUMMARY = """The meshtrust issuer (management cluster): publishes the declared IssuedCertificates,
signs the remote clusters' CSRs with the CA of signingCertificateSecret, records every
signature in the ledger, mirrors remote status onto the declarations.

`meshtrust-issuer provision` instead creates or updates what the issuer owns on JetStream (the
streams, buckets, ledger and the consumers of MESHTRUST_ISSUER_CLUSTERS) and exits: run it with
the provisioner's NATS identity (docs/bus.md)."""


def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean stop; 1, with the reason logged, when the bus, the API or the
    ledger cannot be reached or used at start (the supervisor restarts us).

    `meshtrust-issuer provision` provisions JetStream and exits instead of serving."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["provision"]:
        answer_arguments(
            args, program="meshtrust-issuer [provision]", summary=SUMMARY, settings=IssuerSettings
        )
    settings = IssuerSettings()
    configure_logging(settings.logging)
    if args == ["provision"]:
        try:
            asyncio.run(app.provision(settings))
        except (BusError, TransientError) as exc:
            log.error("cannot provision", error=str(exc), error_type=type(exc).__name__)
            return 1
        return 0
    freeze_start_up()
    try:
        asyncio.run(app.serve(settings))
    except (BusError, KubeError) as exc:
        log.error("issuer cannot start", error=str(exc), error_type=type(exc).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
