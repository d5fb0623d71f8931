"""The issuer's wiring: one replica's components, built from its settings, a bus and a client.

`serve(settings)` connects to NATS and the management cluster's API, provisions what the issuer
owns (the stream and desired-state bucket, `meshtrust-issued`, the ledger), builds the
components (`compose`) and supervises them until SIGTERM (or `stop`). Tests run it in-process,
one call per replica. `provision(settings)` is `meshtrust-issuer provision`.

Deliberately not here: reading settings from the environment and logging (`__main__.py`), and
any decision (handlers, reconciler, policies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from services.issuer.handlers import CsrHandler, StatusHandler
from services.issuer.heartbeats import Heartbeats
from services.issuer.issued import ISSUED_BUCKET, ISSUED_DESCRIPTION
from services.issuer.ledger import open_ledger
from services.issuer.metrics import IssuerMetrics
from services.issuer.reconciler import Declarations
from services.issuer.roots import ROOTS_BUCKET, ROOTS_DESCRIPTION
from services.issuer.rotating import RotationController
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs
from shared.bus import Bucket, Bus, ConsumerSettings, Handler
from shared.bus.completions import RECORD_STREAM
from shared.bus.fairness import FairConsumers
from shared.bus.fleet import CSR_CLUSTER_IN_FLIGHT, FleetConsumers, csr_consumer
from shared.bus.ledger import Ledger
from shared.bus.sizes import stream_sizes
from shared.controller.components import ControllerComponent, PeriodicComponent, Task
from shared.events import DESIRED_BUCKET, EventType, any_cluster
from shared.events.reports import REPORTS_BUCKET, REPORTS_DESCRIPTION
from shared.k8s import EventRecorder, KubeClient
from shared.k8s.config import client_from_settings
from shared.runtime import Component, TransientError, get_logger, supervise
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import InFlight
from shared.runtime.health import HealthServer
from shared.runtime.metrics import new_registry

__all__ = ["compose", "provision", "serve"]

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Shared:
    """What the components of one replica share, made once by `compose`."""

    settings: IssuerSettings
    bus: Bus
    kube: KubeClient
    executor: Executor
    clock: Clock
    recorder: EventRecorder
    signing_cas: SigningCAs
    """Loaded signing CAs, by Secret uid and resourceVersion: the reconciler's and the CSRs'."""


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
    reports: Bucket | None = None,
    roots: Bucket | None = None,
) -> list[Component]:
    """Every component of one issuer replica, wired together; the metrics go to the registry
    `health` serves (the bus's too, when it was connected with that registry). `reports`: the
    clusters' reports bucket (liveness; without it, only events tell a cluster is alive)."""
    health = health or HealthServer(settings.health)
    shared = _Shared(
        settings=settings,
        bus=bus,
        kube=kube,
        executor=executor,
        clock=clock,
        recorder=EventRecorder(kube, component="meshtrust-issuer", instance=settings.instance),
        signing_cas=SigningCAs(),
    )
    fleet = FleetConsumers(
        bus.connection,
        ack_wait=settings.cluster_ack_wait,
        csr_ack_wait=settings.ack_wait,
        clusters=settings.clusters,
    )
    declarations = Declarations(
        settings=settings,
        kube=kube,
        desired=desired,
        signing_cas=shared.signing_cas,
        executor=executor,
        recorder=shared.recorder,
        ensure_cluster=fleet.ensure,
        clock=clock,
    )
    metrics = _metrics(health, declarations)
    heartbeats = Heartbeats(
        settings, kube=kube, declarations=declarations.certificates, metrics=metrics, clock=clock
    )
    health.add_check("informers-synced", declarations.synced)
    health.add_check("nats", bus.is_connected)
    return [
        health,
        _stream_sizes(bus, metrics, ledger),
        *_declaration_components(declarations, settings),
        _rotations(shared, declarations, issued),
        *_consumers(shared, declarations, metrics, heartbeats, issued, ledger, fleet, roots),
        fleet,
        *_liveness(heartbeats, settings, reports),
    ]


def _metrics(health: HealthServer, declarations: Declarations) -> IssuerMetrics:
    """The issuer's metrics, the signing CAs' expiry and the rotations read when scraped."""
    return IssuerMetrics(
        health.registry,
        signing_secrets=declarations.secrets,
        rotations=declarations.rotations.informer,
    )


def _rotations(shared: _Shared, declarations: Declarations, issued: Bucket) -> Component:
    """The CertificateRotations' controller (docs/rotation.md)."""
    rotations = RotationController(
        settings=shared.settings,
        kube=shared.kube,
        rotations=declarations.rotations,
        declarations=declarations.certificates,
        registrations=declarations.registrations,
        issued=issued,
        cas=shared.signing_cas,
        executor=shared.executor,
        clock=shared.clock,
    )
    return ControllerComponent(rotations.controller, declarations.informers)


def _liveness(
    heartbeats: Heartbeats, settings: IssuerSettings, reports: Bucket | None
) -> list[Component]:
    """The clusters' reports followed, and the periodic liveness check (docs/issuer.md)."""
    if reports is None:
        heartbeats.loaded.set()
        watch: list[Component] = []
    else:
        watch = [Task("cluster-reports", lambda: heartbeats.watch(reports))]
    return [
        *watch,
        PeriodicComponent(
            "liveness-check",
            heartbeats.check,
            interval=settings.liveness_interval,
            ready=heartbeats.ready,
        ),
    ]


def _consumers(
    shared: _Shared,
    declarations: Declarations,
    metrics: IssuerMetrics,
    heartbeats: Heartbeats,
    issued: Bucket,
    ledger: Ledger,
    fleet: FleetConsumers,
    roots: Bucket | None = None,
) -> list[Component]:
    """The consumers of every cluster's `csr.requested` and `status.changed`, with their
    handlers; status reports let the CSRs being handled go first (one `InFlight`).

    CSRs are read through a durable per cluster, served in turn (`shared.bus.fairness`;
    docs/issuer.md, "Fairness"): one cluster's flood waits in the stream, not ahead of another
    cluster's CSR. `fleet` makes a cluster's durable when its first CSR rings."""
    settings, in_flight = shared.settings, InFlight()
    csr = CsrHandler(
        settings=settings,
        bus=shared.bus,
        kube=shared.kube,
        issued=issued,
        ledger=ledger,
        executor=shared.executor,
        signing_cas=shared.signing_cas,
        declarations=declarations.certificates,
        in_flight=in_flight,
        clock=shared.clock,
        metrics=metrics,
        registrations=declarations.registrations,
        rotations=declarations.rotations,
        roots=roots,
    )
    status = StatusHandler(
        settings=settings,
        kube=shared.kube,
        recorder=shared.recorder,
        declarations=declarations.certificates,
        in_flight=in_flight,
    )
    status_route = (
        EventType.STATUS_CHANGED,
        settings.status_durable,
        settings.status_in_flight,
        settings.status_in_flight,
    )
    return [
        _csr_consumers(shared.bus, heartbeats.heard_from(csr), settings, fleet),
        _hub_consumer(shared.bus, heartbeats.heard_from(status), settings, *status_route),
    ]


def _csr_consumers(
    bus: Bus, handler: Handler, settings: IssuerSettings, fleet: FleetConsumers
) -> Component:
    """Every cluster's CSRs, each cluster through its own durable, `csr_in_flight` at once."""

    def for_cluster(cluster: str) -> ConsumerSettings:
        return csr_consumer(cluster, ack_wait=settings.ack_wait).consumer_settings(
            # The hub keeps the durable (`fleet`): this side only binds to it.
            provision=False,
            batch=CSR_CLUSTER_IN_FLIGHT,
            max_in_flight=CSR_CLUSTER_IN_FLIGHT,
            fetch_timeout=settings.fetch_timeout,
        )

    fair = FairConsumers(
        bus,
        handler,
        event=EventType.CSR_REQUESTED,
        settings_for=for_cluster,
        prepare=fleet.ensure,
        in_flight=settings.csr_in_flight,
    )
    # A durable made after its cluster's CSRs were stored (they rang no doorbell then: no
    # issuer listened yet) has them waiting: serve it at once, not at the next sweep.
    fleet.on_csr_durable_created(fair.ring)
    return fair


STREAM_SIZES_INTERVAL = 15.0
"""Seconds between two reads of the streams' sizes (`meshtrust_bus_stream_*`)."""


def _stream_sizes(bus: Bus, metrics: IssuerMetrics, ledger: Ledger) -> Component:
    """Reads how full every stream is into the metrics, every `STREAM_SIZES_INTERVAL`."""
    streams = (
        bus.settings.stream,
        ledger.stream,
        RECORD_STREAM,
        f"KV_{DESIRED_BUCKET}",
        f"KV_{ISSUED_BUCKET}",
    )

    async def read() -> None:
        try:
            metrics.streams(await stream_sizes(bus.connection, streams))
        except TransientError as exc:
            log.warning("stream sizes not read", error=exc.message)

    return PeriodicComponent("stream-sizes", read, interval=STREAM_SIZES_INTERVAL)


def _declaration_components(
    declarations: Declarations, settings: IssuerSettings
) -> Iterator[Component]:
    """The declarations' informers, their two controllers and the periodic sweep."""
    yield Task("informer:issuedcertificates", declarations.certificates.run)
    yield Task("informer:podbouncedirectives", declarations.directives.run)
    yield Task("informer:clusterregistrations", declarations.registrations.informer.run)
    yield Task("informer:certificaterotations", declarations.rotations.informer.run)
    namespaces = settings.signing_namespaces or ("*",)
    for namespace, secrets in zip(namespaces, declarations.secrets, strict=True):
        yield Task(f"informer:secrets:{namespace}", secrets.run)
    yield ControllerComponent(declarations.certificate_controller, declarations.informers)
    yield ControllerComponent(declarations.directive_controller, declarations.informers)
    yield PeriodicComponent(
        "desired-state-sweep",
        declarations.sweep,
        interval=settings.sweep_interval,
        ready=declarations.wait_synced,
    )


def _hub_consumer(
    bus: Bus,
    handler: Handler,
    settings: IssuerSettings,
    event: EventType,
    durable: str,
    batch: int,
    in_flight: int,
    **more: Any,
) -> Component:
    """A consumer of one event type from every cluster (`more`: other `ConsumerSettings`)."""
    return bus.consumer(
        ConsumerSettings(
            durable=durable,
            filter_subjects=(any_cluster(event),),
            accept=frozenset({event}),
            batch=batch,
            max_in_flight=in_flight,
            fetch_timeout=settings.fetch_timeout,
            **more,
        ),
        handler,
    )


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
        reports = await bus.bucket(REPORTS_BUCKET, description=REPORTS_DESCRIPTION, history=1)
        roots = await bus.bucket(ROOTS_BUCKET, description=ROOTS_DESCRIPTION, history=1)
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
                reports=reports,
                roots=roots,
            )
            _log_start(settings)
            await supervise(
                components, grace=settings.grace, stop=stop, handle_signals=handle_signals
            )
    log.info("issuer stopped", instance=settings.instance)


def _log_start(settings: IssuerSettings) -> None:
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


async def _provision(bus: Bus, ledger: Ledger, settings: IssuerSettings) -> None:
    """Create or update what the issuer owns on the bus: the stream, the record stream, the
    desired-state, `meshtrust-issued`, `meshtrust-reports` and `meshtrust-roots` buckets, the
    ledger, and the consumers of the clusters named in the settings (idempotent)."""
    await bus.provision()
    await ledger.ensure()
    await bus.bucket(ISSUED_BUCKET, description=ISSUED_DESCRIPTION, history=1)
    await bus.bucket(REPORTS_BUCKET, description=REPORTS_DESCRIPTION, history=1)
    await bus.bucket(ROOTS_BUCKET, description=ROOTS_DESCRIPTION, history=1)
    fleet = FleetConsumers(
        bus.connection, ack_wait=settings.cluster_ack_wait, csr_ack_wait=settings.ack_wait
    )
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
