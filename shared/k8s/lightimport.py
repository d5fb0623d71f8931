"""kubernetes-asyncio without its ~1,900 generated modules: import only what is used.

The library's packages `kubernetes_asyncio`, `kubernetes_asyncio.client` and
`kubernetes_asyncio.client.models` import, in their `__init__`, every generated API class and
model, and any import of a submodule (`kubernetes_asyncio.client.api_client`) runs those first.
meshtrust uses none of them (`shared.k8s.client` calls `ApiClient.call_api` with raw responses),
yet they were most of a service's memory and start-up CPU (measured: ~65 MiB of ~110 MiB RSS and
~0.4 s CPU of the agent's imports; docs/k8s.md, "Import footprint").

Importing this module registers those three packages as *lazy packages*, unless something has
imported them already: each is the real package (its own spec, `__path__` and `__file__`) whose
`__init__` has not run yet. Submodules import as usual from `__path__`. A name is looked up on
first use (PEP 562 `__getattr__`): a name the `__init__` imports (`from kubernetes_asyncio.client
import Configuration`, the library's own config loaders do that) is imported from the module the
`__init__` names; a submodule is imported; any other name (`__all__`, `__version__`, a `*`
import) runs the real `__init__` whole first. So every name answers as with an eager import, the
same objects; only what is used is loaded. `shared.k8s` imports this module before anything
else, so it applies to every process that uses the Kubernetes layer.

Valid as long as those `__init__` files only import and assign constants, which is what OpenAPI
Generator writes; tests/k8s/test_k8s_lightimport.py checks it against the installed library.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = ["LAZY_PACKAGES", "install"]

LAZY_PACKAGES = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
)
"""Parents first: a package's parent must be registered before it."""


class _LazyInit:
    """The `__getattr__` of one lazy package."""

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.names: dict[str, tuple[str, str | None]] | None = None
        self.ran_init = False
        self.lock = threading.RLock()

    def __call__(self, name: str) -> Any:
        # Imports run outside the lock (the import system has its own per-module locks; a lock
        # of ours held across an import could deadlock against them). Only building the names
        # and running the __init__, each once, hold it.
        found = self._imported_name(name)
        if found is None and not name.startswith("__"):
            found = self._submodule(name)
        if found is not None:
            setattr(self.module, name, found[0])
            return found[0]
        self._run_init()
        if name not in vars(self.module):
            module = self.module.__name__
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return vars(self.module)[name]

    def _imported_name(self, name: str) -> tuple[Any] | None:
        """What the `__init__` would have bound to `name` by an import, if it imports it."""
        with self.lock:
            if self.names is None:
                self.names = imported_names(self.module)
        where = self.names.get(name)
        if where is None:
            return None
        source, attribute = where
        imported = importlib.import_module(source)
        return (imported if attribute is None else getattr(imported, attribute),)

    def _submodule(self, name: str) -> tuple[Any] | None:
        qualified = f"{self.module.__name__}.{name}"
        if qualified not in sys.modules and importlib.util.find_spec(qualified) is None:
            return None
        return (importlib.import_module(qualified),)

    def _run_init(self) -> None:
        with self.lock:
            if self.ran_init:
                return
            self.ran_init = True
            spec = self.module.__spec__
            assert spec is not None
            assert spec.loader is not None
            spec.loader.exec_module(self.module)


def imported_names(module: ModuleType) -> dict[str, tuple[str, str | None]]:
    """Each name a package's `__init__` binds by an absolute import at its top level, with the
    module it comes from and the attribute (None: the module itself)."""
    spec = module.__spec__
    assert spec is not None
    assert spec.origin is not None
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read(), spec.origin)
    names: dict[str, tuple[str, str | None]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = (alias.name, None)
    return names


def install() -> list[str]:
    """Register the lazy packages not imported yet; the names of those registered."""
    registered: list[str] = []
    for name in LAZY_PACKAGES:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            return registered  # not installed as expected: leave the import system alone
        module = importlib.util.module_from_spec(spec)
        module.__getattr__ = _LazyInit(module)  # type: ignore[method-assign]
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        registered.append(name)
    return registered


install()
