"""The status mirror's procedure: one agent's `status.changed` written onto its declaration.

`mirror_report(...)` writes the status `mirror.mirrored_status` decides (pure) onto the
management IssuedCertificate `<cluster>/<name>`, by `update_model_status` (re-read and retried
on a conflict). A declaration that is gone or unreadable has nothing to mirror onto (logged);
other API errors are transient (the consumer naks). Deliberately not here: which reports to
take (`handlers.StatusHandler`) and the decision itself (`mirror.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from services.issuer.mirror import mirrored_status
from shared.api.v1alpha2 import IssuedCertificate
from shared.events import StatusChanged
from shared.k8s import EventRecorder, KubeClient, KubeError, NotFound, update_model_status
from shared.runtime import TransientError, get_logger

__all__ = ["mirror_report"]

log = get_logger(__name__)


async def mirror_report(
    kube: KubeClient,
    event: StatusChanged,
    *,
    recorder: EventRecorder,
    current: Mapping[str, Any] | None = None,
) -> None:
    """Mirror `event` onto its declaration; `current`: a cached copy that saves the read
    before the write (the write carries its resourceVersion: a stale copy is a 409, then the
    declaration is read fresh)."""
    cluster, change = event.cluster, event.data
    try:
        _, write = await update_model_status(
            kube,
            IssuedCertificate,
            change.name,
            namespace=cluster,
            mutate=lambda ic: mirrored_status(ic.status, change, issuance=event.issuance),
            current=current,
            recorder=recorder,
        )
    except NotFound:
        log.info("status for a declaration that is gone; nothing to mirror", name=change.name)
        return
    except ValidationError:
        log.warning("declaration unreadable; status not mirrored", name=change.name)
        return
    except KubeError as exc:
        raise TransientError(f"mirroring status of {cluster}/{change.name}: {exc}") from None
    if write.changed:
        log.info("status mirrored", name=change.name, state=change.state.value)
