"""HTTP: kube-apiserver's URL layout, content negotiation, watch streams, admin endpoints.

Routing is one catch-all handler that parses `/api/v1/...` and `/apis/<g>/<v>/...` the way
kube-apiserver's installer lays them out (collection, item, `status` and `scale`
subresources, `namespaces/<ns>/...`, the legacy `watch/` prefix) into a `Target`.  Every
failure is an `ApiError` rendered as a `Status`.  Watches are chunked responses of one JSON event
per line (watching.py).  This module holds no state of its own beyond the set of open streams,
and sees the cluster only through `Backend`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from shared.api.meta import Obj

from . import discovery, errors, openapi, reviews, scale, tables
from .access import Access
from .faults import Faults
from .operations import APPLY_PATCH, APPLY_PATCH_CBOR, Context, Operations
from .resources import ResourceType
from .watching import LineCache, Watch, WatchParams
from .wire import (
    MAX_REQUEST_BYTES,
    bool_param,
    check_acceptable_or_table,
    delete_options,
    error_response,
    escape,
    int_param,
    json_response,
    read_body,
    read_patch,
    user_agent_manager,
    wants_table,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_PREFIX = "/_emulator"
# kube-apiserver's health checks per endpoint, in the order `?verbose` lists them
_CHECKS = (
    "ping",
    "log",
    "etcd",
    "etcd-readiness",
    "informer-sync",
    "poststarthook/start-apiserver-admission-initializer",
    "poststarthook/generic-apiserver-start-informers",
    "poststarthook/start-apiextensions-informers",
    "poststarthook/start-apiextensions-controllers",
    "poststarthook/crd-informer-synced",
    "poststarthook/start-kube-apiserver-admission-initializer",
)
_LIVE_CHECKS = tuple(c for c in _CHECKS if c not in ("etcd-readiness", "informer-sync"))
HEALTH_CHECKS = {"healthz": _LIVE_CHECKS, "livez": _LIVE_CHECKS, "readyz": (*_CHECKS, "shutdown")}
# what kube-apiserver's system:public-info-viewer role lets anonymous clients read
PUBLIC_PATHS = frozenset({"/version", "/version/", "/healthz", "/livez", "/readyz"})


class Backend(Protocol):
    """What the server needs of a cluster (`KubeAPI` is one): its verbs, its fault injection,
    its settings, and whether it is shutting down."""

    @property
    def ops(self) -> Operations: ...
    @property
    def faults(self) -> Faults: ...
    @property
    def access(self) -> Access: ...
    @property
    def bookmark_interval(self) -> float: ...
    @property
    def stopping(self) -> bool: ...


@dataclass(frozen=True)
class Target:
    """What a resource URL names: a kind in a group/version, maybe a namespace, an object and
    a subresource, and whether it has the legacy `watch/` prefix."""

    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    sub: str | None
    watch_prefix: bool


class Server:
    def __init__(self, api: Backend) -> None:
        self.api = api
        self.ops = api.ops
        self.store = api.ops.store
        self.registry = api.ops.registry
        self.streams: set[asyncio.Task[Any]] = set()
        self._lines: LineCache = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    # --- middleware: auth, faults, Status rendering --------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not request.path.startswith(ADMIN_PREFIX):
                answered = await self._admit(request)
                if answered is not None:
                    return answered
            return await handler(request)
        except errors.ApiError as exc:
            return error_response(exc)

    async def _admit(self, request: web.Request) -> web.Response | None:
        """Shutdown, authentication, authorization and injected faults, for every request but
        the admin's; the answer to a TokenRequest or an access review (reviews.py)."""
        api = self.api
        if api.stopping:
            raise errors.ApiError(503, "ServiceUnavailable", "apiserver is shutting down", {})
        now = int(time.time())
        attrs = api.access.admit(request, now=now)
        if api.faults.latency:
            await asyncio.sleep(api.faults.latency)
        injected = api.faults.take(request.path_qs)
        if injected is not None:
            raise injected
        return await reviews.answer(api.access, request, attrs, now=now)

    # --- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path.startswith(ADMIN_PREFIX):
            return await self._admin(request, parts[1:])
        if path == "/version":
            return json_response(discovery.version_info())
        if parts and parts[0] in HEALTH_CHECKS:
            return self._health(request, parts)
        if path == "/openapi/v3":
            return json_response(openapi.root(self.registry))
        if path.startswith("/openapi/v3/"):
            return self._openapi_gv(parts[2:])
        if path == "/openapi/v2":
            accept = request.headers.get("Accept", "")
            if "json" not in accept and accept not in ("", "*/*"):
                raise errors.not_acceptable("application/json")
            return json_response(openapi.v2(self.registry))
        if parts[:1] == ["api"]:
            if len(parts) == 1:
                return self._discovery_root(request, legacy=True)
            if parts[1] != "v1":
                raise errors.path_not_found()
            return await self._resource_request(request, "", "v1", parts[2:])
        if parts[:1] == ["apis"]:
            if len(parts) == 1:
                return self._discovery_root(request, legacy=False)
            group = parts[1]
            if len(parts) == 2:
                doc = discovery.api_group(self.registry, group)
                if doc is None:
                    raise errors.path_not_found()
                return json_response(doc)
            return await self._resource_request(request, group, parts[2], parts[3:])
        raise errors.path_not_found()

    def _health(self, request: web.Request, parts: list[str]) -> web.Response:
        """`/readyz`, `/livez`, `/healthz`: `ok`, one check's `ok` at `/<endpoint>/<check>`, or
        with `?verbose` every check as `[+]name ok` and `<endpoint> check passed` (an
        `?exclude=name` check is listed as excluded), as kube-apiserver's healthz package."""
        endpoint, checks = parts[0], HEALTH_CHECKS[parts[0]]
        if len(parts) > 1:
            if "/".join(parts[1:]) not in checks:
                raise errors.path_not_found()
            return web.Response(text="ok", content_type="text/plain")
        if "verbose" not in request.query:
            return web.Response(text="ok", content_type="text/plain")
        excluded = set(request.query.getall("exclude", []))
        lines = [f"[+]{c} excluded: ok" if c in excluded else f"[+]{c} ok" for c in checks]
        lines.append(f"{endpoint} check passed")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    def _discovery_root(self, request: web.Request, *, legacy: bool) -> web.Response:
        if discovery.wants_aggregated(request.headers.get("Accept", "")):
            return json_response(
                discovery.aggregated(self.registry, legacy), content_type=discovery.AGGREGATED_V2
            )
        if legacy:
            host = request.host
            return json_response(discovery.api_versions(host))
        return json_response(discovery.api_group_list(self.registry))

    def _openapi_gv(self, parts: list[str]) -> web.Response:
        if parts[:1] == ["api"] and parts[1:] == ["v1"]:
            group, version = "", "v1"
        elif parts[:1] == ["apis"] and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise errors.path_not_found()
        if (group, version) not in openapi.group_versions(self.registry):
            raise errors.path_not_found()
        doc, _ = openapi.document(self.registry, group, version)
        return json_response(doc)

    # --- resources -----------------------------------------------------------------------------

    async def _resource_request(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        if not self.registry.in_group_version(group, version):
            raise errors.path_not_found()
        if not rest:
            return json_response(discovery.resource_list(self.registry, group, version))
        t = self._target(group, version, rest)
        ctx = _context(request)
        watching = t.watch_prefix or bool_param(request.query.get("watch"))
        if t.name is None:
            if request.method == "GET" and watching:
                return await self._watch(request, t)
            return await self._collection(request, t, ctx)
        if watching and request.method == "GET":
            return await self._watch(request, t)
        if t.sub == "scale":
            return await self._scale(request, t, t.name, ctx)
        return await self._item(request, t, t.name, ctx)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        watch_prefix = False
        if rest[0] == "watch":
            watch_prefix = True
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.registry.get(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace = rest[1]
                rest = rest[2:]
        rt = self.registry.get(group, version, rest[0]) if rest else None
        if rt is None:
            raise errors.path_not_found()
        if namespace is not None and not rt.namespaced:
            raise errors.path_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise errors.path_not_found()
        if name is not None and rt.namespaced and namespace is None:
            raise errors.path_not_found()
        if sub is not None and not (
            (sub == "status" and rt.has_status(version))
            or (sub == "scale" and rt.has_scale(version))
        ):
            raise errors.path_not_found()
        return Target(rt, version, namespace, name, sub, watch_prefix)

    async def _collection(self, request: web.Request, t: Target, ctx: Context) -> web.Response:
        """GET (list), POST (create), DELETE (deletecollection) on a collection."""
        rt, version, namespace, q = t.rt, t.version, t.namespace, request.query
        if request.method == "GET":
            return self._list(request, rt, version, namespace)
        if request.method == "POST":
            if rt.namespaced and namespace is None:
                raise errors.method_not_allowed()
            body = await read_body(request)
            obj = self.ops.create(rt, version, namespace or "", body, ctx)
            return self._respond(obj, 201, ctx, rt, version, request.headers.get("Accept", ""))
        if request.method == "DELETE":
            options = delete_options(await read_body(request, optional=True), q, ctx)
            out = self.ops.delete_collection(
                rt,
                version,
                namespace,
                options,
                ctx,
                label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"),
            )
            return self._respond(out, 200, ctx, rt, version, "")
        raise errors.method_not_allowed()

    async def _item(self, request: web.Request, t: Target, name: str, ctx: Context) -> web.Response:
        """GET, PUT, PATCH, DELETE on an object or its status."""
        rt, version, ns, sub, q = t.rt, t.version, t.namespace or "", t.sub, request.query
        accept, method = request.headers.get("Accept", ""), request.method
        if method == "GET":
            check_acceptable_or_table(accept)
            obj = self.ops.get(rt, version, ns, name)
            include = q.get("includeObject") or "Metadata"
            return self._respond(obj, 200, ctx, rt, version, accept, include)
        if method == "PUT":
            body = await read_body(request)
            obj = self.ops.update(rt, version, ns, name, body, ctx, subresource=sub)
            return self._respond(obj, 200, ctx, rt, version, accept)
        if method == "PATCH":
            patch = await read_patch(request)
            obj, created = self.ops.patch(
                rt,
                version,
                ns,
                name,
                request.content_type,
                patch,
                ctx,
                subresource=sub,
                force=bool_param(q.get("force")),
            )
            return self._respond(obj, 201 if created else 200, ctx, rt, version, accept)
        if method == "DELETE" and sub is None:
            options = delete_options(await read_body(request, optional=True), q, ctx)
            out, _ = self.ops.delete(rt, version, ns, name, options, ctx)
            return self._respond(out, 200, ctx, rt, version, "")
        raise errors.method_not_allowed()

    # --- bodies and responses ------------------------------------------------------------------

    def _respond(
        self,
        obj: Obj,
        status: int,
        ctx: Context,
        rt: ResourceType,
        version: str,
        accept: str,
        include_object: str = "Metadata",
    ) -> web.Response:
        headers = (
            {"Warning": ", ".join(f'299 - "{escape(w)}"' for w in ctx.warnings)}
            if ctx.warnings
            else None
        )
        if accept and wants_table(accept) and obj.get("kind") == rt.kind:
            tbl = tables.table(
                rt,
                version,
                [obj],
                metadata={"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                include_object=include_object,
            )
            return json_response(tbl, status, headers)
        return json_response(obj, status, headers)

    def _list(
        self, request: web.Request, rt: ResourceType, version: str, namespace: str | None
    ) -> web.Response:
        q = request.query
        accept = request.headers.get("Accept", "")
        check_acceptable_or_table(accept)
        limit = int_param(q.get("limit"), "limit")
        out = self.ops.list_collection(
            rt,
            version,
            namespace,
            label_selector=q.get("labelSelector"),
            field_selector=q.get("fieldSelector"),
            limit=limit,
            continue_token=q.get("continue"),
            resource_version=q.get("resourceVersion"),
            resource_version_match=q.get("resourceVersionMatch"),
        )
        if wants_table(accept):
            items = [self.ops.render(rt, version, i, shared=True) for i in out["items"]]
            tbl = tables.table(
                rt,
                version,
                items,
                metadata=out["metadata"],
                include_object=q.get("includeObject") or "Metadata",
            )
            return json_response(tbl)
        return json_response(out)

    async def _scale(
        self, request: web.Request, t: Target, name: str, ctx: Context
    ) -> web.Response:
        rt, version, ns = t.rt, t.version, t.namespace or ""
        obj = self.ops.get(rt, version, ns, name)
        if request.method == "GET":
            return json_response(scale.to_scale(rt, version, obj))
        if request.method == "PUT":
            new_scale = await read_body(request)
        elif request.method == "PATCH":
            patch = await read_patch(request)
            new_scale = scale.patch_scale(
                scale.to_scale(rt, version, obj), request.content_type, patch
            )
        else:
            raise errors.method_not_allowed()
        new = scale.scaled(rt, version, obj, new_scale)
        updated = self.ops.update(rt, version, ns, name, new, ctx, from_patch=True)
        return json_response(scale.to_scale(rt, version, updated))

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        params = WatchParams.parse(request.query, accept, t.rt, t.version, name_filter=t.name)
        watch = Watch(
            self.ops,
            t.rt,
            t.version,
            t.namespace,
            params,
            lines=self._lines,
            bookmark_interval=self.api.bookmark_interval,
        )
        await watch.serve(request, self.streams)
        return watch.resp

    # --- admin ----------------------------------------------------------------------------------

    async def _admin(self, request: web.Request, parts: list[str]) -> web.Response:
        faults = self.api.faults
        if request.method == "GET" and parts == ["state"]:
            rv, objects = self.store.dump()
            return json_response(
                {
                    "resourceVersion": str(rv),
                    "watches": len(self.store.watchers),
                    "objects": {k: len(v) for k, v in objects.items()},
                }
            )
        if request.method != "POST" or parts[:1] != ["faults"] or len(parts) != 2:
            raise errors.path_not_found()
        raw = await request.read()
        args: Obj = json.loads(raw) if raw.strip() else {}
        action = parts[1]
        try:
            if action == "close-watches":
                return json_response({"closed": faults.close_watches()})
            if action == "fail-next":
                faults.fail_next(
                    int(args.get("n", 1)),
                    status=int(args.get("status", 500)),
                    path_contains=args.get("path_contains"),
                    retry_after=args.get("retry_after"),
                )
            elif action == "compact":
                faults.compact()
            elif action == "latency":
                faults.set_latency(float(args.get("seconds", 0)))
            elif action == "clear":
                faults.clear()
            else:
                raise errors.path_not_found()
        except (ValueError, TypeError) as exc:
            raise errors.bad_request(str(exc)) from exc
        return json_response({"ok": True})


def _context(request: web.Request) -> Context:
    """The write options of the query: fieldManager (else the User-Agent's program; none for
    an apply, which must name one), dryRun, fieldValidation."""
    q = request.query
    if q.get("dryRun") not in (None, "All"):
        raise errors.bad_request(
            f'dryRun: Unsupported value: "{q.get("dryRun")}": supported values: "All"'
        )
    fv = q.get("fieldValidation") or "Warn"
    if fv not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(
            f'fieldValidation: Unsupported value: "{fv}": supported values: "Ignore", '
            '"Strict", "Warn"'
        )
    ctx = Context(
        manager=q.get("fieldManager") or user_agent_manager(request),
        dry_run=q.get("dryRun") == "All",
        field_validation=fv,
    )
    if (
        request.method == "PATCH"
        and request.content_type in (APPLY_PATCH, APPLY_PATCH_CBOR)
        and not q.get("fieldManager")
    ):
        ctx.manager = ""
    return ctx
