"""Reading deploy/, docker-compose.yml and pyproject.toml, and kubectl, for tests/deploy.

Everything here reads files; nothing is written outside tmp_path. The examples that carry the
`CLUSTER` placeholder are rendered for a named cluster first, as the demo does
(`devstack/demo.py`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from shared.runtime import MeshtrustSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
PLACEHOLDER = "CLUSTER"


@dataclass(frozen=True)
class Document:
    path: Path
    index: int
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace")

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}#{self.index} {self.kind}/{self.name}"


def render(text: str, cluster: str) -> str:
    return text.replace(PLACEHOLDER, cluster)


def manifest_files() -> list[Path]:
    """Every YAML manifest under deploy/ but deploy/monitoring (a Prometheus rules file, and a
    PrometheusRule whose CRD is the Prometheus Operator's: tests/monitoring checks them)."""
    monitoring = DEPLOY / "monitoring"
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.is_file() and monitoring not in p.parents)


def documents(path: Path, *, cluster: str = "east") -> list[Document]:
    text = path.read_text()
    if path.parent.name == "examples" and PLACEHOLDER in text:
        # Only the examples carry the placeholder; elsewhere CLUSTER is part of names such as
        # MESHTRUST_AGENT_CLUSTER.
        text = render(text, cluster)
    return [
        Document(path, i, body)
        for i, body in enumerate(yaml.safe_load_all(text))
        if body is not None
    ]


def all_documents(*, cluster: str = "east") -> list[Document]:
    return list(_all_documents(cluster))


@functools.cache
def _all_documents(cluster: str) -> tuple[Document, ...]:
    return tuple(doc for path in manifest_files() for doc in documents(path, cluster=cluster))


def project_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: console script -> 'module:function'."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(data["project"]["scripts"])


def settings_class_of(script: str) -> type[MeshtrustSettings] | None:
    """The settings class of the service a console script starts: the MeshtrustSettings
    subclass defined in `<package>/settings.py` next to the script's module (None if none)."""
    target = project_scripts()[script]
    package = target.split(":", 1)[0].rsplit(".", 1)[0]
    try:
        module = importlib.import_module(f"{package}.settings")
    except ModuleNotFoundError:
        return None
    found = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, MeshtrustSettings)
        and value.__module__ == module.__name__
    ]
    assert len(found) == 1, f"{module.__name__} should define one settings class: {found}"
    return found[0]


def _prefix(cls: type[MeshtrustSettings]) -> str:
    return str(cls.model_config.get("env_prefix") or "")


def setting_variables(cls: type[MeshtrustSettings]) -> set[str]:
    """Every environment variable `cls` reads: its prefix + field name for its own fields, and
    the same for each settings group composed into it as a field (MESHTRUST_NATS_*, ...)."""
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, MeshtrustSettings):
            names |= setting_variables(annotation)
            continue
        names.add(f"{_prefix(cls)}{name}".upper())
        for alias in (info.alias, info.validation_alias):
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):  # e.g. a setting's older, single-value name
                names |= {
                    c.upper()
                    for c in alias.choices
                    if isinstance(c, str) and c.upper().startswith("MESHTRUST_")
                }
    return names


@dataclass
class Kubectl:
    kubeconfig: Path
    cache: Path

    async def run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            "--kubeconfig",
            str(self.kubeconfig),
            "--cache-dir",
            str(self.cache),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode() if stdin is not None else None), timeout=60
        )
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def __call__(self, *args: str, stdin: str | None = None) -> str:
        rc, out, err = await self.run(*args, stdin=stdin)
        assert rc == 0, f"kubectl {' '.join(args)} failed ({rc}): {err}"
        return out


# --- docker-compose.yml and the Deployments -----------------------------------------------


def compose() -> dict[str, Any]:
    """docker-compose.yml as compose reads it (YAML merge keys and anchors resolved)."""
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, `${VAR:-default}` replaced by its default."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _compose_default(str(v)) for k, v in env.items()}


def _compose_default(value: str) -> str:
    match = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", value)
    return match.group(2) if match else value


def compose_variable(value: str) -> str | None:
    """The variable a `${VAR:-default}` value reads, or None for a literal."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", value)
    return match.group(1) if match else None


def deployments(*, cluster: str = "east") -> list[Document]:
    return [doc for doc in all_documents(cluster=cluster) if doc.kind == "Deployment"]


def our_deployments(*, cluster: str = "east") -> list[Document]:
    """The Deployments of deploy/management and deploy/remote (not the examples' workloads)."""
    return [
        doc
        for doc in deployments(cluster=cluster)
        if doc.path.parent.name in ("management", "remote")
    ]


def containers(doc: Document) -> list[dict[str, Any]]:
    return list(doc.body["spec"]["template"]["spec"]["containers"])
