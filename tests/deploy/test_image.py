"""The Dockerfile builds the one image every manifest and compose service runs.

This reads the Dockerfile (tests/containers builds and runs it, with `make test-containers`): the
base image, a build any builder runs offline, a non-root numeric user that matches the
Deployments' runAsUser, the project installed without dev extras, no build secrets, a default
command that exists, and a build context that keeps local state out.
"""

from __future__ import annotations

import re

from deploykit import REPO, compose, containers, our_deployments, project_scripts

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def _stages() -> dict[str, list[str]]:
    """Instructions by stage; the ARGs before the first FROM are the stage ''."""
    stages: dict[str, list[str]] = {"": []}
    current = ""
    for line in INSTRUCTIONS:
        if line.upper().startswith("FROM "):
            current = line.split()[-1]
            stages[current] = [line]
        else:
            stages[current].append(line)
    return stages


def test_every_stage_starts_from_the_base_argument_or_a_stage() -> None:
    stages = _stages()
    assert list(stages) == ["", "build", "kubectl", "runtime", "devtools", "production"]
    # The official image by default; any Python 3.11 image (tests/containers: Debian's).
    assert stages[""] == ["ARG BASE=python:3.11-slim"]
    assert stages["build"][0] == "FROM ${BASE} AS build"
    assert stages["kubectl"][0] == "FROM build AS kubectl"
    assert stages["runtime"][0] == "FROM ${BASE} AS runtime"
    assert stages["devtools"][0] == "FROM runtime AS devtools"
    # The last stage is the default target: `docker build .` gives the production image.
    assert stages["production"] == ["FROM runtime AS production"]


def test_any_builder_can_build_it_offline() -> None:
    # A `# syntax=` line makes BuildKit fetch a frontend image; RUN --mount is BuildKit-only.
    assert not re.search(r"(?im)^#\s*syntax\s*=", DOCKERFILE)
    assert not any("--mount" in line for line in INSTRUCTIONS)
    # Every pip install reads wheelhouse/ and, with OFFLINE=1, nothing else.
    installs = [line for line in INSTRUCTIONS if "pip install" in line]
    assert installs
    assert all("${OFFLINE:+--no-index} --find-links /wheelhouse" in line for line in installs)
    assert "COPY wheelhouse/ /wheelhouse/" in _stages()["build"]
    assert (REPO / "wheelhouse" / "README.md").is_file()  # so that the COPY never misses
    # An imported base image has no PATH: the runtime spells it out in full.
    code = [line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")]
    paths = [line.strip() for line in code if line.strip().startswith("PATH=")]
    assert paths == [
        "PATH=/opt/meshtrust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]
    assert not any("$PATH" in line for line in code)


def test_the_image_runs_as_the_non_root_user_the_deployments_expect() -> None:
    for stage in ("runtime", "devtools"):  # production is runtime as it is
        users = [line.split()[1] for line in _stages()[stage] if line.startswith("USER ")]
        assert users[-1] == "10001:10001", stage
    for doc in our_deployments():
        pod = doc.body["spec"]["template"]["spec"]["securityContext"]
        assert (pod["runAsNonRoot"], pod["runAsUser"], pod["runAsGroup"]) == (True, 10001, 10001)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}  # Pod Security "restricted"
        for container in containers(doc):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_the_project_is_installed_without_dev_extras_and_without_secrets() -> None:
    installs = [line for line in INSTRUCTIONS if "pip install" in line or "pip wheel" in line]
    build = [line for line in _stages()["build"] if "pip install" in line]
    assert len(build) == 1
    assert build[0].startswith("RUN python3 -m venv /opt/meshtrust ")
    assert build[0].endswith(" .")  # the project, no extras
    # The runtime copies the venv, installs nothing, and keeps no wheel.
    assert "COPY --from=build /opt/meshtrust /opt/meshtrust" in _stages()["runtime"]
    assert not any("pip " in line for line in _stages()["runtime"])
    assert not any("[dev" in line or "-e " in line for line in installs)
    assert not any(
        line.startswith(("ARG ", "ENV ")) and re.search(r"(?i)token|passw|secret|key", line)
        for line in INSTRUCTIONS
    )
    assert "--mount=type=secret" not in DOCKERFILE
    assert not re.search(r"(?m)^(COPY|ADD) \. ", DOCKERFILE)  # only what the wheel needs


def test_the_default_command_and_every_command_used_exist() -> None:
    cmd = next(line for line in reversed(_stages()["runtime"]) if line.startswith("CMD "))
    assert cmd == 'CMD ["meshtrust", "--help"]'
    assert "meshtrust" in project_scripts()
    assert not any(line.startswith("ENTRYPOINT") for line in INSTRUCTIONS)  # commands choose
    images = {service.get("image") for service in compose()["services"].values()}
    assert images == {"meshtrust:dev"}
    assert {c["image"] for d in our_deployments() for c in containers(d)} == {"meshtrust:0.1.0"}


def test_the_build_context_leaves_out_local_state_and_keys() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".devstack", "tests", "*.nk", "*.pem", "*.kubeconfig"} <= ignored
    copied = {
        line.split()[1]
        for line in INSTRUCTIONS
        if line.startswith("COPY ") and "--from" not in line
    }
    assert not copied & ignored
