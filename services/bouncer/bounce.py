"""The bounce procedure over one PodBounceDirective and one issuance: level-based, resumable.

`Bouncer.bounce(...)` loops: read the directive (and the IssuedCertificate, to refuse a
superseded issuance), ask `policies.next_step` what the record in `status` calls for, do that one
step, and look again. Steps:

- `Start`: the record is of another issuance; reset it to this one, empty.
- `Bounce(i)`: wait for `rootCertSync` if set; delete the selector's pods (or restart their
  Deployments); record the pods in `status.podsBounced[i]` *before* waiting for replacements, so
  that a bouncer that dies while waiting never deletes the replacements on its next try.
- `AwaitReady(i)`: wait until `waitForReplicas` replacements are Ready (or the rollout is done).
- `Finished`: report what the record says.

Every wait watches the objects it needs (list + watch, `shared.k8s.Informer`) and has a deadline
from the settings; a deadline that passes ends the bounce with an error naming the selector and
what was missing. Failures:

- `Outcome.error`: the bounce cannot finish as things stand (deadline, missing or malformed
  directive, superseded issuance, a refused request); the caller reports it and acks.
- `TransientError`: the API server or the path to it is unwell; the caller naks and the
  redelivered request resumes from the record.

A pod whose deletion fails is retried for `delete` seconds; it is never recorded as bounced. If
it still fails the selector is not recorded at all, and the next request for the issuance
bounces the whole selector again: restarting a replacement twice is churn, leaving a pod on the
old certificate is an outage once the root changes.

Deliberately not here: deciding (policies.py), the bus (handlers.py), retries of a whole bounce
(JetStream redelivery does that), and StatefulSet-style pods that keep their names (a
replacement with a bounced pod's name does not count as a replacement; docs/bouncer.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from services.bouncer import policies
from services.bouncer.policies import AwaitReady, Bounce, Finished, Start, WaitResult
from shared.api.meta import Obj, ObjectKey
from shared.api.v1alpha2 import (
    BounceStrategy,
    IssuedCertificate,
    PodBounceDirective,
    PodBounceDirectiveStatus,
    PodSelector,
    RootCertSync,
)
from shared.events import BouncedSelector, ObjectRef
from shared.k8s.backoff import BackoffPolicy
from shared.k8s.client import KubeClient, ModelT
from shared.k8s.errors import Conflict, KubeError, NotFound, Transient
from shared.k8s.informer import Informer, InformerSettings
from shared.k8s.resources import CONFIG_MAPS, DEPLOYMENTS, PODS, SECRETS, Resource
from shared.k8s.status import update_model_status
from shared.runtime import RetryPolicy, TransientError, get_logger, retry
from shared.runtime.clock import Clock, utcnow
from shared.runtime.locks import KeyedLocks

log = get_logger(__name__)

REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")


@dataclass(frozen=True, kw_only=True, slots=True)
class Deadlines:
    """How long each wait of one selector may take, in seconds (see BouncerSettings)."""

    root_cert_sync: float
    replicas: float
    rollout: float
    delete: float
    directive: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `bounce.completed` says: the pods recorded per selector, and the error if any."""

    selectors: tuple[BouncedSelector, ...] = ()
    error: str | None = None


