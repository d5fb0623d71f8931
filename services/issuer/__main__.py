"""`meshtrust-issuer` / `python -m services.issuer`: composition only.

`serve(settings)` connects to NATS and the management cluster's API, provisions what the issuer
owns (the stream and desired-state bucket, `meshtrust-issued`, the ledger), builds the
components and supervises them until SIGTERM (or `stop`). Tests run it in-process, one call per
replica.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import Executor, ThreadPoolExecutor

from services.issuer.handlers import CsrHandler, StatusHandler
from services.issuer.issued import ISSUED_BUCKET, ISSUED_DESCRIPTION
from services.issuer.ledger import open_ledger
from services.issuer.metrics import IssuerMetrics
from services.issuer.reconciler import Declarations
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs
from shared.bus import Bucket, Bus, BusError, ConsumerSettings
from shared.bus.fleet import FleetConsumers
from shared.bus.ledger import Ledger
from shared.controller.components import ControllerComponent, PeriodicComponent, Task
from shared.events import DESIRED_BUCKET, EventType, any_cluster
from shared.k8s import EventRecorder, KubeClient, KubeError
from shared.k8s.config import client_from_settings
from shared.runtime import Component, configure_logging, get_logger, supervise
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import InFlight
from shared.runtime.errors import TransientError
from shared.runtime.health import HealthServer
from shared.runtime.memory import freeze_start_up
from shared.runtime.metrics import new_registry
from shared.runtime.usage import answer_arguments

log = get_logger(__name__)

SUMMARY = """The meshtrust issuer (management cluster): publishes the declared IssuedCertificates,
signs the remote clusters' CSRs with the CA of signingCertificateSecret, records every
signature in the ledger, mirrors remote status onto the declarations.

`meshtrust-issuer provision` instead creates or updates what the issuer owns on JetStream (the
streams, buckets, ledger and the consumers of MESHTRUST_ISSUER_CLUSTERS) and exits: run it with
the provisioner's NATS identity (docs/bus.md)."""


def compose(
    settings: IssuerSettings,
    *,
    bus: Bus,
    kube: KubeClient,
    desired: Bucket,
    issued: Bucket,
    ledger: Ledger,
    executor: Executor,
    clock: Clock = utcnow,
    health: HealthServer | None = None,
) -> list[Component]:
    """Every component of one issuer replica, wired together; the metrics go to the registry
    `health` serves (the bus's too, when it was connected with that registry)."""
    health = health or HealthServer(settings.health)
    recorder = EventRecorder(kube, component="meshtrust-issuer", instance=settings.instance)
    signing_cas = SigningCAs()
    fleet = FleetConsumers(
        bus.connection, ack_wait=settings.cluster_ack_wait, clusters=settings.clusters
    )
    declarations = Declarations(
        settings=settings,
        kube=kube,
        desired=desired,
        signing_cas=signing_cas,
        executor=executor,
        recorder=recorder,
        ensure_cluster=fleet.ensure,
        clock=clock,
    )
    in_flight = InFlight()
    metrics = IssuerMetrics(health.registry, signing_secrets=declarations.secrets)
    csr_consumer = bus.consumer(
        ConsumerSettings(
            durable=settings.csr_durable,
            filter_subjects=(any_cluster(EventType.CSR_REQUESTED),),
            accept=frozenset({EventType.CSR_REQUESTED}),
            batch=settings.csr_batch,
            max_in_flight=settings.csr_in_flight,
            fetch_timeout=settings.fetch_timeout,
            ack_wait=settings.ack_wait,
        ),
        metrics.heard_from(
            CsrHandler(
                settings=settings,
                bus=bus,
                kube=kube,
                issued=issued,
                ledger=ledger,
                executor=executor,
                signing_cas=signing_cas,
                declarations=declarations.certificates,
                in_flight=in_flight,
                clock=clock,
                metrics=metrics,
            )
        ),
    )
    status_consumer = bus.consumer(
        ConsumerSettings(
            durable=settings.status_durable,
            filter_subjects=(any_cluster(EventType.STATUS_CHANGED),),
            accept=frozenset({EventType.STATUS_CHANGED}),
            batch=settings.status_in_flight,
            max_in_flight=settings.status_in_flight,
            fetch_timeout=settings.fetch_timeout,
        ),
        metrics.heard_from(
            StatusHandler(
                settings=settings,
                kube=kube,
                recorder=recorder,
                declarations=declarations.certificates,
                in_flight=in_flight,
            )
        ),
    )
    health.add_check("informers-synced", declarations.synced)
    health.add_check("nats", bus.is_connected)
    return [
        health,
        Task("informer:issuedcertificates", declarations.certificates.run),
        Task("informer:podbouncedirectives", declarations.directives.run),
        *(
            Task(f"informer:secrets:{namespace}", secrets.run)
            for namespace, secrets in zip(
                settings.signing_namespaces or ("*",), declarations.secrets, strict=True
            )
        ),
        ControllerComponent(declarations.certificate_controller, declarations.informers),
        ControllerComponent(declarations.directive_controller, declarations.informers),
        PeriodicComponent(
            "desired-state-sweep",
            declarations.sweep,
            interval=settings.sweep_interval,
            ready=declarations.wait_synced,
        ),
        csr_consumer,
        status_consumer,
        fleet,
    ]


