"""`python -m services.agent` / `meshtrust-agent`: composition only.

Read the settings, configure logging, connect the bus and the Kubernetes client, build the
components (`components.build_agent`), and `supervise` them until SIGTERM. `serve` is the same
without the settings and logging steps, for in-process tests.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Callable

from services.agent.components import Agent, build_agent
from services.agent.settings import AgentSettings
from shared.bus import Bus
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.config import client_from_settings
from shared.k8s.informer import InformerSettings
from shared.runtime import configure_logging, get_logger, supervise
from shared.runtime.clock import Clock, utcnow
from shared.runtime.memory import freeze_start_up
from shared.runtime.metrics import new_registry
from shared.runtime.usage import answer_arguments

log = get_logger(__name__)


async def serve(
    settings: AgentSettings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    now: Clock = utcnow,
    rand: Callable[[], float] = random.random,
    informer_settings: InformerSettings | None = None,
    controller_backoff: BackoffPolicy | None = None,
    started: Callable[[Agent], None] | None = None,
) -> None:
    """Connect, build and run the agent until `stop` (or a signal); closes what it opened."""
    registry = new_registry()
    async with (
        Bus.connect(settings.nats, registry=registry) as bus,
        client_from_settings(settings.kube) as kube,
    ):
        if settings.nats.provision:
            await bus.provision()
        agent = build_agent(
            settings,
            bus=bus,
            kube=kube,
            now=now,
            rand=rand,
            informer_settings=informer_settings,
            controller_backoff=controller_backoff,
            registry=registry,
        )
        if started is not None:
            started(agent)
        log.info("agent starting", cluster=settings.cluster, namespaces=settings.namespaces)
        await supervise(
            agent.components, grace=settings.grace, stop=stop, handle_signals=handle_signals
        )


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
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
