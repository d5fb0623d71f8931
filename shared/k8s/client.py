"""The one boundary between meshtrust and Kubernetes: `KubeClient`.

With `shared.k8s.loading` (configuration loading), the only module that imports
`kubernetes_asyncio`. It uses the library for what it does
well (kubeconfig and in-cluster config loading, TLS, token refresh, the aiohttp transport) and
keeps everything above that boundary in plain data: requests take and return JSON dicts (or our
pydantic models), and every failure is one of `shared.k8s.errors`.

All requests go through `ApiClient.call_api` with raw responses, for core kinds and custom
resources alike, the way the library's dynamic client does. That keeps one code path, lets us
set `Content-Type` per verb ourselves (merge patches are *always* sent as
`application/merge-patch+json`; the generated `CustomObjectsApi.patch_*` would default to
JSON-patch, which the apiserver rejects for a dict body), and avoids the generated client's
deserialisation into model classes that we would only turn back into dicts.

What it deliberately does not do: retry (callers decide, by error type), cache, discover
resources, or follow a watch across reconnects (the informer does that).
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar, cast

import aiohttp
import structlog
from kubernetes_asyncio.client.api_client import ApiClient
from kubernetes_asyncio.client.configuration import Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from shared.api.meta import Obj, metadata
from shared.api.v1alpha2 import IssuedCertificate, PodBounceDirective
from shared.k8s import loading
from shared.k8s.errors import KubeError, Transient, error_from_status
from shared.k8s.resources import ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, Resource
from shared.k8s.watchstream import CONNECTION_ERRORS, WatchEvent, WatchStream, status_body

__all__ = [
    "ClientSettings",
    "KubeClient",
    "ObjectList",
    "WatchEvent",
    "WatchStream",
]

log = structlog.get_logger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"

ModelT = TypeVar("ModelT", IssuedCertificate, PodBounceDirective)

_MODEL_RESOURCES: Mapping[type[Any], Resource] = {
    IssuedCertificate: ISSUED_CERTIFICATES,
    PodBounceDirective: POD_BOUNCE_DIRECTIVES,
}


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Timeouts and identity of one client."""

    request_timeout_seconds: float = 30.0
    """Total time for one ordinary request, in seconds. Half of kube-apiserver's own 60 s
    request timeout, so we give up (and report Transient) before the server would."""

    connect_timeout_seconds: float = 5.0
    """Time to open a TCP/TLS connection, in seconds. Loopback or in-cluster connections take
    milliseconds; 5 s tolerates a busy node without hiding an unreachable server for long."""

    watch_read_grace_seconds: float = 30.0
    """How much longer than the server-side `timeoutSeconds` a watch may stay silent before we
    declare the connection dead, in seconds. Covers clock skew and a slow last flush."""

    user_agent: str = "meshtrust"
    """Sent on every request, so the apiserver's audit log names us."""

    trust_env: bool = False
    """Take proxies from HTTP(S)_PROXY / NO_PROXY and credentials from ~/.netrc, as
    kubernetes-asyncio does by default. Off by default: with it, aiohttp makes two thread hops
    per request (measured: ~1 ms of CPU per request instead of ~0.3 ms), and a kubeconfig's
    `proxy-url` still applies either way."""


@dataclass(frozen=True, slots=True)
class ObjectList:
    """One page of a list: the objects, the list's resourceVersion and the continue token."""

    items: list[Obj]
    resource_version: str
    continue_token: str | None


