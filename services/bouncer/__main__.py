"""`meshtrust-bouncer` / `python -m services.bouncer`: composition only.

Settings from the environment, logging, the bus, the Kubernetes client, the components (the
`bouncer-<cluster>` consumer and the health endpoints), supervised until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from services.bouncer.handlers import BounceRequestHandler
from services.bouncer.metrics import BouncerMetrics
from services.bouncer.reconciler import Bouncer, Deadlines
from services.bouncer.settings import BouncerSettings
from shared.bus import Bus, ConsumerSettings
from shared.bus.fleet import bouncer_consumer
from shared.k8s.config import client_from_settings
from shared.runtime import configure_logging, get_logger, supervise
from shared.runtime.health import HealthServer
from shared.runtime.memory import freeze_start_up
from shared.runtime.metrics import new_registry
from shared.runtime.usage import answer_arguments

log = get_logger(__name__)

SUMMARY = """The meshtrust bouncer (each remote cluster): restarts the pods of a PodBounceDirective,
in order, once per issuance."""


def consumer_settings(settings: BouncerSettings) -> ConsumerSettings:
    """The durable `bouncer-<cluster>` on this cluster's `bounce.requested` (docs/flow.md)."""
    spec = bouncer_consumer(settings.cluster, ack_wait=settings.ack_wait)
    return spec.consumer_settings(
        provision=settings.nats.provision,
        batch=1,  # one fetch per free slot: bounces are few and heavy
        max_in_flight=settings.max_in_flight,
        fetch_timeout=settings.fetch_timeout,
        retry_initial=settings.retry_initial,
        retry_max=settings.retry_max,
    )


async def serve(
    settings: BouncerSettings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    health: HealthServer | None = None,
) -> None:
    """Run the bouncer until `stop` is set (or SIGTERM/SIGINT); `health` serves its probes and
    metrics (tests pass one to learn its port)."""
    health = health or HealthServer(settings.health, registry=new_registry())
    async with (
        Bus.connect(settings.nats, registry=health.registry) as bus,
        client_from_settings(settings.kube) as kube,
    ):
        if settings.nats.provision:
            await bus.provision()
        bouncer = Bouncer(
            kube=kube,
            deadlines=Deadlines(
                root_cert_sync=settings.root_cert_sync_timeout,
                replicas=settings.replicas_timeout,
                rollout=settings.rollout_timeout,
                delete=settings.delete_timeout,
            ),
        )
        handler = BounceRequestHandler(
            bouncer=bouncer,
            publisher=bus,
            cluster=settings.cluster,
            source=settings.source,
            metrics=BouncerMetrics(health.registry, cluster=settings.cluster),
        )
        consumer = bus.consumer(consumer_settings(settings), handler)
        health.add_check("nats", bus.is_connected)
        log.info("bouncer starting", cluster=settings.cluster, durable=settings.durable)
        await supervise(
            [consumer, health],
            grace=settings.grace,
            stop=stop,
            handle_signals=handle_signals,
        )


def main() -> None:
    answer_arguments(
        sys.argv[1:], program="meshtrust-bouncer", summary=SUMMARY, settings=BouncerSettings
    )
    settings = BouncerSettings()  # the cluster comes from the environment
    configure_logging(settings.logging)
    freeze_start_up()
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
