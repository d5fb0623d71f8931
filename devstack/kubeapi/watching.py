"""Watch streams, as kube-apiserver serves them: a chunked response of one JSON event per line,
the initial ADDED events (or none, from a resourceVersion), `sendInitialEvents` with its closing
BOOKMARK, periodic BOOKMARKs, label and field selectors (an object leaving the selection is a
DELETED event), `as=Table` events, `timeoutSeconds`, and a 410 ERROR event for a
resourceVersion already compacted away.

The query is parsed once into `WatchParams`; `Watch` writes one stream.  Not here: the history
and its compaction (store.py), routing (server.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shared.api.meta import Obj

from . import errors, selectors, tables
from .operations import Operations
from .resources import ResourceType
from .selectors import FieldRequirement, LabelSelector
from .store import Event, Watcher
from .wire import bool_param, int_param, wants_table

DEFAULT_WATCH_TIMEOUT = 1800.0  # seconds; kube-apiserver's --min-request-timeout
WATCH_LINES_KEPT = 1024  # encoded watch lines remembered (see `LineCache`)

LineCache = dict[tuple[int, str, str], bytes]
"""Watch lines already encoded, by (resourceVersion, event type, apiVersion): every watcher of a
kind gets the same bytes for one write, so it is serialised once."""


@dataclass(frozen=True)
class WatchParams:
    """A watch request's query, checked."""

    labels: LabelSelector
    fields: list[FieldRequirement]
    bookmarks: bool
    """allowWatchBookmarks."""
    deadline: float
    """When (monotonic) the stream ends: timeoutSeconds, else DEFAULT_WATCH_TIMEOUT."""
    as_table: bool
    include_object: str
    since: int | None
    """The resourceVersion to replay from; None: start with the current objects."""
    send_initial: bool

    @classmethod
    def parse(
        cls,
        q: Mapping[str, str],
        accept: str,
        rt: ResourceType,
        version: str,
        *,
        name_filter: str | None,
    ) -> WatchParams:
        field_text = q.get("fieldSelector") or ""
        if name_filter:
            field_text = ",".join(x for x in (field_text, f"metadata.name={name_filter}") if x)
        labels = selectors.parse_label_selector(q.get("labelSelector"))
        fields = selectors.parse_field_selector(field_text, rt, version)
        bookmarks = bool_param(q.get("allowWatchBookmarks"))
        timeout = int_param(q.get("timeoutSeconds"), "timeoutSeconds")
        deadline = time.monotonic() + (
            timeout if timeout is not None and timeout > 0 else DEFAULT_WATCH_TIMEOUT
        )
        send_initial = bool_param(q.get("sendInitialEvents"))
        if send_initial and (q.get("resourceVersionMatch") != "NotOlderThan" or not bookmarks):
            cause = errors.Cause(
                "FieldValueForbidden",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
                "NotOlderThan and allowWatchBookmarks",
                "sendInitialEvents",
            )
            raise errors.invalid("ListOptions", "meta.k8s.io", "", [cause])
        return cls(
            labels=labels,
            fields=fields,
            bookmarks=bookmarks,
            deadline=deadline,
            as_table=wants_table(accept),
            include_object=q.get("includeObject") or "Metadata",
            since=None if send_initial else _since(q.get("resourceVersion") or ""),
            send_initial=send_initial,
        )

    def matches(self, o: Obj | None) -> bool:
        return (
            o is not None
            and selectors.labels_match(self.labels, o)
            and selectors.fields_match(self.fields, o)
        )

    def transform(self, ev: Event) -> tuple[str, Obj] | None:
        """The event this watch sees for a write, if any."""
        if ev.type in ("ADDED", "DELETED"):
            return (ev.type, ev.obj) if self.matches(ev.obj) else None
        now_in, was_in = self.matches(ev.obj), self.matches(ev.old)
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


def _since(rv_param: str) -> int | None:
    if rv_param in ("", "0"):
        return None
    try:
        return int(rv_param)
    except ValueError as exc:
        raise errors.bad_request(
            f'resourceVersion: Invalid value: "{rv_param}": invalid value, must be an integer'
        ) from exc


