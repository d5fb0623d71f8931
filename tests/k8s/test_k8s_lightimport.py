"""`shared.k8s.lightimport`: the services import kubernetes-asyncio without its generated API
classes and models, and every name of the library still answers as with an eager import.

Each check runs in a fresh interpreter: what a process imports is decided once, at its start.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shared.k8s.lightimport import LAZY_PACKAGES

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models.")


def run_python(code: str) -> object:
    """Run `code` in a fresh interpreter; what it printed last, parsed as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("service", ["agent", "bouncer", "issuer"])
def test_a_service_does_not_import_the_generated_classes(service: str) -> None:
    loaded = run_python(
        f"""
        import json, sys
        import services.{service}.__main__
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))))
        """
    )
    assert isinstance(loaded, list)
    assert "kubernetes_asyncio.client.api_client" in loaded  # it does use the library
    assert [m for m in loaded if m.startswith(GENERATED)] == []
    assert len(loaded) < 30  # eagerly: ~1,900 modules


def test_every_name_answers_as_with_an_eager_import() -> None:
    found = run_python(
        """
        import asyncio, json, sys
        import shared.k8s
        from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api, V1Pod
        import kubernetes_asyncio.client.models as models
        lazily = {"V1Pod": V1Pod, "CoreV1Api": CoreV1Api, "Configuration": Configuration}
        partial = len([m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")])

        async def deserialized():  # the library's own lookup of a model class by its name
            async with ApiClient() as api:
                pod = api._ApiClient__deserialize({"metadata": {"name": "p"}}, "V1Pod")
                return type(pod) is V1Pod and pod.metadata.name == "p"

        ok = asyncio.run(deserialized())
        import kubernetes_asyncio, kubernetes_asyncio.client as client
        every = all(hasattr(client, name) for name in client.__all__)  # runs the __init__
        same = all(getattr(client, n) is v for n, v in lazily.items()) and models.V1Pod is V1Pod
        try:
            client.NoSuchName
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({
            "partial": partial, "deserialized": ok, "every": every, "same": same,
            "count": len(client.__all__), "version": kubernetes_asyncio.__version__,
            "missing": missing,
        }))
        """
    )
    assert isinstance(found, dict)
    assert 0 < found["partial"] < 50  # only the models used (V1Pod and its parts)
    assert found["deserialized"] is True
    assert found["every"] is True
    assert found["count"] > 500
    assert found["same"] is True
    assert found["version"].startswith("36.")
    assert "NoSuchName" in found["missing"]


def test_an_eager_import_before_is_left_alone() -> None:
    found = run_python(
        """
        import json, sys
        import kubernetes_asyncio.client
        from shared.k8s import lightimport
        models = [m for m in sys.modules if m.startswith("kubernetes_asyncio.client.models.")]
        print(json.dumps({"registered": lightimport.install(), "models": len(models)}))
        """
    )
    assert isinstance(found, dict)
    assert found["registered"] == []
    assert found["models"] > 500


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_the_library_inits_only_import_and_assign_constants(package: str) -> None:
    """What the lazy packages skip until a name needs it: if an upgrade of the library puts
    anything else in these `__init__` files, this module must be looked at again."""
    spec = importlib.util.find_spec(package)
    assert spec is not None
    assert spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Expr | ast.Assign):
            assert _constant(node.value), ast.unparse(node)
            continue
        pytest.fail(f"{package}/__init__.py: {ast.unparse(node)[:200]}")


def _constant(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.List | ast.Tuple):
        return all(_constant(e) for e in node.elts)
    return False


def test_threads_resolving_names_at_once_get_the_same_objects() -> None:
    found = run_python(
        """
        import json, threading
        import shared.k8s
        import kubernetes_asyncio.client as client
        names = ["V1Pod", "V1Secret", "CoreV1Api", "__all__", "Configuration", "V1ObjectMeta"]
        seen, errors, start = [], [], threading.Barrier(8)

        def resolve():
            start.wait()
            try:
                seen.append([id(getattr(client, n)) for n in names])
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=resolve) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"errors": errors, "distinct": len({tuple(s) for s in seen})}))
        """
    )
    assert found == {"errors": [], "distinct": 1}
