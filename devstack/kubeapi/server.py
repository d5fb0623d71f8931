"""HTTP: kube-apiserver's URL layout, content negotiation, watch streams, admin endpoints.

Routing is one catch-all handler that parses `/api/v1/...` and `/apis/<g>/<v>/...` the way
kube-apiserver's installer lays them out (collection, item, `status` and `scale`
subresources, `namespaces/<ns>/...`, the legacy `watch/` prefix).  Every failure is an
`ApiError` rendered as a `Status`.  Watches are chunked responses of one JSON event per line.
This module holds no state of its own beyond the set of open streams.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from . import discovery, errors, openapi, protobuf, selectors, tables
from .operations import (
    APPLY_PATCH,
    APPLY_PATCH_CBOR,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    Context,
)
from .resources import ResourceType
from .store import Event

if TYPE_CHECKING:
    from .cluster import KubeAPI

Obj = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_PREFIX = "/_emulator"
MAX_REQUEST_BYTES = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes
DEFAULT_WATCH_TIMEOUT = 1800.0
WATCH_LINES_KEPT = 1024  # encoded watch lines remembered (see Server._lines)
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
PUBLIC_PATHS = frozenset(
    {"/version", "/version/", "/healthz", "/livez", "/readyz"}
)  # kube-apiserver's --min-request-timeout


def _json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers={
            "Content-Type": content_type,
            "Cache-Control": "no-cache, private",
            **(headers or {}),
        },
    )


def error_response(err: errors.ApiError) -> web.Response:
    return _json_response(err.status(), err.code, err.headers)


def _wants_table(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False


def _check_acceptable(accept: str) -> None:
    if not accept:
        return
    kinds = [p.split(";")[0].strip() for p in accept.split(",")]
    if any(
        k in ("*/*", "application/*", "application/json", "application/yaml", "") for k in kinds
    ):
        return
    raise errors.not_acceptable("application/json, application/yaml")


def _user_agent_manager(request: web.Request) -> str:
    ua = request.headers.get("User-Agent", "")
    return ua.split("/", 1)[0] if ua else "unknown"


class Server:
    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.ops = api.ops
        self.store = api.store
        self.registry = api.registry
        self.streams: set[asyncio.Task[Any]] = set()
        self._lines: dict[tuple[int, str, str], bytes] = {}
        """Watch lines already encoded, by (resourceVersion, event type, apiVersion): every watcher
        of a kind gets the same bytes for one write, so it is serialised once."""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    # --- middleware: auth, faults, Status rendering --------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        admin = request.path.startswith(ADMIN_PREFIX)
        try:
            if not admin:
                if self.api.stopping:
                    raise errors.ApiError(
                        503, "ServiceUnavailable", "apiserver is shutting down", {}
                    )
                if (
                    self.api.token is not None
                    and request.path not in PUBLIC_PATHS
                    and request.headers.get("Authorization") != f"Bearer {self.api.token}"
                ):
                    raise errors.unauthorized()
                if self.api.faults.latency:
                    await asyncio.sleep(self.api.faults.latency)
                injected = self.api.faults.take(request.path_qs)
                if injected is not None:
                    raise injected
            return await handler(request)
        except errors.ApiError as exc:
            return error_response(exc)

    # --- dispatch -------------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path.startswith(ADMIN_PREFIX):
            return await self._admin(request, parts[1:])
        if path == "/version":
            return _json_response(discovery.version_info())
        if parts and parts[0] in HEALTH_CHECKS:
            return self._health(request, parts)
        if path == "/openapi/v3":
            return _json_response(openapi.root(self.registry))
        if path.startswith("/openapi/v3/"):
            return self._openapi_gv(parts[2:])
        if path == "/openapi/v2":
            accept = request.headers.get("Accept", "")
            if "json" not in accept and accept not in ("", "*/*"):
                raise errors.not_acceptable("application/json")
            return _json_response(openapi.v2(self.registry))
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
                return _json_response(doc)
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
            return _json_response(
                discovery.aggregated(self.registry, legacy), content_type=discovery.AGGREGATED_V2
            )
        if legacy:
            host = request.host
            return _json_response(discovery.api_versions(host))
        return _json_response(discovery.api_group_list(self.registry))

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
        return _json_response(doc)

    async def _resource_request(
        self, request: web.Request, group: str, version: str, rest: list[str]
    ) -> web.StreamResponse:
        if not self.registry.in_group_version(group, version):
            raise errors.path_not_found()
        if not rest:
            return _json_response(discovery.resource_list(self.registry, group, version))
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
            manager=q.get("fieldManager") or _user_agent_manager(request),
            dry_run=q.get("dryRun") == "All",
            field_validation=fv,
        )
        if (
            request.method == "PATCH"
            and request.content_type in (APPLY_PATCH, APPLY_PATCH_CBOR)
            and not q.get("fieldManager")
        ):
            ctx.manager = ""
        accept = request.headers.get("Accept", "")
        method = request.method
        watching = watch_prefix or _bool(q.get("watch"))
        if name is None:
            if method == "GET":
                if watching:
                    return await self._watch(request, rt, version, namespace, name_filter=None)
                return self._list(request, rt, version, namespace)
            if method == "POST":
                if rt.namespaced and namespace is None:
                    raise errors.method_not_allowed()
                body = await self._body(request)
                obj = self.ops.create(rt, version, namespace or "", body, ctx)
                return self._respond(obj, 201, ctx, rt, version, accept)
            if method == "DELETE":
                body = _delete_options(await self._body(request, optional=True), q, ctx)
                out = self.ops.delete_collection(
                    rt,
                    version,
                    namespace,
                    body,
                    ctx,
                    label_selector=q.get("labelSelector"),
                    field_selector=q.get("fieldSelector"),
                )
                return self._respond(out, 200, ctx, rt, version, "")
            raise errors.method_not_allowed()
        ns = namespace or ""
        if watching and method == "GET":
            return await self._watch(request, rt, version, namespace, name_filter=name)
        if sub == "scale":
            return await self._scale(request, rt, version, ns, name, ctx)
        if method == "GET":
            _check_acceptable_or_table(accept)
            obj = self.ops.get(rt, version, ns, name)
            include = q.get("includeObject") or "Metadata"
            return self._respond(obj, 200, ctx, rt, version, accept, include)
        if method == "PUT":
            body = await self._body(request)
            obj = self.ops.update(rt, version, ns, name, body, ctx, subresource=sub)
            return self._respond(obj, 200, ctx, rt, version, accept)
        if method == "PATCH":
            patch = await self._patch_body(request)
            obj, created = self.ops.patch(
                rt,
                version,
                ns,
                name,
                request.content_type,
                patch,
                ctx,
                subresource=sub,
                force=_bool(q.get("force")),
            )
            return self._respond(obj, 201 if created else 200, ctx, rt, version, accept)
        if method == "DELETE" and sub is None:
            body = _delete_options(await self._body(request, optional=True), q, ctx)
            out, _ = self.ops.delete(rt, version, ns, name, body, ctx)
            return self._respond(out, 200, ctx, rt, version, "")
        raise errors.method_not_allowed()

    # --- bodies and responses ------------------------------------------------------------------

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        raw = await _read(request)
        if not raw.strip():
            if optional:
                return None
            raise errors.bad_request("the body of the request was empty")
        ct = request.content_type
        try:
            if ct in ("application/yaml", "application/x-yaml", "text/yaml"):
                return yaml.safe_load(raw)
            if ct == "application/vnd.kubernetes.protobuf":
                return protobuf.decode(raw)
            if ct not in ("application/json", "", "application/octet-stream", "text/plain"):
                raise errors.ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json, application/yaml",
                )
            return json.loads(raw)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc

    async def _patch_body(self, request: web.Request) -> Any:
        raw = await _read(request)
        ct = request.content_type
        if ct not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
            raise errors.ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, {STRATEGIC_PATCH}",
            )
        try:
            if ct == APPLY_PATCH:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from exc

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
            {"Warning": ", ".join(f'299 - "{_escape(w)}"' for w in ctx.warnings)}
            if ctx.warnings
            else None
        )
        if accept and _wants_table(accept) and obj.get("kind") == rt.kind:
            tbl = tables.table(
                rt,
                version,
                [obj],
                metadata={"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                include_object=include_object,
            )
            return _json_response(tbl, status, headers)
        return _json_response(obj, status, headers)

    def _list(
        self, request: web.Request, rt: ResourceType, version: str, namespace: str | None
    ) -> web.Response:
        q = request.query
        accept = request.headers.get("Accept", "")
        _check_acceptable_or_table(accept)
        limit = _int_param(q.get("limit"), "limit")
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
        if _wants_table(accept):
            items = [self.ops.render(rt, version, i, shared=True) for i in out["items"]]
            tbl = tables.table(
                rt,
                version,
                items,
                metadata=out["metadata"],
                include_object=q.get("includeObject") or "Metadata",
            )
            return _json_response(tbl)
        return _json_response(out)

    async def _scale(
        self, request: web.Request, rt: ResourceType, version: str, ns: str, name: str, ctx: Context
    ) -> web.Response:
        obj = self.ops.get(rt, version, ns, name)

        def to_scale(o: Obj) -> Obj:
            md = o["metadata"]
            spec_path = "spec.replicas"
            status_path = "status.replicas"
            selector = ""
            if not rt.builtin:
                sc = rt.version_subresources.get(version, {}).get("scale", {})
                spec_path = sc.get("specReplicasPath", ".spec.replicas").lstrip(".")
                status_path = sc.get("statusReplicasPath", ".status.replicas").lstrip(".")
                sel_path = sc.get("labelSelectorPath")
                if sel_path:
                    found = tables.jsonpath(o, sel_path)
                    selector = found[0] if found and isinstance(found[0], str) else ""
            else:
                selector = selectors.format_label_selector(
                    (o.get("spec") or {}).get("selector")
                ).replace("<none>", "")
            spec_val = tables.jsonpath(o, "." + spec_path)
            status_val = tables.jsonpath(o, "." + status_path)
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    k: md[k]
                    for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                    if k in md
                },
                "spec": {"replicas": spec_val[0] if spec_val else 0},
                "status": {
                    "replicas": status_val[0] if status_val else 0,
                    **({"selector": selector} if selector else {}),
                },
            }

        if request.method == "GET":
            return _json_response(to_scale(obj))
        scale = to_scale(obj)
        if request.method == "PUT":
            new_scale = await self._body(request)
        elif request.method == "PATCH":
            from . import patching

            patch = await self._patch_body(request)
            ct = request.content_type
            if ct == JSON_PATCH:
                new_scale = patching.json_patch(scale, patch)
            elif ct == APPLY_PATCH:
                new_scale = patching.apply_merge(scale, patch)
            else:
                new_scale = patching.merge_patch(scale, patch)
        else:
            raise errors.method_not_allowed()
        rv = ((new_scale or {}).get("metadata") or {}).get("resourceVersion")
        if rv and rv != obj["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.plural, rt.group, name)
        replicas = ((new_scale or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                "Scale",
                "autoscaling",
                name,
                [
                    errors.Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {replicas}: must be greater than or equal to 0",
                        "spec.replicas",
                    )
                ],
            )
        spec_path = "spec.replicas"
        if not rt.builtin:
            spec_path = (
                rt.version_subresources.get(version, {})
                .get("scale", {})
                .get("specReplicasPath", ".spec.replicas")
                .lstrip(".")
            )
        obj = copy.deepcopy(obj)  # ops.get shares the stored object's parts
        node = obj
        keys = spec_path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = replicas
        updated = self.ops.update(rt, version, ns, name, obj, ctx, from_patch=True)
        return _json_response(to_scale(updated))

    # --- watch ---------------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        *,
        name_filter: str | None,
    ) -> web.StreamResponse:
        q = request.query
        accept = request.headers.get("Accept", "")
        label_sel = selectors.parse_label_selector(q.get("labelSelector"))
        field_text = q.get("fieldSelector") or ""
        if name_filter:
            field_text = ",".join(x for x in (field_text, f"metadata.name={name_filter}") if x)
        field_sel = selectors.parse_field_selector(field_text, rt, version)
        bookmarks = _bool(q.get("allowWatchBookmarks"))
        timeout = _int_param(q.get("timeoutSeconds"), "timeoutSeconds")
        deadline = time.monotonic() + (
            timeout if timeout is not None and timeout > 0 else DEFAULT_WATCH_TIMEOUT
        )
        as_table = _wants_table(accept)
        include_object = q.get("includeObject") or "Metadata"
        rv_param = q.get("resourceVersion") or ""
        send_initial = _bool(q.get("sendInitialEvents"))
        if send_initial and (q.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    errors.Cause(
                        "FieldValueForbidden",
                        "Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
                        "NotOlderThan and allowWatchBookmarks",
                        "sendInitialEvents",
                    )
                ],
            )
        since: int | None
        if rv_param in ("", "0") or send_initial:
            since = None
        else:
            try:
                since = int(rv_param)
            except ValueError as exc:
                raise errors.bad_request(
                    f'resourceVersion: Invalid value: "{rv_param}": invalid value, must be an '
                    "integer"
                ) from exc

        def matches(o: Obj | None) -> bool:
            return (
                o is not None
                and selectors.labels_match(label_sel, o)
                and selectors.fields_match(field_sel, o)
            )

        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        headers_sent = False

        def encode(ev_type: str, obj: Obj) -> bytes:
            nonlocal headers_sent
            if ev_type in ("ERROR", "BOOKMARK") or not as_table:
                payload = obj
            else:
                payload = tables.table(
                    rt,
                    version,
                    [obj],
                    metadata={"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                    include_object=include_object,
                    headers=not headers_sent,
                )
                headers_sent = True
            return (
                json.dumps({"type": ev_type, "object": payload}, separators=(",", ":")).encode()
                + b"\n"
            )

        try:
            replay, watcher = self.store.watch(rt.key, namespace, since)
        except errors.ApiError as exc:
            await resp.prepare(request)
            await resp.write(encode("ERROR", exc.status()))
            await resp.write_eof()
            return resp
        initial: list[Obj] = []
        if since is None:
            initial = [o for o in self.store.objects_of(rt.key, namespace) if matches(o)]
        initial_rv = self.store.rv
        task = asyncio.current_task()
        if task is not None:
            self.streams.add(task)
        try:
            await resp.prepare(request)
            for o in initial:
                await resp.write(encode("ADDED", self.ops.render(rt, version, o, shared=True)))
            if send_initial:
                await resp.write(
                    encode("BOOKMARK", self._bookmark(rt, version, initial_rv, initial_end=True))
                )

            def line(ev: Event, kind: str, obj: Obj) -> bytes:
                if as_table or obj is not ev.obj:  # a table, or an object made for this watch
                    return encode(kind, self.ops.render(rt, version, obj, shared=True))
                key = (ev.rv, kind, rt.api_version(version))  # Events: v1 or events.k8s.io/v1
                cached = self._lines.get(key)
                if cached is None:
                    cached = encode(kind, self.ops.render(rt, version, obj, shared=True))
                    self._lines[key] = cached
                    while len(self._lines) > WATCH_LINES_KEPT:
                        del self._lines[next(iter(self._lines))]
                return cached

            for ev in replay:
                out = self._transform(ev, matches)
                if out is not None:
                    await resp.write(line(ev, *out))
            interval = self.api.bookmark_interval
            next_bookmark = time.monotonic() + interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    async with asyncio.timeout(wait):  # not wait_for: see controllers.run
                        live = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark and watcher.queue.empty():
                        await resp.write(
                            encode("BOOKMARK", self._bookmark(rt, version, self.store.rv))
                        )
                        next_bookmark = time.monotonic() + interval
                    continue
                if live is None:
                    break
                out = self._transform(live, matches)
                if out is not None:
                    await resp.write(line(live, *out))
            await resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away: nothing to answer
        finally:
            self.store.unwatch(watcher)
            if task is not None:
                self.streams.discard(task)
        return resp

    @staticmethod
    def _transform(ev: Event, matches: Callable[[Obj | None], bool]) -> tuple[str, Obj] | None:
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if matches(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if matches(ev.obj) else None
        now_in, was_in = matches(ev.obj), matches(ev.old)
        if now_in and was_in:
            return ("MODIFIED", ev.obj)
        if now_in:
            return ("ADDED", ev.obj)
        if was_in and ev.old is not None:
            # leaving the selection: DELETED with the previous content at the new resourceVersion
            old = json.loads(json.dumps(ev.old))
            old["metadata"]["resourceVersion"] = ev.obj["metadata"]["resourceVersion"]
            return ("DELETED", old)
        return None

    @staticmethod
    def _bookmark(rt: ResourceType, version: str, rv: int, *, initial_end: bool = False) -> Obj:
        md: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
        if initial_end:
            md["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": md}

    # --- admin ----------------------------------------------------------------------------------

    async def _admin(self, request: web.Request, parts: list[str]) -> web.Response:
        faults = self.api.faults
        if request.method == "GET" and parts == ["state"]:
            rv, objects = self.store.dump()
            return _json_response(
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
                return _json_response({"closed": faults.close_watches()})
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
        return _json_response({"ok": True})


async def _read(request: web.Request) -> bytes:
    """The request body; over MAX_REQUEST_BYTES a 413 Status, as kube-apiserver answers."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.ApiError(
            413,
            "RequestEntityTooLarge",
            f"Request entity too large: limit is {MAX_REQUEST_BYTES}",
        ) from exc


