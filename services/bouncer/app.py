"""The bouncer's wiring: the `bouncer-<cluster>` consumer and the health endpoints, built from
its settings, a bus and a Kubernetes client, and supervised until SIGTERM (`serve`).

Deliberately not here: reading settings from the environment and logging (`__main__.py`), and
the bounce itself (`bounce.py`).
"""

from __future__ import annotations

import asyncio

from services.bouncer.bounce import Bouncer, Deadlines
from services.bouncer.handlers import BounceRequestHandler
from services.bouncer.metrics import BouncerMetrics
from services.bouncer.settings import BouncerSettings
from shared.bus import Bus, ConsumerSettings
from shared.bus.fleet import bouncer_consumer
from shared.k8s import KubeClient
from shared.k8s.config import client_from_settings
from shared.runtime import get_logger, supervise
from shared.runtime.health import HealthServer
from shared.runtime.metrics import new_registry

__all__ = ["consumer_settings", "serve"]

log = get_logger(__name__)


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


def handler(
    settings: BouncerSettings, *, bus: Bus, kube: KubeClient, health: HealthServer
) -> BounceRequestHandler:
    """The `bounce.requested` handler over a `Bouncer` with the settings' deadlines."""
    deadlines = Deadlines(
        root_cert_sync=settings.root_cert_sync_timeout,
        replicas=settings.replicas_timeout,
        rollout=settings.rollout_timeout,
        delete=settings.delete_timeout,
        directive=settings.directive_timeout,
    )
    return BounceRequestHandler(
        bouncer=Bouncer(kube=kube, deadlines=deadlines),
        publisher=bus,
        cluster=settings.cluster,
        source=settings.source,
        metrics=BouncerMetrics(health.registry, cluster=settings.cluster),
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
        consumer = bus.consumer(
            consumer_settings(settings), handler(settings, bus=bus, kube=kube, health=health)
        )
        health.add_check("nats", bus.is_connected)
        log.info("bouncer starting", cluster=settings.cluster, durable=settings.durable)
        await supervise(
            [consumer, health], grace=settings.grace, stop=stop, handle_signals=handle_signals
        )
