"""Wiring: the agent's informers, controllers, KV watch, bus consumer and health server, as
`Component`s for `shared.runtime.supervise`, built from settings and two open clients; `serve`
opens the clients, builds, and supervises until SIGTERM (or `stop`).

`build_agent` only constructs, one small builder per part; nothing runs until `supervise` runs
the components. The clock and the randomness are parameters so that tests can inject them.

Deliberately not here: reading settings and configuring logging (`__main__.py`), and any
decision (`reconciler.py`, `desired.py`, `handlers.py`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from services.agent.desired import DesiredState
from services.agent.handlers import Handlers
from services.agent.metrics import AgentMetrics
from services.agent.objects import MANAGED_SELECTOR, AgentObjects, key_secret_name, owner_of
from services.agent.policies import Timing
from services.agent.reconciler import Reconciler
from services.agent.reporting import Reporter
from services.agent.settings import AgentSettings
from services.agent.trust import TrustBundle
from shared.api.meta import Obj, ObjectKey
from shared.bus import Bus
from shared.bus.fleet import agent_consumer, desired_consumer_config
from shared.controller.components import ControllerComponent, PeriodicComponent, Task
from shared.events import DESIRED_BUCKET, DesiredKind
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient
from shared.k8s.config import client_from_settings
from shared.k8s.controller import Controller, ControllerSettings
from shared.k8s.events import EventRecorder
from shared.k8s.informer import EventType as ChangeType
from shared.k8s.informer import (
    Informer,
    InformerEvent,
    InformerSettings,
    cached_in,
    unless_status_only,
    version_of,
)
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, SECRETS, Resource
from shared.runtime import Component, get_logger, supervise
from shared.runtime.clock import Clock, utcnow
from shared.runtime.health import HealthServer
from shared.runtime.metrics import CollectorRegistry, new_registry

log = get_logger(__name__)

TRUST_REFRESH_SECONDS = 30.0
"""How often readiness re-reads the trust bundle ConfigMap (one small GET)."""


@dataclass
class Agent:
    """Everything the agent runs; `components` in the order they are started."""

    settings: AgentSettings
    reconciler: Reconciler
    desired: DesiredState
    controller: Controller
    applier: Controller
    health: HealthServer
    informers: list[Informer] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    trust: TrustBundle | None = None
    reporter: Reporter | None = None

    def ready(self) -> bool:
        return (
            self.desired.synced.is_set()
            and all(i.has_synced for i in self.informers)
            and (self.trust is None or self.trust.has_loaded)
        )


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


@dataclass(frozen=True, slots=True)
class _Informers:
    """One informer per watched namespace (or one for all) of each kind the agent watches."""

    ic: list[Informer]
    pbd: list[Informer]
    secrets: list[Informer]

    @property
    def all(self) -> list[Informer]:
        return [*self.ic, *self.pbd, *self.secrets]


def build_agent(
    settings: AgentSettings,
    *,
    bus: Bus,
    kube: KubeClient,
    now: Clock = utcnow,
    rand: Callable[[], float] = random.random,
    informer_settings: InformerSettings | None = None,
    controller_backoff: BackoffPolicy | None = None,
    registry: CollectorRegistry | None = None,
) -> Agent:
    """The agent's components for one cluster, on open clients; its metrics go to `registry`
    (the bus's consumer metrics too, when the bus was connected with it), served at /metrics."""
    registry = registry if registry is not None else new_registry()
    objects = AgentObjects(kube)
    trust = TrustBundle(kube, ref=settings.trust_bundle)
    informers = _informers(kube, settings, informer_settings)
    handoff = Handoff(informers.ic)
    recorder = EventRecorder(kube, component="meshtrust-agent", instance=settings.instance)
    reconciler = Reconciler(
        cluster=settings.cluster,
        source=settings.source,
        objects=objects,
        bus=bus,
        recorder=recorder,
        timing=_timing(settings),
        now=now,
        rand=rand,
        cached=handoff.cached,
        trust=trust,
        metrics=AgentMetrics(registry, cluster=settings.cluster, informers=informers.ic),
    )
    controller_settings = ControllerSettings(
        workers=settings.workers, backoff=controller_backoff or BackoffPolicy()
    )
    controller = _state_machine(reconciler, informers, handoff, controller_settings)
    desired = _desired_state(settings, objects, recorder, reconciler, informers, handoff)
    applier = _applier(desired, informers, controller_settings)
    agent = Agent(
        settings=settings,
        reconciler=reconciler,
        desired=desired,
        controller=controller,
        applier=applier,
        health=_health(settings, registry, bus, desired, informers.all, trust),
        informers=informers.all,
        trust=trust,
        reporter=_reporter(settings, bus, informers, now),
    )
    handlers = Handlers(
        objects=objects, informers=informers.ic, requeue=controller.queue.add, now=now, trust=trust
    )
    agent.components = _components(agent, informers, bus, handlers, trust)
    return agent


def _reporter(settings: AgentSettings, bus: Bus, informers: _Informers, now: Clock) -> Reporter:
    return Reporter(
        bus,
        informers.ic,
        cluster=settings.cluster,
        source=settings.source,
        interval=settings.report_interval,
        clock=now,
    )


def _timing(settings: AgentSettings) -> Timing:
    return Timing(
        resend_after=settings.resend_after,
        failure_backoff_initial=settings.failure_backoff_initial,
        failure_backoff_max=settings.failure_backoff_max,
        renewal_jitter=settings.renewal_jitter,
        max_requeue=settings.max_requeue,
    )


def _informers(
    kube: KubeClient, settings: AgentSettings, informer_settings: InformerSettings | None
) -> _Informers:
    scopes: list[str | None] = list(settings.namespaces) or [None]

    def of(resource: Resource, label_selector: str | None = None) -> list[Informer]:
        return [
            Informer(
                kube,
                resource,
                namespace=namespace,
                label_selector=label_selector,
                settings=informer_settings,
            )
            for namespace in scopes
        ]

    return _Informers(
        ic=of(ISSUED_CERTIFICATES),
        pbd=of(POD_BOUNCE_DIRECTIVES),
        secrets=of(SECRETS, label_selector=MANAGED_SELECTOR),
    )


def _state_machine(
    reconciler: Reconciler,
    informers: _Informers,
    handoff: Handoff,
    settings: ControllerSettings,
) -> Controller:
    """The IssuedCertificate controller: woken by its objects and by our Secrets."""
    controller = Controller(
        name="issuedcertificates", reconcile=reconciler.reconcile, settings=settings
    )
    handoff.queue = controller.queue.add
    for informer in informers.ic:
        # The reconciler writes status once per pass and decides from what it reads, never
        # from the event: its own status writes would wake it for a full pass each.
        controller.watch(informer, map_to=handoff.map_event)
    for informer in informers.secrets:
        controller.watch(informer, map_to=_secret_owner)
    return controller


def _desired_state(
    settings: AgentSettings,
    objects: AgentObjects,
    recorder: EventRecorder,
    reconciler: Reconciler,
    informers: _Informers,
    handoff: Handoff,
) -> DesiredState:
    return DesiredState(
        cluster=settings.cluster,
        objects=objects,
        recorder=recorder,
        informers={
            DesiredKind.ISSUED_CERTIFICATE: informers.ic,
            DesiredKind.POD_BOUNCE_DIRECTIVE: informers.pbd,
        },
        namespaces=settings.namespaces,
        created=handoff.created,
        refused=reconciler.report_refused,
    )


def _applier(
    desired: DesiredState, informers: _Informers, settings: ControllerSettings
) -> Controller:
    """The desired-state controller: woken by the KV watch and by drift of managed objects."""
    applier = Controller(name="desired", reconcile=desired.reconcile, settings=settings)
    desired.enqueue = applier.queue.add
    for informer in informers.ic:
        applier.watch(informer, map_to=desired.mapper(DesiredKind.ISSUED_CERTIFICATE))
    for informer in informers.pbd:
        applier.watch(informer, map_to=desired.mapper(DesiredKind.POD_BOUNCE_DIRECTIVE))
    return applier


def _health(
    settings: AgentSettings,
    registry: CollectorRegistry,
    bus: Bus,
    desired: DesiredState,
    informers: Sequence[Informer],
    trust: TrustBundle,
) -> HealthServer:
    health = HealthServer(settings.health, registry=registry)
    health.add_check("kubernetes-caches", lambda: all(i.has_synced for i in informers))
    health.add_check("desired-state", desired.synced.is_set)
    health.add_check("nats", bus.is_connected)
    health.add_check("trust-bundle", lambda: trust.has_loaded)
    return health


def _components(
    agent: Agent, informers: _Informers, bus: Bus, handlers: Handlers, trust: TrustBundle
) -> list[Component]:
    """What `supervise` runs, in the order it starts them."""
    settings = agent.settings
    cluster = settings.cluster
    consumer = bus.consumer(
        agent_consumer(cluster).consumer_settings(
            provision=settings.nats.provision,
            batch=settings.max_in_flight,
            max_in_flight=settings.max_in_flight,
            fetch_timeout=settings.fetch_timeout,
        ),
        handlers,
    )

    async def watch_desired() -> None:
        bucket = await bus.bucket(DESIRED_BUCKET, feed=desired_consumer_config(cluster))
        await agent.desired.watch(bucket, poll=settings.fetch_timeout)

    async def watch_trust() -> None:
        # Readiness only: every certificate.issued reads the bundle fresh anyway.
        while True:
            await trust.refresh()
            await asyncio.sleep(TRUST_REFRESH_SECONDS)

    return [
        agent.health,
        *(Task(f"informer:{i.resource.plural}:{n}", i.run) for n, i in enumerate(informers.all)),
        Task("desired-state-watch", watch_desired),
        Task("trust-bundle", watch_trust),
        ControllerComponent(agent.controller, [*informers.ic, *informers.secrets]),
        ControllerComponent(agent.applier, [*informers.ic, *informers.pbd]),
        consumer,
        *_reporting(agent, informers),
    ]


def _reporting(agent: Agent, informers: _Informers) -> list[Component]:
    """The periodic report, once the IssuedCertificates are cached (a report of an empty
    cache would say the cluster holds nothing)."""
    if agent.reporter is None:
        return []

    async def synced() -> None:
        for informer in informers.ic:
            await informer.wait_synced()

    return [
        PeriodicComponent(
            "cluster-report",
            agent.reporter.report,
            interval=agent.settings.report_interval,
            ready=synced,
        )
    ]


class Handoff:
    """IssuedCertificates the applier creates go to the reconciler at once, not a watch event
    later: on the issuance path, that event was a hop of its own (the create's answer reaches
    the agent before the informer's copy does).

    `created` queues the new object's key, unless the informer has that very version already
    (its event queued the key). `map_event` is the reconciler's `map_to`: the informer's ADDED
    of a version handed over is dropped (the reconciler has it; a second pass would only read
    three objects again), and any other event counts as `unless_status_only` says. Until the
    informer catches up, `cached` answers with the created object, for the pass's early read.
    """

    def __init__(self, informers: Sequence[Informer]) -> None:
        self._informers = informers
        self._handed: dict[ObjectKey, Obj] = {}
        self.queue: Callable[[ObjectKey], None] = lambda _key: None

    def created(self, kind: DesiredKind, obj: Obj) -> None:
        if kind is not DesiredKind.ISSUED_CERTIFICATE:
            return
        key = ObjectKey.of(obj)
        cached = cached_in(self._informers, key)
        if cached is not None and version_of(cached) == version_of(obj):
            return  # the informer's event was first: the key is queued already
        self._handed[key] = obj
        self.queue(key)

    def map_event(self, event: InformerEvent) -> list[ObjectKey]:
        handed = self._handed.pop(event.key, None)
        if (
            handed is not None
            and event.type is ChangeType.ADDED
            and version_of(event.object) == version_of(handed)
        ):
            return []
        return unless_status_only(event)

    def cached(self, key: ObjectKey) -> Obj | None:
        return cached_in(self._informers, key) or self._handed.get(key)


def _secret_owner(event: InformerEvent) -> Iterable[ObjectKey]:
    """The IssuedCertificate a Secret of ours belongs to, except for the agent's own
    bookkeeping on a key Secret: its creation (the pass that made it carries on, and returns
    its own re-send timer) and `mark_sent` (annotations only). Each of those woke a full pass
    (three API reads) while the issuer was signing. A key Secret deleted, or its data changed,
    still counts; so does every change of an issued Secret."""
    owner = owner_of(event.object)
    if owner is None:
        return []
    if event.key.name == key_secret_name(owner.name) and (
        event.type is ChangeType.ADDED
        or (
            event.type is ChangeType.MODIFIED
            and event.old is not None
            and event.old.get("data") == event.object.get("data")
        )
    ):
        return []
    return [owner]
