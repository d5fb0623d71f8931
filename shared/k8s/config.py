"""Where a service finds its Kubernetes API (`MESHTRUST_KUBE_*`): a kubeconfig, or in-cluster.

In a pod, leave `kubeconfig` unset: the service-account token and CA are used. Outside a pod
(the local stack, a laptop), point `MESHTRUST_KUBE_KUBECONFIG` at a kubeconfig and optionally
pick a context.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.k8s.client import ClientSettings, KubeClient
from shared.runtime.settings import MeshtrustSettings


class KubeSettings(MeshtrustSettings, env_prefix="MESHTRUST_KUBE_"):
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig file; unset means in-cluster configuration."
    )
    context: str | None = Field(default=None, description="Context; unset means current.")
    request_timeout: float = Field(
        default=30.0, gt=0, description="Seconds per ordinary request (half the apiserver's 60)."
    )
    trust_env: bool = Field(
        default=False,
        description="Honour HTTP(S)_PROXY/NO_PROXY and ~/.netrc (costs ~0.7 ms CPU a request); "
        "a kubeconfig's proxy-url applies either way.",
    )


def client_from_settings(settings: KubeSettings) -> KubeClient:
    """A `KubeClient` (use it with `async with`) as the settings say."""
    client_settings = ClientSettings(
        request_timeout_seconds=settings.request_timeout, trust_env=settings.trust_env
    )
    if settings.kubeconfig is not None:
        return KubeClient.from_kubeconfig(
            settings.kubeconfig, settings.context, settings=client_settings
        )
    return KubeClient.in_cluster(settings=client_settings)
