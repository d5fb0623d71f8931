"""Pruning, defaulting and validation of an object on its way to the store: unknown fields
(`fieldValidation`), the name and metadata, a built-in kind's own rules (`builtins.prepare`, a
CRD's `crds.prepare`), a custom resource's schema.

Not here: when each runs (the write pipeline, writes.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.api.meta import Obj

from . import builtins, crds, errors, schema
from .errors import Cause
from .resources import ResourceType

if TYPE_CHECKING:
    from .context import Context
    from .operations import Operations


def validate_common(
    ops: Operations, rt: ResourceType, version: str, obj: Obj, old: Obj | None, ctx: Context
) -> None:
    unknown_fields(rt, version, builtins.prune_known_fields(rt, obj), ctx)
    md = obj["metadata"]
    causes = [] if old is not None else builtins.validate_name(rt, md["name"])
    causes += builtins.validate_metadata(md)
    if rt.builtin:
        if rt.kind == "CustomResourceDefinition":
            causes += crds.prepare(obj, old, ops.clock())
        else:
            causes += builtins.prepare(rt, obj, old)
    else:
        causes += custom_resource(rt, version, obj, ctx, old)
    if causes:
        raise errors.invalid(rt.kind, rt.group, md.get("name", ""), causes)


def custom_resource(
    rt: ResourceType, version: str, obj: Obj, ctx: Context, old: Obj | None = None
) -> list[Cause]:
    """Prune, default and validate a custom resource against its version's schema (an
    update's unchanged top-level fields are not validated again: `schema.validate`)."""
    sch = rt.schemas.get(version)
    if sch is None:
        return []
    pruned_obj, pruned = schema.prune_and_default(obj, sch)
    unknown_fields(rt, version, pruned, ctx)
    obj.clear()
    obj.update(pruned_obj)
    return schema.validate(obj, sch, old)


def unknown_fields(rt: ResourceType, version: str, pruned: list[str], ctx: Context) -> None:
    """fieldValidation: Strict rejects dropped fields, Warn reports them, Ignore is silent."""
    if pruned and ctx.field_validation == "Strict":
        fields = ", ".join(f'unknown field "{p}"' for p in pruned)
        raise errors.bad_request(
            f'{rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
            f"strict decoding error: {fields}"
        )
    if pruned and ctx.field_validation == "Warn":
        ctx.warnings.extend(f'unknown field "{p}"' for p in pruned)
