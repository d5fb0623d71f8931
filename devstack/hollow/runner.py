"""One hollow process: the agents and bouncers of several clusters, in one event loop.

Each cluster's agent and bouncer are the production ones, built and run by
`services.agent.app.serve` and `services.bouncer.app.serve`: each opens its own NATS connection
as its own identity (`agent-<cluster>`, `bouncer-<cluster>`, with their seeds and inbox
prefixes) and its own kubernetes-asyncio client, with its own ServiceAccount's kubeconfig, to
its own cluster's endpoint. Only the process is shared: nothing is passed between clusters.

What a pod restart would do for a crashed service, `_keep` does here: a cluster's service that
raises is logged and started again after a backoff, the other clusters carry on. The process's
own health server (port 0, logged as the services log theirs, `devstack.processes.wait_ready`)
is ready once every agent is ready and every bouncer's checks pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from devstack.natsconfig import inbox_prefix
from services.agent import app as agent_app
from services.agent.app import Agent
from services.agent.settings import AgentSettings
from services.bouncer import app as bouncer_app
from services.bouncer.settings import BouncerSettings
from shared.bus import NatsSettings
from shared.k8s.config import KubeSettings
from shared.runtime import get_logger
from shared.runtime.health import HealthServer, HealthSettings
from shared.runtime.metrics import new_registry

log = get_logger(__name__)

AGENT_NAMESPACES = ("istio-system",)
"""Where the agent's RoleBindings are (deploy/remote/agent-rbac.yaml), as in the devstack."""
LOOP_WITHIN = 120.0
"""Seconds each service's health server lets the shared loop go without a beat before it logs
where the loop is stuck: hundreds of clusters share the loop, so a beat can be late."""
RESTART_INITIAL = 1.0
RESTART_MAX = 30.0


@dataclass(frozen=True)
class HollowConfig:
    """Where a hollow process finds its clusters' identities (a `HollowFleet`'s root)."""

    root: Path
    nats_url: str
    clusters: tuple[str, ...]

    def nats(self, user: str) -> NatsSettings:
        return NatsSettings(
            urls=(self.nats_url,),
            name=user,
            nkeys_seed_file=self.root / "nats" / "credentials" / f"{user}.nk",
            inbox_prefix=inbox_prefix(user),
            provision=False,  # the clusters' durables are the hub's (docs/bus.md)
        )

    def kube(self, service: str, cluster: str) -> KubeSettings:
        return KubeSettings(kubeconfig=self.root / f"{cluster}-{service}.kubeconfig")


def _health() -> HealthSettings:
    return HealthSettings(host="127.0.0.1", port=0, loop_within=LOOP_WITHIN)


def agent_settings(config: HollowConfig, cluster: str) -> AgentSettings:
    return AgentSettings(
        cluster=cluster,
        instance=f"agent-{cluster}-0",
        namespaces=AGENT_NAMESPACES,
        nats=config.nats(f"agent-{cluster}"),
        kube=config.kube("agent", cluster),
        health=_health(),
    )


def bouncer_settings(config: HollowConfig, cluster: str) -> BouncerSettings:
    return BouncerSettings(
        cluster=cluster,
        instance=f"bouncer-{cluster}-0",
        nats=config.nats(f"bouncer-{cluster}"),
        kube=config.kube("bouncer", cluster),
        health=_health(),
    )


class Hollow:
    """The clusters of one hollow process, each agent and bouncer kept running until `stop`
    (a `shared.runtime.Component`)."""

    name = "hollow-clusters"

    def __init__(self, config: HollowConfig) -> None:
        self.config = config
        self.agents: dict[str, Agent] = {}
        self.bouncers: dict[str, HealthServer] = {}

    def ready(self) -> bool:
        clusters = self.config.clusters
        return all(c in self.agents and self.agents[c].ready() for c in clusters) and all(
            c in self.bouncers
            and self.bouncers[c].started.is_set()
            and not self.bouncers[c].failing()
            for c in clusters
        )

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            for cluster in self.config.clusters:
                group.create_task(_keep(f"agent-{cluster}", self._agent(cluster, stop), stop))
                group.create_task(_keep(f"bouncer-{cluster}", self._bouncer(cluster, stop), stop))

    def _agent(self, cluster: str, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        settings = agent_settings(self.config, cluster)

        def started(agent: Agent) -> None:
            self.agents[cluster] = agent

        return lambda: agent_app.serve(settings, stop=stop, handle_signals=False, started=started)

    def _bouncer(self, cluster: str, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
        settings = bouncer_settings(self.config, cluster)

        def serve() -> Awaitable[None]:
            health = HealthServer(settings.health, registry=new_registry())
            self.bouncers[cluster] = health
            return bouncer_app.serve(settings, stop=stop, handle_signals=False, health=health)

        return serve


async def _keep(name: str, serve: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run `serve` until `stop`; started again, after a doubling backoff, when it fails."""
    delay = RESTART_INITIAL
    while not stop.is_set():
        try:
            await serve()
        except Exception:
            log.exception("hollow service failed; restarting it", service=name, after=delay)
        else:
            if stop.is_set():
                return
            log.warning("hollow service returned; restarting it", service=name, after=delay)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, RESTART_MAX)