async def serve(
    settings: IssuerSettings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    clock: Clock = utcnow,
    health: HealthServer | None = None,
) -> None:
    """Run one issuer replica until `stop` is set (or SIGTERM/SIGINT); `health` serves its
    probes and metrics (tests pass one to learn its port)."""
    health = health or HealthServer(settings.health, registry=new_registry())
    async with (
        Bus.connect(settings.nats, registry=health.registry) as bus,
        client_from_settings(settings.kube) as kube,
    ):
        ledger = open_ledger(bus)
        if settings.nats.provision:
            await _provision(bus, ledger, settings)
        else:
            await ledger.check()
        desired = await bus.bucket(DESIRED_BUCKET)
        issued = await bus.bucket(ISSUED_BUCKET, description=ISSUED_DESCRIPTION, history=1)
        with ThreadPoolExecutor(
            max_workers=settings.signing_threads, thread_name_prefix="issuer-sign"
        ) as executor:
            components = compose(
                settings,
                bus=bus,
                kube=kube,
                desired=desired,
                issued=issued,
                ledger=ledger,
                executor=executor,
                clock=clock,
                health=health,
            )
            log.info(
                "issuer starting",
                instance=settings.instance,
                signing_namespaces=list(settings.signing_namespaces),
            )
            if not settings.signing_namespaces:
                log.warning(
                    "no signing namespaces: any Secret a declaration names may sign "
                    "(set MESHTRUST_ISSUER_SIGNING_NAMESPACES; docs/issuer.md)"
                )
            await supervise(
                components, grace=settings.grace, stop=stop, handle_signals=handle_signals
            )
    log.info("issuer stopped", instance=settings.instance)


async def _provision(bus: Bus, ledger: Ledger, settings: IssuerSettings) -> None:
    """Create or update what the issuer owns on the bus: the stream, the record stream, the
    desired-state and `meshtrust-issued` buckets, the ledger, and the consumers of the clusters
    named in the settings (idempotent)."""
    await bus.provision()
    await ledger.ensure()
    await bus.bucket(ISSUED_BUCKET, description=ISSUED_DESCRIPTION, history=1)
    fleet = FleetConsumers(bus.connection, ack_wait=settings.cluster_ack_wait)
    for cluster in settings.clusters:
        await fleet.ensure(cluster)


async def provision(settings: IssuerSettings) -> None:
    """`meshtrust-issuer provision`: provision JetStream, then exit. Run with the hub's
    provisioner credentials (docs/bus.md) where the issuer's own may not create or change
    streams (`MESHTRUST_NATS_PROVISION=false` for the issuer then)."""
    nats_settings = settings.nats.model_copy(update={"provision": True})
    async with Bus.connect(nats_settings) as bus:
        await _provision(bus, open_ledger(bus), settings)
    log.info("jetstream provisioned")


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
            asyncio.run(provision(settings))
        except (BusError, TransientError) as exc:
            log.error("cannot provision", error=str(exc), error_type=type(exc).__name__)
            return 1
        return 0
    freeze_start_up()
    try:
        asyncio.run(serve(settings))
    except (BusError, KubeError) as exc:
        log.error("issuer cannot start", error=str(exc), error_type=type(exc).__name__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
