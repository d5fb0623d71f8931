"""A scheduler and a kubelet: every Pending Pod is bound to `NODE` and turns Running and Ready
`pod_ready_delay` seconds after it was first seen; a Pod in its grace period is deleted
`pod_termination_delay` seconds (at most the grace period) after it was first seen so.

Not emulated: scheduling decisions, container restarts, probes, images.
"""

from __future__ import annotations

import copy
import hashlib
import time

from devstack.kubeapi.context import utcnow
from devstack.kubeapi.resources import ResourceType
from shared.api.meta import Obj

from .base import Kit

NODE = "node-1"  # the one node every Pod is bound to (there is no Node object)
MANAGER = "kubelet"
_CONDITIONS = (
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
)


def _earliest(due: float | None, wait: float) -> float:
    return wait if due is None else min(due, wait)


class Kubelet:
    def __init__(self, kit: Kit, *, pod_ready_delay: float, pod_termination_delay: float | None):
        self.kit = kit
        self.pod_ready_delay = pod_ready_delay
        self.pod_termination_delay = pod_termination_delay
        self._first_seen: dict[str, float] = {}
        self._terminating_since: dict[str, float] = {}
        """When (monotonic) the kubelet first saw each Pod in its grace period."""
        self._ip_counter = 0

    def reconcile(self) -> float | None:
        """Start and stop Pods whose time has come; returns seconds until the next is due."""
        pod_rt = self.kit.rt("/pods")
        now = time.monotonic()
        due: float | None = None
        seen: set[str] = set()
        for p in self.kit.ops.store.objects_of(pod_rt.key):
            md = p["metadata"]
            uid = md["uid"]
            seen.add(uid)
            if md.get("deletionGracePeriodSeconds"):
                wait = self._terminate(pod_rt, p, now)
                if wait is not None:
                    due = _earliest(due, wait)
                continue
            if md.get("deletionTimestamp") or (p.get("status") or {}).get("phase") != "Pending":
                continue
            first = self._first_seen.setdefault(uid, now)
            wait = first + self.pod_ready_delay - now
            if wait > 0:
                due = _earliest(due, wait)
                continue
            self._start_pod(pod_rt, p)
        for timers in (self._first_seen, self._terminating_since):
            for uid in [uid for uid in timers if uid not in seen]:
                del timers[uid]
        return due

    def _terminate(self, pod_rt: ResourceType, p: Obj, now: float) -> float | None:
        """A Pod in its grace period: its containers stop `pod_termination_delay` seconds after
        the kubelet sees it terminating (at most the grace period), then the kubelet deletes it
        with grace 0 and its uid as a precondition, as kube's kubelet does. Returns the seconds
        left, or None once deleted."""
        md = p["metadata"]
        since = self._terminating_since.setdefault(md["uid"], now)
        grace = float(md["deletionGracePeriodSeconds"])
        delay = self.pod_termination_delay
        wait = since + (grace if delay is None else min(grace, delay)) - now
        if wait > 0:
            return wait
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}}
        self.kit.delete("kubelet delete", pod_rt, p, options, manager=MANAGER)
        return None

    def _start_pod(self, pod_rt: ResourceType, p: Obj) -> None:
        new = copy.deepcopy(p)
        new["status"] = self._running_status(p)
        md = p["metadata"]
        if not (p.get("spec") or {}).get("nodeName"):
            # the scheduler's binding first (a bound Pod is deleted gracefully)
            ops = self.kit.ops
            bound = self.kit.attempt("bind", ops.bind, pod_rt, md["namespace"], md["name"], NODE)
            if bound is None:
                return
            new["metadata"]["resourceVersion"] = bound["metadata"]["resourceVersion"]
        self.kit.update("kubelet", pod_rt, new, manager=MANAGER, subresource="status")

    def _running_status(self, p: Obj) -> Obj:
        now = utcnow()
        self._ip_counter += 1
        ip = f"10.244.{(self._ip_counter // 250) % 250}.{self._ip_counter % 250 + 1}"
        containers = (p.get("spec") or {}).get("containers") or []
        uid = p["metadata"]["uid"]
        return {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for t in _CONDITIONS
            ],
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": now,
            "qosClass": (p.get("status") or {}).get("qosClass", "BestEffort"),
            "containerStatuses": [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": "",
                    "containerID": "containerd://"
                    + hashlib.sha256(f"{uid}/{c.get('name')}".encode()).hexdigest(),
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in containers
            ],
        }