def bookmark(rt: ResourceType, version: str, rv: int, *, initial_end: bool = False) -> Obj:
    md: Obj = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        md["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version(version), "metadata": md}


class Watch:
    """One watch stream of `rt` in `version`, in `namespace` (None: all)."""

    def __init__(
        self,
        ops: Operations,
        rt: ResourceType,
        version: str,
        namespace: str | None,
        params: WatchParams,
        *,
        lines: LineCache,
        bookmark_interval: float,
    ) -> None:
        self.ops = ops
        self.rt = rt
        self.version = version
        self.namespace = namespace
        self.params = params
        self.lines = lines
        self.bookmark_interval = bookmark_interval
        self.resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        self.resp.enable_chunked_encoding()
        self._headers_sent = False

    async def serve(self, request: web.Request, streams: set[asyncio.Task[Any]]) -> None:
        """Write the stream until its deadline, the store closing it, or the client leaving;
        the task is in `streams` meanwhile."""
        store, p = self.ops.store, self.params
        try:
            replay, watcher = store.watch(self.rt.key, self.namespace, p.since)
        except errors.ApiError as exc:
            await self.resp.prepare(request)
            await self.resp.write(self.encode("ERROR", exc.status()))
            await self.resp.write_eof()
            return
        initial: list[Obj] = []
        if p.since is None:
            initial = [o for o in store.objects_of(self.rt.key, self.namespace) if p.matches(o)]
        initial_rv = store.rv
        task = asyncio.current_task()
        if task is not None:
            streams.add(task)
        try:
            await self.resp.prepare(request)
            await self._initial(initial, initial_rv)
            for ev in replay:
                await self._send(ev)
            await self._follow(watcher)
            await self.resp.write_eof()
        except ConnectionResetError:
            pass  # the client went away: nothing to answer
        finally:
            store.unwatch(watcher)
            if task is not None:
                streams.discard(task)

    async def _initial(self, initial: list[Obj], initial_rv: int) -> None:
        rt, version = self.rt, self.version
        for o in initial:
            await self.resp.write(
                self.encode("ADDED", self.ops.render(rt, version, o, shared=True))
            )
        if self.params.send_initial:
            end = bookmark(rt, version, initial_rv, initial_end=True)
            await self.resp.write(self.encode("BOOKMARK", end))

    async def _follow(self, watcher: Watcher) -> None:
        """Live events until the deadline or the store's end of the watch (None), with a
        BOOKMARK every `bookmark_interval` seconds when allowed and nothing is queued."""
        p, interval = self.params, self.bookmark_interval
        next_bookmark = time.monotonic() + interval
        while True:
            now = time.monotonic()
            if now >= p.deadline:
                return
            wait = p.deadline - now
            if p.bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                async with asyncio.timeout(wait):  # not wait_for: see Controllers.run
                    live = await watcher.queue.get()
            except TimeoutError:
                if p.bookmarks and time.monotonic() >= next_bookmark and watcher.queue.empty():
                    mark = bookmark(self.rt, self.version, self.ops.store.rv)
                    await self.resp.write(self.encode("BOOKMARK", mark))
                    next_bookmark = time.monotonic() + interval
                continue
            if live is None:
                return
            await self._send(live)

    async def _send(self, ev: Event) -> None:
        out = self.params.transform(ev)
        if out is not None:
            await self.resp.write(self._line(ev, *out))

    def _line(self, ev: Event, kind: str, obj: Obj) -> bytes:
        rt, version = self.rt, self.version
        if self.params.as_table or obj is not ev.obj:  # a table, or an object made for this watch
            return self.encode(kind, self.ops.render(rt, version, obj, shared=True))
        key = (ev.rv, kind, rt.api_version(version))  # Events: v1 or events.k8s.io/v1
        cached = self.lines.get(key)
        if cached is None:
            cached = self.encode(kind, self.ops.render(rt, version, obj, shared=True))
            self.lines[key] = cached
            while len(self.lines) > WATCH_LINES_KEPT:
                del self.lines[next(iter(self.lines))]
        return cached

    def encode(self, ev_type: str, obj: Obj) -> bytes:
        """One line: the event, its object as a Table for `as=Table` watches (the column
        headers only on the first)."""
        if ev_type in ("ERROR", "BOOKMARK") or not self.params.as_table:
            payload = obj
        else:
            payload = tables.table(
                self.rt,
                self.version,
                [obj],
                metadata={"resourceVersion": obj["metadata"].get("resourceVersion", "")},
                include_object=self.params.include_object,
                headers=not self._headers_sent,
            )
            self._headers_sent = True
        return json.dumps({"type": ev_type, "object": payload}, separators=(",", ":")).encode() + (
            b"\n"
        )
