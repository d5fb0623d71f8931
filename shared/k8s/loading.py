"""Loading a client's configuration with `kubernetes_asyncio`: from a kubeconfig (a file or a
parsed dict) or from the pod's service account, and the library's HTTP session made to leave
the environment alone. Each loader is a `Configure`: it fills the fresh `Configuration` that
`shared.k8s.client.KubeClient` makes on entering. This module and `shared.k8s.client` are the
only ones that import `kubernetes_asyncio`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.configuration import Configuration
from kubernetes_asyncio.config import incluster_config, kube_config

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Configure = Callable[[Configuration], Awaitable[None]]
"""Fills a client's configuration (server, credentials, TLS)."""


def from_kubeconfig(path: str | os.PathLike[str], context: str | None) -> Configure:
    """`context` (default: the current one) of the kubeconfig file at `path`."""

    async def configure(configuration: Configuration) -> None:
        loader = await kube_config.load_kube_config(
            config_file=os.fspath(path),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        _refresh_exec_credentials(loader, configuration)

    return configure


def from_kubeconfig_dict(config: Mapping[str, Any], context: str | None) -> Configure:
    """A kubeconfig already parsed into a dict."""

    async def configure(configuration: Configuration) -> None:
        loader = await kube_config.load_kube_config_from_dict(
            config_dict=dict(config), context=context, client_configuration=configuration
        )
        _refresh_exec_credentials(loader, configuration)

    return configure


def in_cluster(
    token_path: str | os.PathLike[str],
    ca_path: str | os.PathLike[str],
    environ: Mapping[str, str] | None,
) -> Configure:
    """The pod's service account (the library re-reads the token file every minute)."""

    async def configure(configuration: Configuration) -> None:
        incluster_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration,
            token_filename=os.fspath(token_path),
            cert_filename=os.fspath(ca_path),
            environ=dict(os.environ if environ is None else environ),
        )

    return configure


def _refresh_exec_credentials(
    loader: kube_config.KubeConfigLoader, configuration: Configuration
) -> None:
    """Keep an exec-plugin credential (EKS, GKE, OIDC helpers) fresh.

    kubernetes_asyncio runs a kubeconfig's exec plugin once, at load; its `refresh_token` helper
    would need a background task of its own. Instead we hook the library's per-request API-key
    refresh: `load_from_exec_plugin` returns at once while the credential's expirationTimestamp
    is in the future and re-runs the plugin after it. Credentials without an expiry are left
    alone (re-running the plugin on every request would be absurd).
    """
    user = getattr(loader, "_user", None)  # the library's own refresh_token() reads it too
    if not user or "exec" not in user or not hasattr(loader, "exec_plugin_expiry"):
        return

    async def refresh(config: Configuration) -> None:
        if await loader.load_from_exec_plugin():
            config.api_key["BearerToken"] = loader.token

    configuration.refresh_api_key_hook = refresh


def without_env_lookups(api: ApiClient) -> None:
    """Give the library's REST client a session that does not consult the environment.

    kubernetes-asyncio builds its aiohttp session with `trust_env=True`; the connector (TLS
    context, pool size) is kept, only the session around it is replaced."""
    rest = api.rest_client
    old = rest.pool_manager
    connector = old.connector
    old.detach()  # leaves the connector open for the new session
    # 2 MiB read buffer, as the library sets it: watch events of large objects exceed aiohttp's
    # default (etcd allows 1.5 MiB requests).
    rest.pool_manager = aiohttp.ClientSession(
        connector=connector, trust_env=False, read_bufsize=2**21
    )
