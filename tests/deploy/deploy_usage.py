"""Which Kubernetes (resource, verb) pairs each service uses, read from its source code.

Imported by test_rbac.py through conftest.py (`usage` fixture); see test_rbac.py for why this
is a static analysis and how it refuses to guess.

How it works, per service (`services/<name>/*.py`):

1. **Verbs.** A call `<something with "kube" in it>.<method>(resource, ...)` is a request of the
   `KubeClient` (`shared/k8s/client.py`); `KUBE_METHODS` maps each method to its RBAC verb and
   subresource (and test_rbac.py checks that table against the HTTP method each method sends).
   The `shared.k8s` helpers the services call are mapped in `HELPERS` (`Informer` lists and
   watches, `update_status` reads and PUTs `/status`, an `EventRecorder` creates and patches
   Events).
2. **Resources.** The resource argument is resolved to `shared.k8s.resources.Resource` objects:
   a module-level constant (`SECRETS`, a service's own `REPLICA_SETS = Resource(...)`), a model
   class (`PodBounceDirective` for `get_model`), a subscript of a module-level mapping of
   resources (`_RESOURCES[kind]`: every value), a local variable assigned from one of those,
   or a parameter of the enclosing function.
3. **Wrappers.** A function whose parameter reaches a request (`_get_or_none(kube, resource,
   ...)`, `AgentObjects.get`, `informers_of`) gets a summary "parameter -> verbs"; a call of it
   with a resolvable argument counts as those verbs on that resource. Summaries are computed to
   a fixed point, so wrappers of wrappers work.

Anything it cannot resolve is reported in `Usage.unresolved` (and the test fails on it): a
request whose resource it cannot follow, and any other call that a resource goes into (a new
helper of `shared.k8s`, say). A new kind of call makes the test ask for a rule; it never
silently shrinks the set. Wrappers are matched by name (methods also by receiver), so two
wrappers of one name in one service would share a summary: a union, never less.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.api import v1alpha2 as models
from shared.k8s.resources import EVENTS, ISSUED_CERTIFICATES, POD_BOUNCE_DIRECTIVES, Resource

REPO = Path(__file__).resolve().parents[2]

# KubeClient method -> (RBAC verb, subresource). test_rbac.py checks the HTTP method of each.
KUBE_METHODS: dict[str, tuple[str, str]] = {
    "get": ("get", ""),
    "list": ("list", ""),
    "watch": ("watch", ""),
    "create": ("create", ""),
    "replace": ("update", ""),
    "replace_status": ("update", "status"),
    "patch_merge": ("patch", ""),
    "patch_status": ("patch", "status"),
    "delete": ("delete", ""),
    "get_model": ("get", ""),
    "list_models": ("list", ""),
    "create_model": ("create", ""),
}

# shared.k8s helpers: name -> (index of the resource argument, what they request).
HELPERS: dict[str, tuple[int, tuple[tuple[str, str], ...]]] = {
    "Informer": (1, (("list", ""), ("watch", ""))),
    "update_status": (1, (("get", ""), ("update", "status"))),
    "update_model_status": (1, (("get", ""), ("update", "status"))),
    "read_early": (1, (("get", ""),)),
}

# Constructing an EventRecorder means Events are recorded: create, and patch for repeats
# (shared/k8s/events.py). Where they go is the involved object's namespace.
EVENT_VERBS = (("create", ""), ("patch", ""))

MODELS: dict[str, Resource] = {
    models.IssuedCertificate.__name__: ISSUED_CERTIFICATES,
    models.PodBounceDirective.__name__: POD_BOUNCE_DIRECTIVES,
}


@dataclass(frozen=True, order=True)
class Need:
    """One RBAC permission: `verb` on `group`/`resource[/subresource]`."""

    group: str
    resource: str
    verb: str

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource}"


def need(resource: Resource, verb: str, subresource: str = "") -> Need:
    plural = f"{resource.plural}/{subresource}" if subresource else resource.plural
    return Need(resource.group, plural, verb)


@dataclass
class Usage:
    needs: dict[Need, list[str]] = field(default_factory=dict)  # need -> where (file:line)
    unresolved: list[str] = field(default_factory=list)
    requests: int = 0  # request call sites seen (a sanity figure for the test)

    def add(self, item: Need, where: str) -> None:
        self.needs.setdefault(item, []).append(where)


# A resolved argument: concrete resources, or "parameter <name> of the enclosing function".
@dataclass(frozen=True)
class Param:
    name: str


Call = tuple[Path, Any, "ast.FunctionDef | ast.AsyncFunctionDef | None", ast.Call]
"""A call site: file, module, innermost enclosing function (None at module level), the call."""


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _callee(call: ast.Call) -> tuple[str, str]:
    """(name, receiver source) of a call: `self._kube.get(...)` -> ('get', 'self._kube')."""
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr, ast.unparse(func.value)
    if isinstance(func, ast.Name):
        return func.id, ""
    return "", ""


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = fn.args
    return [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]


class _Service:
    def __init__(
        self, service: str, *, root: Path = REPO / "services", package: str = "services"
    ) -> None:
        self.service = service
        self.root = root.parent
        self.files = sorted((root / service).glob("*.py"))
        self.trees = {path: ast.parse(path.read_text(), str(path)) for path in self.files}
        self.modules = {
            path: importlib.import_module(f"{package}.{service}.{path.stem}") for path in self.files
        }
        # wrapper name -> parameter name -> verbs (a fixed point over the service's functions)
        self.summaries: dict[str, dict[str, set[tuple[str, str]]]] = {}
        self.positions: dict[str, list[str]] = {}
        self.classes: dict[str, str] = {}  # method name -> its class (wrappers that are methods)
        self._calls: list[Call] | None = None

    # --- resolving the resource argument ---------------------------------------------------

    def _resolve(
        self, node: ast.expr, module: Any, fn: ast.FunctionDef | ast.AsyncFunctionDef | None
    ) -> set[Resource] | Param | None:
        if isinstance(node, ast.Name):
            if fn is not None and node.id in _params(fn):
                return Param(node.id)
            if node.id in MODELS:
                return {MODELS[node.id]}
            value = getattr(module, node.id, None)
            if isinstance(value, Resource):
                return {value}
            if fn is not None:  # a local variable: resolve what it was assigned
                for stmt in ast.walk(fn):
                    if isinstance(stmt, ast.Assign) and any(
                        isinstance(t, ast.Name) and t.id == node.id for t in stmt.targets
                    ):
                        return self._resolve(stmt.value, module, fn)
            return None
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            mapping = getattr(module, node.value.id, None)
            if isinstance(mapping, dict) and mapping:
                values = set(mapping.values())
                if all(isinstance(v, Resource) for v in values):
                    return values
        return None

    @staticmethod
    def _argument(call: ast.Call, index: int, name: str) -> ast.expr | None:
        for keyword in call.keywords:
            if keyword.arg == name:
                return keyword.value
        if len(call.args) > index and not isinstance(call.args[index], ast.Starred):
            return call.args[index]
        return None

    # --- what one call requests --------------------------------------------------------------

    def _call_verbs(
        self, call: ast.Call
    ) -> tuple[ast.expr | None, tuple[tuple[str, str], ...], bool] | None:
        """(resource argument, verbs, is a KubeClient/helper request) or None (not a request)."""
        name, receiver = _callee(call)
        if name in KUBE_METHODS and "kube" in receiver.lower():
            return self._argument(call, 0, "resource"), (KUBE_METHODS[name],), True
        if name in HELPERS:
            index, verbs = HELPERS[name]
            argument = self._argument(call, index, "resource" if index else "kube")
            if argument is None:
                argument = self._argument(call, index, "model")
            return argument, verbs, True
        return None  # not a request (wrapper calls are handled per parameter)

    def _walk_calls(self) -> list[Call]:
        """Every call of the service with its module and innermost enclosing function."""
        if self._calls is None:
            self._calls = []
            for path, tree in self.trees.items():
                owner: dict[int, ast.FunctionDef | ast.AsyncFunctionDef] = {}
                for fn in _functions(tree):  # outer before inner: the innermost wins
                    for node in ast.walk(fn):
                        owner[id(node)] = fn
                self._calls += [
                    (path, self.modules[path], owner.get(id(node)), node)
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Call)
                ]
        return self._calls

    def _is_wrapper_call(self, call: ast.Call) -> bool:
        """Whether `call` calls one of the summarised wrappers.

        By name, and for a method also by receiver: `self.get(...)` inside its class, or a
        receiver whose last name is a word of the class name (`self._objects.get` ->
        `AgentObjects.get`). Without that, every `dict.get` would look like `AgentObjects.get`.
        """
        name, receiver = _callee(call)
        if name not in self.summaries:
            return False
        owner = self.classes.get(name)
        if owner is None:
            return receiver == ""
        last = receiver.rsplit(".", 1)[-1].strip("_").lower()
        words = {w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", owner)} | {owner.lower()}
        return last == "self" or last in words

    def _wrapper_args(
        self, call: ast.Call, name: str
    ) -> Iterator[tuple[ast.expr, set[tuple[str, str]]]]:
        positions = self.positions[name]
        receiver = _callee(call)[1]
        offset = 1 if positions and positions[0] in ("self", "cls") and receiver else 0
        for param, verbs in self.summaries[name].items():
            index = positions.index(param) - offset
            argument = self._argument(call, index, param)
            if argument is not None:
                yield argument, verbs

    def analyse(self) -> Usage:
        # 1. wrapper summaries, to a fixed point
        for tree in self.trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                            self.classes[item.name] = node.name
        changed = True
        while changed:
            changed = False
            for _path, module, fn, call in self._walk_calls():
                if fn is None:
                    continue
                found: list[tuple[ast.expr, set[tuple[str, str]]]] = []
                request = self._call_verbs(call)
                if request is not None and request[0] is not None:
                    found.append((request[0], set(request[1])))
                name = _callee(call)[0]
                if self._is_wrapper_call(call) and name != fn.name:
                    found += list(self._wrapper_args(call, name))
                for argument, verbs in found:
                    resolved = self._resolve(argument, module, fn)
                    if isinstance(resolved, Param):
                        summary = self.summaries.setdefault(fn.name, {})
                        self.positions[fn.name] = _params(fn)
                        before = set(summary.get(resolved.name, set()))
                        summary.setdefault(resolved.name, set()).update(verbs)
                        changed |= summary[resolved.name] != before
        # 2. the needs
        usage = Usage()
        for path, module, fn, call in self._walk_calls():
            where = f"{path.relative_to(self.root)}:{call.lineno}"
            name, _receiver = _callee(call)
            if name == "EventRecorder":
                for verb, sub in EVENT_VERBS:
                    usage.add(need(EVENTS, verb, sub), where)
                continue
            request = self._call_verbs(call)
            pairs: list[tuple[ast.expr | None, set[tuple[str, str]]]] = []
            if request is not None:
                usage.requests += 1
                pairs.append((request[0], set(request[1])))
            elif self._is_wrapper_call(call) and (fn is None or name != fn.name):
                pairs += list(self._wrapper_args(call, name))
            else:
                # Not a request we know: if a resource goes into it, it may be a new helper
                # that makes requests. Say so rather than guess.
                for argument in [*call.args, *(k.value for k in call.keywords)]:
                    if isinstance(self._resolve(argument, module, fn), set):
                        usage.unresolved.append(
                            f"{where}: a resource goes into {ast.unparse(call.func)}(), which "
                            "is neither a KubeClient request, a known helper nor a wrapper"
                        )
            for argument, verbs in pairs:
                resolved = None if argument is None else self._resolve(argument, module, fn)
                if isinstance(resolved, Param):
                    continue  # counted where the wrapper is called
                if resolved is None:
                    source = ast.unparse(call)[:120]
                    usage.unresolved.append(f"{where}: {source}")
                    continue
                for resource in resolved:
                    for verb, sub in verbs:
                        usage.add(need(resource, verb, sub), where)
        return usage


def usage_of(service: str, *, root: Path = REPO / "services", package: str = "services") -> Usage:
    """Every (resource, verb) the service `services/<service>` requests from Kubernetes
    (`root`/`package`: where to find it, for the analysis' own tests)."""
    return _Service(service, root=root, package=package).analyse()