def _check_acceptable_or_table(accept: str) -> None:
    if _wants_table(accept):
        return
    _check_acceptable(accept)


def _int_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise errors.bad_request(f'{name}: Invalid value: "{value}": must be an integer') from exc


def _escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _delete_options(body: Any, q: Any, ctx: Context) -> Obj:
    """DeleteOptions from the body, completed by the query parameters clients may use instead.
    `dryRun` is read from both: client-go and kubectl send it in the body. A value other than
    `All` is a 422 on DeleteOptions, as kube's ValidateDeleteOptions answers."""
    options: Obj = dict(body) if isinstance(body, dict) else {}
    dry_run = options.get("dryRun") or []
    if not isinstance(dry_run, list) or not all(isinstance(d, str) for d in dry_run):
        raise errors.bad_request("DeleteOptions.dryRun: expected a list of strings")
    if any(value != "All" for value in dry_run):
        # field.NotSupported of the whole list, which Go renders with %#v
        listed = ", ".join(json.dumps(v) for v in dry_run)
        raise errors.invalid(
            "DeleteOptions",
            "meta.k8s.io",
            "",
            [
                errors.Cause(
                    "FieldValueNotSupported",
                    f'Unsupported value: []string{{{listed}}}: supported values: "All"',
                    "dryRun",
                )
            ],
        )
    ctx.dry_run = ctx.dry_run or bool(dry_run)
    if "propagationPolicy" in q:
        options.setdefault("propagationPolicy", q["propagationPolicy"])
    if "orphanDependents" in q:
        options.setdefault("orphanDependents", _bool(q["orphanDependents"]))
    if "gracePeriodSeconds" in q:
        options.setdefault(
            "gracePeriodSeconds", _int_param(q["gracePeriodSeconds"], "gracePeriodSeconds")
        )
    return options


def _bool(value: str | None) -> bool:
    """strconv.ParseBool, as kube-apiserver parses boolean query parameters."""
    if value is None:
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("", "0", "f", "F", "FALSE", "false", "False"):
        return False
    raise errors.bad_request(f'invalid boolean value "{value}"')
