"""Reading a signing Secret: from the issuer's Secret informer when it holds it, else live.

The informer (scoped by `MESHTRUST_ISSUER_SIGNING_NAMESPACE`) is what triggers a declaration's
reconcile when its signing Secret changes, so its cache is at most a watch event behind the API
(milliseconds). A Secret the cache does not hold (outside its namespace, not synced yet, just
created) is read live, so absence is only ever reported by the API itself. A CA rotated within
that lag signs one more certificate with the previous CA; the rotation's own event then changes
the desired state's signing-chain fingerprint and the agent issues again (docs/issuer.md).
"""

from __future__ import annotations

from typing import Any

from shared.k8s import KubeClient, NotFound
from shared.k8s.informer import Informer
from shared.k8s.models import ObjectKey
from shared.k8s.resources import SECRETS

Obj = dict[str, Any]


async def read_signing_secret(
    kube: KubeClient, informer: Informer | None, namespace: str, name: str
) -> Obj | None:
    """The Secret (None if the API has none); the cached object is shared: do not mutate it."""
    if informer is not None and informer.has_synced:
        cached = informer.get(ObjectKey(namespace, name))
        if cached is not None:
            return cached
    try:
        return await kube.get(SECRETS, name, namespace=namespace)
    except NotFound:
        return None
