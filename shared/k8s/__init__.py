"""meshtrust's Kubernetes layer: the client boundary, informer, queue and controller.

Layers, lowest first (each imports only those before it):

- `errors`, `backoff`: pure, no I/O.
- `resources` (REST paths of kinds). Objects, their metadata and keys are `shared.api.meta`,
  the CRDs' models `shared.api.v1alpha2`: this layer imports them, they never import it.
- `lightimport`: kubernetes-asyncio imported without its generated API classes and models.
- `client`: the only importer of `kubernetes_asyncio`; `KubeClient`.
- `informer` (list + watch into a cache), `queue` (work queue), `status` (status writes with
  retry on conflict), `events` (Event recorder).
- `controller`: informers -> queue -> workers -> reconcile.

Import from the submodules; this package re-exports the names services use most. It imports
`lightimport` before anything else: kubernetes-asyncio's generated classes load only if used.
"""

import shared.k8s.lightimport  # noqa: F401  (its import is its effect: before kubernetes_asyncio)

# isort: split
from shared.api.meta import ObjectKey
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
    "KubeClient",
    "KubeError",
    "NotFound",
    "ObjectKey",
    "ObjectList",
    "RequeueAfter",
    "Transient",
    "WatchEvent",
    "WorkQueue",
    "update_model_status",
    "update_status",
]
