"""What kube-controller-manager and a kubelet would do, reduced to what tests observe.

One level-triggered loop (`Controllers.run`): every store write marks the world dirty, and a
pass reconciles everything, in this order:
- namespace lifecycle and CRD cleanup (`namespaces`);
- garbage collection (`garbage`);
- Deployment -> ReplicaSets and status (`deployments`);
- ReplicaSet -> Pods and status (`replicasets`);
- a scheduler and kubelet (`kubelet`).
Passes are cheap at test sizes (tens to hundreds of objects).  Not emulated: scheduling
decisions, container restarts, probes, minReadySeconds, maxSurge arithmetic.
"""

from __future__ import annotations

import asyncio
import time

from devstack.kubeapi.operations import Operations
from devstack.kubeapi.store import Event

from .base import Kit, log
from .deployments import reconcile_deployments
from .garbage import OwnerGraph, collect_garbage
from .kubelet import Kubelet
from .namespaces import CRDS, NAMESPACES, reconcile_crds, reconcile_namespaces
from .replicasets import reconcile_replicasets

__all__ = ["Controllers"]

RETRY_DELAY = 0.1  # seconds before a pass retries writes that failed (conflicts, races)

WORKLOAD_KEYS = frozenset({"/pods", "apps/deployments", "apps/replicasets"})
"""The kinds the workload controllers (Deployment, ReplicaSet, kubelet) read."""
CONTROLLED_KEYS = WORKLOAD_KEYS | {NAMESPACES, CRDS}
"""The kinds the controllers act on; of the rest, only ownership and deletion concern them."""


def _concerns_controllers(ev: Event) -> bool:
    if ev.key in CONTROLLED_KEYS or ev.type == "DELETED":  # a deletion: its dependents (GC)
        return True
    for obj in (ev.obj, ev.old):
        md = (obj or {}).get("metadata") or {}
        if md.get("ownerReferences") or md.get("deletionTimestamp"):
            return True
    return False


class Controllers:
    def __init__(
        self, ops: Operations, *, pod_ready_delay: float, pod_termination_delay: float | None
    ) -> None:
        self.ops = ops
        self._kit = Kit(ops)
        self._kubelet = Kubelet(
            self._kit, pod_ready_delay=pod_ready_delay, pod_termination_delay=pod_termination_delay
        )
        self._dirty = asyncio.Event()
        self._workload_due: float | None = None
        """When (monotonic) the kubelet's next timer is due, if one is."""
        self._workloads_dirty = True
        """Whether the workload controllers have anything to look at: a workload changed, or a
        timer (a Pod turning Ready, a retry) is due. The other writes (say, a Secret's owner
        going) need only the namespace, CRD and garbage collectors."""
        self._owners = OwnerGraph()
        ops.store.listeners.append(self._on_write)

    def _on_write(self, ev: Event) -> None:
        """Wake the controllers for writes that can give them work, not for every write: a pass
        runs on the loop that serves the requests."""
        self._owners.observe(ev)
        if _concerns_controllers(ev):
            self._dirty.set()
            if ev.key in WORKLOAD_KEYS:
                self._workloads_dirty = True

    async def run(self) -> None:
        """Reconcile until cancelled; a pass that fails is logged and retried on the next write."""
        self._dirty.set()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            due: float | None = None
            try:
                due = self.reconcile()
            except Exception:
                log.exception("controller pass failed")
                self._workloads_dirty = True
                due = 0.5
            if due is not None:
                try:
                    # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation
                    # that races with the inner wait finishing, which would hang shutdown
                    async with asyncio.timeout(max(due, 0.001)):
                        await self._dirty.wait()
                except TimeoutError:
                    self._workloads_dirty = True
                    self._dirty.set()

    def reconcile(self) -> float | None:
        """One pass over everything; returns seconds until a timer is due, if any."""
        kit = self._kit
        kit.retry = False
        reconcile_namespaces(kit)
        reconcile_crds(kit)
        collect_garbage(kit, self._owners)
        now = time.monotonic()
        if self._workloads_dirty or (self._workload_due is not None and now >= self._workload_due):
            self._workloads_dirty = False
            reconcile_deployments(kit)
            reconcile_replicasets(kit)
            wait = self._kubelet.reconcile()
            self._workload_due = None if wait is None else now + wait
        due = None if self._workload_due is None else max(0.0, self._workload_due - now)
        if kit.retry:
            self._workloads_dirty = True  # the retry may be any controller's
            due = RETRY_DELAY if due is None else min(due, RETRY_DELAY)
        return due