def _selector(value: str | Mapping[str, str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return ",".join(f"{k}={v}" for k, v in sorted(value.items()))


class KubeClient:
    """Typed access to one Kubernetes API server; an async context manager.

    Build it with `KubeClient.from_kubeconfig(path, context)`, `KubeClient.from_kubeconfig_dict`
    or `KubeClient.in_cluster()`, then `async with` it: entering loads the configuration and opens
    the HTTP session, leaving closes it. Every method raises a `shared.k8s.errors.KubeError`
    subclass on failure and nothing else from the transport.
    """

    def __init__(
        self,
        configure: loading.Configure,
        *,
        settings: ClientSettings | None = None,
        source: str = "",
    ) -> None:
        self._configure = configure
        self._settings = settings or ClientSettings()
        self._source = source
        self._api: ApiClient | None = None

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | os.PathLike[str],
        context: str | None = None,
        *,
        settings: ClientSettings | None = None,
    ) -> KubeClient:
        """A client for `context` (default: the current context) of the kubeconfig at `path`."""

        configure = loading.from_kubeconfig(path, context)
        return cls(configure, settings=settings, source=f"kubeconfig {os.fspath(path)}")

    @classmethod
    def from_kubeconfig_dict(
        cls,
        config: Mapping[str, Any],
        context: str | None = None,
        *,
        settings: ClientSettings | None = None,
    ) -> KubeClient:
        """A client from a kubeconfig already parsed into a dict."""

        configure = loading.from_kubeconfig_dict(config, context)
        return cls(configure, settings=settings, source="kubeconfig dict")

    @classmethod
    def in_cluster(
        cls,
        *,
        settings: ClientSettings | None = None,
        token_path: str | os.PathLike[str] = loading.SERVICE_ACCOUNT_DIR + "/token",
        ca_path: str | os.PathLike[str] = loading.SERVICE_ACCOUNT_DIR + "/ca.crt",
        environ: Mapping[str, str] | None = None,
    ) -> KubeClient:
        """A client from the pod's service account: the API server from KUBERNETES_SERVICE_HOST
        and KUBERNETES_SERVICE_PORT, the token and CA from the service-account mount. The token
        file is re-read every minute, so projected (rotating) tokens keep working."""

        configure = loading.in_cluster(token_path, ca_path, environ)
        return cls(configure, settings=settings, source="in-cluster")

    async def __aenter__(self) -> Self:
        if self._api is not None:
            raise RuntimeError("this KubeClient is already open")
        # A fresh Configuration, not a copy of the process-wide default (the library's own
        # new_client_from_config does the same): two clients never share credentials.
        configuration = cast(Configuration, type.__call__(Configuration))
        try:
            await self._configure(configuration)
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeError(
                f"cannot load Kubernetes configuration ({self._source}): {exc}"
            ) from exc
        api = ApiClient(configuration=configuration)
        api.user_agent = self._settings.user_agent
        if not self._settings.trust_env:
            loading.without_env_lookups(api)
        self._api = api
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        api, self._api = self._api, None
        if api is not None:
            await api.close()

    @property
    def host(self) -> str:
        """The API server's base URL."""
        return str(self._client().configuration.host)

    # -- the transport ------------------------------------------------------------------------

    def _client(self) -> ApiClient:
        if self._api is None:
            raise RuntimeError("use KubeClient inside `async with`")
        return self._api

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = JSON,
        client_timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """Send one request and return the raw response (status not checked yet)."""
        api = self._client()
        headers = {"Accept": JSON, "Content-Type": content_type}
        try:
            response = await api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=client_timeout,
            )
        except CONNECTION_ERRORS as exc:
            raise Transient(f"{method} {path}: {exc!r}") from exc
        return cast(aiohttp.ClientResponse, response)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = JSON,
    ) -> Obj:
        """One request with a JSON answer; non-2xx answers raised as our errors."""
        timeout = aiohttp.ClientTimeout(
            total=self._settings.request_timeout_seconds,
            sock_connect=self._settings.connect_timeout_seconds,
        )
        response = await self._send(
            method, path, query=query, body=body, content_type=content_type, client_timeout=timeout
        )
        try:
            raw = await response.read()
        except CONNECTION_ERRORS as exc:
            raise Transient(f"{method} {path}: reading the answer failed: {exc!r}") from exc
        finally:
            response.release()
        if not 200 <= response.status < 300:
            error = error_from_status(response.status, status_body(raw), headers=response.headers)
            log.debug(
                "kube.request_failed",
                method=method,
                path=path,
                code=error.code,
                reason=error.reason,
            )
            raise error
        if not raw:
            return {}
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise Transient(f"{method} {path}: the answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise Transient(f"{method} {path}: the answer is not a JSON object")
        return answer

    @staticmethod
    def _where(
        resource: Resource, namespace: str | None, body: Mapping[str, Any] | None = None
    ) -> str | None:
        if namespace is None and body is not None:
            namespace = metadata(body).get("namespace")
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource.kind} is namespaced: give a namespace")
        return namespace if resource.namespaced else None

    @staticmethod
    def _name_of(body: Mapping[str, Any]) -> str:
        name = metadata(body).get("name")
        if not name:
            raise ValueError("the object has no metadata.name")
        return str(name)

    # -- verbs --------------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, *, namespace: str | None = None) -> Obj:
        """Read one object (raises NotFound)."""
        ns = self._where(resource, namespace)
        return await self._request("GET", resource.path(namespace=ns, name=name))

    async def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> ObjectList:
        """List one page of objects (all namespaces when `namespace` is None)."""
        query: list[tuple[str, str]] = []
        if (selector := _selector(label_selector)) is not None:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit is not None:
            query.append(("limit", str(limit)))
        if continue_token:
            query.append(("continue", continue_token))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        answer = await self._request(
            "GET", resource.path(namespace=namespace if resource.namespaced else None), query=query
        )
        meta = metadata(answer)
        items = answer.get("items") or []
        api_version, kind = resource.api_version, resource.kind
        for item in items:
            # A list's items come without apiVersion/kind; give them back, as kubectl does.
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return ObjectList(
            items=items,
            resource_version=str(meta.get("resourceVersion") or ""),
            continue_token=meta.get("continue") or None,
        )

    async def create(
        self, resource: Resource, body: Mapping[str, Any], *, namespace: str | None = None
    ) -> Obj:
        """Create an object (raises AlreadyExists, Invalid). `namespace` defaults to the body's."""
        ns = self._where(resource, namespace, body)
        return await self._request("POST", resource.path(namespace=ns), body=dict(body))

    async def replace(self, resource: Resource, body: Mapping[str, Any]) -> Obj:
        """PUT the whole object; its `metadata.resourceVersion` makes it conditional (Conflict)."""
        ns = self._where(resource, None, body)
        path = resource.path(namespace=ns, name=self._name_of(body))
        return await self._request("PUT", path, body=dict(body))

    async def replace_status(self, resource: Resource, body: Mapping[str, Any]) -> Obj:
        """PUT to `/status`: only `.status` changes, conditional on `metadata.resourceVersion`."""
        ns = self._where(resource, None, body)
        path = resource.path(namespace=ns, name=self._name_of(body), subresource="status")
        return await self._request("PUT", path, body=dict(body))

    async def patch_merge(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> Obj:
        """RFC 7386 merge patch of the object (`null` deletes a key)."""
        ns = self._where(resource, namespace)
        path = resource.path(namespace=ns, name=name)
        return await self._request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    async def patch_status(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any],
        *,
        namespace: str | None = None,
    ) -> Obj:
        """Merge patch of the `/status` subresource. Put `metadata.resourceVersion` in the patch
        to make it conditional."""
        ns = self._where(resource, namespace)
        path = resource.path(namespace=ns, name=name, subresource="status")
        return await self._request("PATCH", path, body=dict(patch), content_type=MERGE_PATCH)

    async def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        precondition_uid: str | None = None,
        precondition_resource_version: str | None = None,
    ) -> Obj:
        """Delete an object (raises NotFound; Conflict when a precondition fails). Returns what
        the server answered: the object (still there while finalizers run) or a Status."""
        ns = self._where(resource, namespace)
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        preconditions = {
            key: value
            for key, value in (
                ("uid", precondition_uid),
                ("resourceVersion", precondition_resource_version),
            )
            if value is not None
        }
        if preconditions:
            options["preconditions"] = preconditions
        return await self._request("DELETE", resource.path(namespace=ns, name=name), body=options)

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
        allow_bookmarks: bool = True,
    ) -> WatchStream:
        """Open one watch from `resource_version` (events strictly after it).

        The server ends the stream after `timeout_seconds`; the caller re-watches from the last
        resourceVersion it saw. Use as `async with client.watch(...) as events: async for ...`.
        """
        query: list[tuple[str, str]] = [
            ("watch", "true"),
            ("timeoutSeconds", str(int(timeout_seconds))),
        ]
        if allow_bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        if resource_version is not None:
            query.append(("resourceVersion", resource_version))
        if (selector := _selector(label_selector)) is not None:
            query.append(("labelSelector", selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        path = resource.path(namespace=namespace if resource.namespaced else None)
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._settings.connect_timeout_seconds,
            sock_read=timeout_seconds + self._settings.watch_read_grace_seconds,
        )

        async def open_response() -> aiohttp.ClientResponse:
            return await self._send("GET", path, query=query, client_timeout=timeout)

        return WatchStream(open_response)

    # -- our custom resources as models -------------------------------------------------------

    async def get_model(self, model: type[ModelT], name: str, *, namespace: str) -> ModelT:
        """Read an IssuedCertificate or PodBounceDirective as its pydantic model."""
        raw = await self.get(_MODEL_RESOURCES[model], name, namespace=namespace)
        return model.from_object(raw)

    async def list_models(
        self,
        model: type[ModelT],
        *,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
    ) -> builtins.list[ModelT]:
        """All IssuedCertificates or PodBounceDirectives (of a namespace), as models."""
        resource = _MODEL_RESOURCES[model]
        out: builtins.list[ModelT] = []
        token: str | None = None
        while True:
            page = await self.list(
                resource,
                namespace=namespace,
                label_selector=label_selector,
                limit=500,
                continue_token=token,
            )
            out.extend(model.from_object(item) for item in page.items)
            if not (token := page.continue_token):
                return out

    async def create_model(self, obj: ModelT) -> ModelT:
        """Create an IssuedCertificate or PodBounceDirective from its model."""
        raw = await self.create(_MODEL_RESOURCES[type(obj)], obj.to_object())
        return type(obj).from_object(raw)
