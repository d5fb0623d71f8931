"""The HTTP side of a request as kube-apiserver speaks it: JSON responses, content negotiation
(JSON, YAML, protobuf; `as=Table`), request bodies and patches, query parameters (booleans as
strconv.ParseBool, integers, DeleteOptions), and warning headers.

Not here: routing and the verbs (server.py), watch streams (watching.py).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from shared.api.meta import Obj

from . import errors, protobuf
from .operations import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    Context,
)

MAX_REQUEST_BYTES = 3 * 1024 * 1024  # kube-apiserver's MaxRequestBodyBytes


def json_response(
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
    return json_response(err.status(), err.code, err.headers)


def wants_table(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False


def check_acceptable(accept: str) -> None:
    if not accept:
        return
    kinds = [p.split(";")[0].strip() for p in accept.split(",")]
    if any(
        k in ("*/*", "application/*", "application/json", "application/yaml", "") for k in kinds
    ):
        return
    raise errors.not_acceptable("application/json, application/yaml")


def user_agent_manager(request: web.Request) -> str:
    ua = request.headers.get("User-Agent", "")
    return ua.split("/", 1)[0] if ua else "unknown"


async def read_body(request: web.Request, *, optional: bool = False) -> Any:
    raw = await read(request)
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


async def read_patch(request: web.Request) -> Any:
    raw = await read(request)
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


async def read(request: web.Request) -> bytes:
    """The request body; over MAX_REQUEST_BYTES a 413 Status, as kube-apiserver answers."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.ApiError(
            413,
            "RequestEntityTooLarge",
            f"Request entity too large: limit is {MAX_REQUEST_BYTES}",
        ) from exc


def check_acceptable_or_table(accept: str) -> None:
    if wants_table(accept):
        return
    check_acceptable(accept)


def int_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise errors.bad_request(f'{name}: Invalid value: "{value}": must be an integer') from exc


def escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def delete_options(body: Any, q: Any, ctx: Context) -> Obj:
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
        options.setdefault("orphanDependents", bool_param(q["orphanDependents"]))
    if "gracePeriodSeconds" in q:
        options.setdefault(
            "gracePeriodSeconds", int_param(q["gracePeriodSeconds"], "gracePeriodSeconds")
        )
    return options


def bool_param(value: str | None) -> bool:
    """strconv.ParseBool, as kube-apiserver parses boolean query parameters."""
    if value is None:
        return False
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("", "0", "f", "F", "FALSE", "false", "False"):
        return False
    raise errors.bad_request(f'invalid boolean value "{value}"')