class _Failed(Exception):
    """The bounce stops here; `message` tells the operator (through the agent) why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(kw_only=True)
class Bouncer:
    """Bounces directives; at most one bounce per directive at a time, in this process."""

    kube: KubeClient
    deadlines: Deadlines
    informer_settings: InformerSettings = field(default_factory=InformerSettings)
    delete_backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(
            base_seconds=0.5, factor=2.0, cap_seconds=10.0, jitter=0.2
        )
    )
    """Between retries of failed pod deletions: 0.5 s doubling to 10 s."""
    status_retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=0, timeout=30.0, wait_max=2.0)
    )
    """A status write that meets a Transient error is retried for 30 s: after pods were
    deleted, giving up on the record would make a redelivery delete their replacements."""
    now: Clock = field(default=utcnow)
    _locks: KeyedLocks[ObjectKey] = field(default_factory=KeyedLocks, init=False, repr=False)

    async def bounce(
        self, *, directive: ObjectRef, issued_certificate: ObjectRef, issuance: str
    ) -> Outcome:
        """Bounce `directive` for `issuance` as far as its record says is still to do. Returns
        the outcome (with `error` when it cannot finish); raises `TransientError` when the API
        server is unwell (the caller redelivers; the record makes that resume)."""
        key = ObjectKey(directive.namespace, directive.name)
        async with self._locks.hold(key):
            run = _Run(
                self,
                key=key,
                certificate=ObjectKey(issued_certificate.namespace, issued_certificate.name),
                issuance=issuance,
            )
            try:
                return await run.execute()
            except _Failed as exc:
                log.warning("bounce.failed", error=exc.message)
                return Outcome(selectors=run.recorded(), error=exc.message)
            except (Transient, Conflict) as exc:
                raise TransientError(
                    f"Kubernetes: {exc.message}", retry_after=exc.retry_after
                ) from exc
            except KubeError as exc:
                message = f"Kubernetes refused a request of the bouncer: {exc.message}"
                log.warning("bounce.refused", error=message, code=exc.code)
                return Outcome(selectors=run.recorded(), error=message)


class _Run:
    """One call of `Bouncer.bounce`: the loop over steps, and the I/O of each step."""

    def __init__(
        self, bouncer: Bouncer, *, key: ObjectKey, certificate: ObjectKey, issuance: str
    ) -> None:
        self._b = bouncer
        self._kube = bouncer.kube
        self._key = key
        self._certificate = certificate
        self._issuance = issuance
        self._directive: PodBounceDirective | None = None

    def recorded(self) -> tuple[BouncedSelector, ...]:
        if self._directive is None:
            return ()
        return policies.bounced_selectors(self._directive.status, issuance=self._issuance)

    async def execute(self) -> Outcome:
        confirmed = -1
        while True:
            directive = await self._read_directive()
            if problems := policies.spec_problems(directive.spec):
                raise _Failed(
                    f"PodBounceDirective {self._key} is malformed: " + "; ".join(problems)
                )
            await self._check_issuance()
            step = policies.next_step(
                directive.spec, directive.status, issuance=self._issuance, confirmed=confirmed
            )
            selectors = directive.spec.pods_to_bounce
            if isinstance(step, Start):
                log.info("bounce.started", selectors=len(selectors))
                await self._write(lambda _d: policies.started(self._issuance))
            elif isinstance(step, Bounce):
                await self._bounce(step.index, selectors[step.index])
            elif isinstance(step, AwaitReady):
                bounced = directive.status.pods_bounced[step.index].bounced_pods
                await self._await_ready(step.index, selectors[step.index], bounced)
                confirmed = step.index
            else:
                assert isinstance(step, Finished)
                log.info("bounce.finished", selectors=len(selectors))
                return Outcome(selectors=self.recorded())

    # -- reading ------------------------------------------------------------------------------

    async def _read_directive(self) -> PodBounceDirective:
        """The directive, read live; one not found yet is waited for, `deadlines.directive`."""
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self._b.deadlines.directive, 0.2
        while (directive := await self._read_or_none(PodBounceDirective, self._key)) is None:
            if loop.time() + delay > deadline:
                raise _Failed(
                    f"PodBounceDirective {self._key} not found "
                    f"(waited {self._b.deadlines.directive:g} s for it)"
                )
            log.info("bounce.waiting_for_directive", retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
        self._directive = directive
        return directive

    async def _read(self, model: type[ModelT], key: ObjectKey) -> ModelT:
        """One of our objects, read live; `_Failed` naming it when it is missing or malformed."""
        if (found := await self._read_or_none(model, key)) is None:
            raise _Failed(f"{model.__name__} {key} not found")
        return found

    async def _read_or_none(self, model: type[ModelT], key: ObjectKey) -> ModelT | None:
        try:
            return await self._kube.get_model(model, key.name, namespace=key.namespace)
        except NotFound:
            return None
        except ValidationError as exc:
            raise _Failed(
                f"{model.__name__} {key} is malformed: {_validation_summary(exc)}"
            ) from None

    async def _check_issuance(self) -> None:
        certificate = await self._read(IssuedCertificate, self._certificate)
        reason = policies.superseded(
            current=certificate.status.issuance_id, requested=self._issuance
        )
        if reason is not None:
            raise _Failed(f"IssuedCertificate {self._certificate}: {reason}")

    # -- writing the record -------------------------------------------------------------------

    async def _write(
        self, mutate: Callable[[PodBounceDirective], PodBounceDirectiveStatus]
    ) -> None:
        async def write() -> PodBounceDirective:
            written, _ = await update_model_status(
                self._kube,
                PodBounceDirective,
                self._key.name,
                namespace=self._key.namespace,
                mutate=mutate,
            )
            return written

        try:
            self._directive = await retry(write, on=Transient, policy=self._b.status_retry)
        except NotFound:
            raise _Failed(f"PodBounceDirective {self._key} was deleted during the bounce") from None
        except ValidationError as exc:  # (a ValueError too) the directive became unreadable
            raise _Failed(
                f"PodBounceDirective {self._key} is malformed: {_validation_summary(exc)}"
            ) from None
        except ValueError as exc:  # record_selector: someone else rewrote the record
            raise TransientError(f"the record of {self._key} changed under us: {exc}") from None

    # -- one selector -------------------------------------------------------------------------

    async def _bounce(self, index: int, selector: PodSelector) -> None:
        where = policies.describe(index, selector)
        if selector.root_cert_sync is not None:
            result = await self._wait_root_cert_sync(selector.root_cert_sync)
            if not result.ok:
                raise _Failed(
                    f"{where}: root certificate not synced after "
                    f"{self._b.deadlines.root_cert_sync:g} s: {result.detail}"
                )
        if selector.strategy is BounceStrategy.ROLLOUT_RESTART:
            pods = await self._restart(where, selector)
        else:
            pods = await self._delete(where, selector)
        await self._write(
            lambda d: policies.record_selector(
                d.status, issuance=self._issuance, index=index, pods=pods
            )
        )
        log.info("bounce.selector_bounced", selector=index, pods=pods, strategy=selector.strategy)

    async def _list_pods(self, selector: PodSelector) -> list[Obj]:
        page = await self._kube.list(
            PODS, namespace=selector.namespace, label_selector=policies.label_selector(selector)
        )
        return page.items

    async def _delete(self, where: str, selector: PodSelector) -> list[str]:
        """Delete every matching pod, retrying failures until the deadline; the names deleted.

        Each delete carries the pod's uid as a precondition, so a newer pod that took a listed
        pod's name (a StatefulSet's) is never deleted in its place.
        """
        pending = dict(policies.victims(await self._list_pods(selector)))
        deleted: list[str] = []
        errors: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._b.deadlines.delete
        failures = 0
        while True:
            for name, uid in list(pending.items()):
                try:
                    await self._kube.delete(
                        PODS, name, namespace=selector.namespace, precondition_uid=uid or None
                    )
                except (NotFound, Conflict):
                    pass  # already gone, or its name now belongs to a newer pod: bounced
                except KubeError as exc:
                    errors[name] = exc.message
                    log.warning("bounce.delete_failed", pod=name, error=exc.message)
                    continue
                deleted.append(name)
                del pending[name]
                errors.pop(name, None)
            if not pending:
                return sorted(deleted)
            delay = self._b.delete_backoff.delay(failures, rand=random.random())  # noqa: S311
            failures += 1
            if loop.time() + delay > deadline:
                failed = "; ".join(f"{name}: {errors.get(name, '?')}" for name in sorted(pending))
                raise _Failed(
                    f"{where}: could not delete {len(pending)} pods within "
                    f"{self._b.deadlines.delete:g} s ({failed}); deleted "
                    f"{', '.join(sorted(deleted)) or 'none'}. Nothing is recorded for this "
                    "selector: the next request bounces it whole."
                )
            await asyncio.sleep(delay)

    async def _deployments_of(self, where: str, namespace: str, pods: Sequence[Obj]) -> list[str]:
        """Names of the Deployments that control `pods` (through their ReplicaSets)."""
        owners: set[str] = set()
        replica_sets: dict[str, tuple[str, str] | None] = {}
        for pod in pods:
            if policies.is_terminating(pod):
                continue
            name = policies.pod_name(pod)
            controller = policies.controller_of(pod)
            if controller is None:
                raise _Failed(
                    f"{where}: RolloutRestart restarts Deployments, but pod {name} has no "
                    "controller"
                )
            if controller[0] != "ReplicaSet":
                raise _Failed(
                    f"{where}: RolloutRestart restarts Deployments, but pod {name} is "
                    f"controlled by {controller[0]} {controller[1]}"
                )
            rs_name = controller[1]
            if rs_name not in replica_sets:
                try:
                    rs = await self._kube.get(REPLICA_SETS, rs_name, namespace=namespace)
                except NotFound:
                    replica_sets[rs_name] = None  # going away with its pods; nothing to restart
                    continue
                replica_sets[rs_name] = policies.controller_of(rs)
            owner = replica_sets[rs_name]
            if owner is None:
                continue
            if owner[0] != "Deployment":
                raise _Failed(
                    f"{where}: RolloutRestart restarts Deployments, but ReplicaSet {rs_name} "
                    f"is controlled by {owner[0]} {owner[1]}"
                )
            owners.add(owner[1])
        return sorted(owners)

    async def _restart(self, where: str, selector: PodSelector) -> list[str]:
        """Restart the Deployments of the matching pods for this issuance; the pods rolled.

        The template annotation names the issuance, so patching again (a resumed bounce) is a
        no-op that rolls nothing.
        """
        pods = await self._list_pods(selector)
        for name in await self._deployments_of(where, selector.namespace, pods):
            deployment = await self._kube.get(DEPLOYMENTS, name, namespace=selector.namespace)
            if policies.template_annotation(deployment) == self._issuance:
                continue
            patch = policies.restart_patch(issuance=self._issuance, now=self._b.now().isoformat())
            await self._kube.patch_merge(DEPLOYMENTS, name, patch, namespace=selector.namespace)
            log.info("bounce.deployment_restarted", deployment=name)
        return policies.rolled_pods(pods, issuance=self._issuance)

    # -- waiting ------------------------------------------------------------------------------

    async def _await_ready(self, index: int, selector: PodSelector, bounced: Sequence[str]) -> None:
        where = policies.describe(index, selector)
        wanted = selector.wait_for_replicas
        ns = selector.namespace
        labels = policies.label_selector(selector)
        if selector.strategy is BounceStrategy.ROLLOUT_RESTART:
            names = await self._deployments_of(where, ns, await self._list_pods(selector))
            if not names and wanted == 0:
                return
            pods = self._informer(PODS, ns, label_selector=labels)
            deployments = self._informer(DEPLOYMENTS, ns)

            def rolled_out() -> WaitResult:
                rollouts = [
                    policies.rollout_complete(
                        deployments.get(ObjectKey(ns, name)), name=name, issuance=self._issuance
                    )
                    for name in names
                ]
                fresh = policies.restarted_ready(
                    pods.items(), issuance=self._issuance, wanted=wanted
                )
                return policies.all_of([*rollouts, fresh])

            timeout = self._b.deadlines.rollout
            result = await self._watch_until([pods, deployments], rolled_out, within=timeout)
        else:
            if wanted == 0:
                return
            pods = self._informer(PODS, ns, label_selector=labels)

            def replaced() -> WaitResult:
                return policies.ready_replacements(pods.items(), bounced=bounced, wanted=wanted)

            timeout = self._b.deadlines.replicas
            result = await self._watch_until([pods], replaced, within=timeout)
        if not result.ok:
            raise _Failed(f"{where}: not ready after {timeout:g} s: {result.detail}")
        log.info("bounce.selector_ready", selector=index, detail=result.detail)

    async def _wait_root_cert_sync(self, sync: RootCertSync) -> WaitResult:
        s, c = sync.secret_ref, sync.config_map_ref
        secrets = self._informer(SECRETS, s.namespace, field_selector=f"metadata.name={s.name}")
        maps = self._informer(CONFIG_MAPS, c.namespace, field_selector=f"metadata.name={c.name}")

        def synced() -> WaitResult:
            return policies.root_cert_synced(
                sync,
                secret=secrets.get(ObjectKey(s.namespace, s.name)),
                config_map=maps.get(ObjectKey(c.namespace, c.name)),
            )

        result = await self._watch_until(
            [secrets, maps], synced, within=self._b.deadlines.root_cert_sync
        )
        if result.ok:
            log.info("bounce.root_cert_synced", config_map=f"{c.namespace}/{c.name}")
        return result

    def _informer(
        self,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Informer:
        return Informer(
            self._kube,
            resource,
            namespace=namespace,
            label_selector=label_selector or None,
            field_selector=field_selector,
            settings=self._b.informer_settings,
        )

    async def _watch_until(
        self, informers: Sequence[Informer], evaluate: Callable[[], WaitResult], *, within: float
    ) -> WaitResult:
        """Watch `informers` and re-evaluate on every change until `evaluate()` holds or
        `within` seconds pass; the last answer. The watches end with this call."""
        changed = asyncio.Event()
        for informer in informers:
            informer.add_handler(lambda _event: changed.set())
        last: WaitResult | None = None
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(informer.run(), name=f"bouncer:watch:{informer.resource.plural}")
                for informer in informers
            ]
            try:
                async with asyncio.timeout(within):
                    for informer in informers:
                        await informer.wait_synced()
                    while True:
                        changed.clear()
                        last = evaluate()
                        if last.ok:
                            break
                        await changed.wait()
            except TimeoutError:
                pass
            finally:
                for task in tasks:
                    task.cancel()
        if last is None:
            unread = [i.resource.plural for i in informers if not i.has_synced]
            return WaitResult(False, f"could not list {', '.join(unread)} (see the bouncer's log)")
        return last


def _validation_summary(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()[:5]
    ]
    return "; ".join(parts)
