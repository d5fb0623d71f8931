"""meshtrust's Kubernetes layer: the client boundary, models, informer, queue and controller.

Layers, lowest first (each imports only those before it):

- `errors`, `backoff`, `durations`: pure, no I/O.
- `models` (pydantic models of our CRDs, `ObjectKey`), `resources` (REST paths of kinds).
- `client`: the only importer of `kubernetes_asyncio`; `KubeClient`.
- `informer` (list + watch into a cache), `queue` (work queue), `status` (status writes with
  retry on conflict), `events` (Event recorder).
- `controller`: informers -> queue -> workers -> reconcile.

Import from the submodules; this package re-exports the names services use most.
"""

from shared.k8s.client import ClientSettings, KubeClient, ObjectList, WatchEvent
from shared.k8s.controller import Controller, ControllerSettings, Done, RequeueAfter
from shared.k8s.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Transient,
)
from shared.k8s.events import EventRecorder
from shared.k8s.informer import Informer, InformerEvent, InformerSettings
from shared.k8s.models import IssuedCertificate, ObjectKey, PodBounceDirective, State
from shared.k8s.queue import WorkQueue
from shared.k8s.status import update_model_status, update_status

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "ClientSettings",
    "Conflict",
    "Controller",
    "ControllerSettings",
    "Done",
    "EventRecorder",
    "Forbidden",
    "Gone",
    "Informer",
    "InformerEvent",
    "InformerSettings",
    "Invalid",
    "IssuedCertificate",
    "KubeClient",
    "KubeError",
    "NotFound",
    "ObjectKey",
    "ObjectList",
    "PodBounceDirective",
    "RequeueAfter",
    "State",
    "Transient",
    "WatchEvent",
    "WorkQueue",
    "update_model_status",
    "update_status",
]
