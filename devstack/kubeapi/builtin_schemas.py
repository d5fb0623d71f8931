"""The OpenAPI schemas of the built-in kinds, for `kubectl explain` and kubectl's patch logic.

They are kube's own (the v1.37 definitions that kubernetes-validate ships, with descriptions,
`x-kubernetes-patch-*` and `x-kubernetes-group-version-kind`), reduced to what the served kinds
reference and stored as package data (`builtin-openapi.json.gz`). The emulator reads that file
the first time a client asks for OpenAPI, never at start, and never imports kubernetes-validate
(a development dependency): `python -m devstack.kubeapi.builtin_schemas` regenerates the file
from it, e.g. after a version bump.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import sys
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from shared.api.meta import Obj

DATA = "builtin-openapi.json.gz"
SOURCE_VERSION = "v1.37.0-local"
# the definitions of the served built-in kinds, and what their operations use
ROOTS = (
    "io.k8s.api.core.v1.Namespace",
    "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.ConfigMap",
    "io.k8s.api.core.v1.Pod",
    "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.Event",
    "io.k8s.api.events.v1.Event",
    "io.k8s.api.coordination.v1.Lease",
    "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.ReplicaSet",
    "io.k8s.api.autoscaling.v1.Scale",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
)
REF_PREFIX = "#/components/schemas/"


@functools.cache
def definitions() -> Obj:
    """Definition name -> OpenAPI v3 schema (refs as `#/components/schemas/...`)."""
    raw = resources.files(__package__).joinpath(DATA).read_bytes()
    loaded: Obj = json.loads(gzip.decompress(raw))
    return loaded


def closure(names: Iterable[str]) -> Obj:
    """`names` and every definition they reference, transitively (those that exist)."""
    defs = definitions()
    out: Obj = {}
    pending = [n for n in names if n in defs]
    while pending:
        name = pending.pop()
        if name in out:
            continue
        out[name] = defs[name]
        pending.extend(r for r in _refs(defs[name]) if r in defs and r not in out)
    return out


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref[len(REF_PREFIX) :]
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


# --- regeneration (development only) -----------------------------------------------------------


def _to_openapi(node: Any, *, top: bool = False) -> Any:
    """JSON Schema as openapi2jsonschema wrote it -> OpenAPI v3 as kube-apiserver serves it:
    `$defs` refs, `["T", "null"]` types, and the apiVersion/kind enums it added, undone."""
    if isinstance(node, list):
        return [_to_openapi(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str):
            out[k] = REF_PREFIX + v.rsplit("/", 1)[-1]
        elif k == "type" and isinstance(v, list):
            kinds = [t for t in v if t != "null"]
            if kinds:
                out[k] = kinds[0]
        elif k == "properties" and isinstance(v, dict):
            props = {name: _to_openapi(p) for name, p in v.items()}
            if top:
                for name in ("apiVersion", "kind"):
                    if isinstance(props.get(name), dict):
                        props[name].pop("enum", None)
            out[k] = props
        else:
            out[k] = _to_openapi(v)
    return out


def regenerate(source: Path, target: Path) -> int:
    """Write the closure of ROOTS from kubernetes-validate's `_definitions.json`; its size."""
    defs = json.loads(source.read_text())["$defs"]
    converted = {name: _to_openapi(schema, top=True) for name, schema in defs.items()}
    wanted: Obj = {}
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name in wanted or name not in converted:
            continue
        wanted[name] = converted[name]
        pending.extend(_refs(converted[name]))
    data = gzip.compress(json.dumps(wanted, sort_keys=True).encode(), mtime=0)
    target.write_bytes(data)
    return len(data)


def main() -> None:
    # kubernetes-validate is a development dependency: located, never imported
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or spec.origin is None:
        sys.exit("kubernetes-validate is not installed (pip install -e '.[dev]')")
    root = Path(spec.origin).parent / "kubernetes-json-schema" / SOURCE_VERSION
    size = regenerate(root / "_definitions.json", Path(__file__).parent / DATA)
    print(f"wrote {DATA} ({size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
