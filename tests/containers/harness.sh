#!/usr/bin/env bash
# `make test-containers`: build the image and run the container tests (tests/containers/).
#
# 1. Docker: the user's (DOCKER_HOST, or a daemon answering on the default socket) if there is
#    one. Otherwise, as root (CI here), Debian's docker.io, docker-compose and debootstrap are
#    installed if missing and a private dockerd is started on its own socket under $STATE
#    (default /var/tmp/meshtrust-docker, kept between runs so that the base image stays cached),
#    and stopped at the end, also on failure or interrupt.
# 2. The base image: BASE if given; with the private dockerd (no registry reachable) a Debian
#    bookworm with Python 3.11 made by debootstrap and `docker import`, built once per machine;
#    with the user's Docker the Dockerfile's default (python:3.11-slim).
# 3. The wheelhouse (wheelhouse/, `make wheelhouse`), built on the host.
# 4. The images meshtrust:dev (devtools) and meshtrust:0.1.0 (the default target), classic builder,
#    --network host and OFFLINE=1: the build reads only the context and the wheelhouse.
# 5. pytest -m containers tests/containers.
#
# Every step prints how long it took. Deliberately not done here: pushing anything, pulling
# anything, touching a Docker daemon it did not start beyond building and running its images.
set -euo pipefail
cd "$(dirname "$0")/../.."

STATE=${MESHTRUST_DOCKER_STATE:-/var/tmp/meshtrust-docker}
BASE_IMAGE=meshtrust-base:bookworm
BIN=${VENV:-.venv}/bin
declare -a TIMINGS=()
started_all=$(date +%s.%N)
step_started=""
step_name=""

say() { printf '[test-containers] %s\n' "$*"; }
step() {
    step_done
    step_name=$1
    step_started=$(date +%s.%N)
    say "== $step_name"
}
step_done() {
    if [[ -n $step_name ]]; then
        local took
        took=$(awk -v a="$step_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        TIMINGS+=("$(printf '%7ss  %s' "$took" "$step_name")")
        say "   $step_name: ${took}s"
        step_name=""
    fi
}
report() {
    local rc=$?
    step_done
    stop_private_dockerd
    say "timings:"
    for line in "${TIMINGS[@]}"; do say "$line"; done
    local total
    total=$(awk -v a="$started_all" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    say "$(printf '%7ss  total (exit %s)' "$total" "$rc")"
    exit "$rc"
}
trap report EXIT
trap 'exit 130' INT TERM

# --- 1. Docker ------------------------------------------------------------------------------
PRIVATE_PID=""
stop_private_dockerd() {
    [[ -n $PRIVATE_PID ]] || return 0
    step "stop the private dockerd (pid $PRIVATE_PID)"
    kill -TERM "$PRIVATE_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$PRIVATE_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$PRIVATE_PID" 2>/dev/null; then
        say "dockerd did not stop within 60 s: SIGKILL"
        kill -KILL "$PRIVATE_PID" 2>/dev/null || true
    fi
    # dockerd leaves its default network namespace bind-mounted under the exec root: unmount
    # what it left, so that the state directory can be deleted (a cold run starts that way).
    awk -v root="$STATE/exec/" 'index($2, root) == 1 { print $2 }' /proc/mounts \
        | sort -r | xargs -r -n 1 umount -l
    PRIVATE_PID=""
    step_done
}

step "find Docker"
# The classic builder: it needs no frontend image and is what docker.io 20.10 runs without buildx.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
if [[ -n ${DOCKER_HOST:-} ]] || docker info >/dev/null 2>&1; then
    say "using the running Docker (${DOCKER_HOST:-default socket})"
    PRIVATE=0
else
    if [[ $(id -u) != 0 ]]; then
        say "no Docker daemon answers and this is not root: start Docker or set DOCKER_HOST"
        exit 1
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
        || ! command -v debootstrap >/dev/null; then
        step "apt-get install docker.io docker-compose debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io docker-compose debootstrap >/dev/null
    fi
    step "private dockerd"
    mkdir -p "$STATE"
    SOCKET=$STATE/docker.sock
    if [[ -f $STATE/docker.pid ]] && kill -0 "$(cat "$STATE/docker.pid")" 2>/dev/null; then
        say "a dockerd of an earlier run still holds $STATE: stop it (kill $(cat "$STATE/docker.pid"))"
        exit 1
    fi
    # Every container of the tests runs with host networking: no bridge, no iptables rules.
    dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" -H "unix://$SOCKET" \
        --pidfile "$STATE/docker.pid" --bridge none --iptables=false --ip-forward=false \
        >"$STATE/dockerd.log" 2>&1 &
    PRIVATE_PID=$!
    PRIVATE=1
    export DOCKER_HOST=unix://$SOCKET
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if ! kill -0 "$PRIVATE_PID" 2>/dev/null; then
            say "dockerd exited; its log:"
            tail -n 30 "$STATE/dockerd.log"
            exit 1
        fi
        if ((SECONDS > deadline)); then
            say "dockerd did not answer within 60 s"
            exit 1
        fi
        sleep 0.2
    done
    say "private dockerd (pid $PRIVATE_PID) on $DOCKER_HOST, data in $STATE/data"
fi
docker version --format 'docker server {{.Server.Version}}, client {{.Client.Version}}'
docker-compose version --short | sed 's/^/docker-compose /'

# --- 2. The base image ----------------------------------------------------------------------
if [[ -n ${BASE:-} ]]; then
    say "base image: $BASE (given)"
elif [[ $PRIVATE == 1 ]]; then
    step "base image"
    BASE=$BASE_IMAGE
    if docker image inspect "$BASE" >/dev/null 2>&1; then
        say "$BASE is cached"
    else
        rootfs=$STATE/rootfs
        rm -rf "$rootfs"
        say "debootstrap bookworm (minbase, python3) into $rootfs"
        debootstrap --variant=minbase \
            --include=python3,python3-venv,python-is-python3,ca-certificates \
            bookworm "$rootfs" >"$STATE/debootstrap.log" 2>&1 \
            || { tail -n 30 "$STATE/debootstrap.log"; exit 1; }
        # apt's package lists and caches are not needed in an image.
        rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
        tar -C "$rootfs" -c . | docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
        rm -rf "$rootfs"
    fi
else
    BASE=python:3.11-slim
    say "base image: $BASE (the Dockerfile's default, from your registry)"
fi
image_python=$(docker run --rm --network host "$BASE" python3 -c \
    'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$("$BIN/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
say "python in $BASE: $image_python; on the host (the wheelhouse's): $host_python"
if [[ $image_python != "$host_python" ]]; then
    say "the wheelhouse is built for Python $host_python, the image has $image_python"
    exit 1
fi

# --- 3. The wheelhouse ----------------------------------------------------------------------
step "wheelhouse"
make --no-print-directory wheelhouse

# --- 4. The images --------------------------------------------------------------------------
# meshtrust:0.1.0 is the default target, exactly what `docker build .` gives a user.
for spec in "meshtrust:dev --target devtools" "meshtrust:0.1.0"; do
    read -r tag target_args <<<"$spec"
    step "image $tag"
    # shellcheck disable=SC2086 # target_args is empty or two words
    docker build --quiet --network host --build-arg "BASE=$BASE" --build-arg OFFLINE=1 \
        $target_args -t "$tag" . | sed 's/^/image id: /'
done
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '^meshtrust' || true

# --- 5. The tests ---------------------------------------------------------------------------
step "pytest -m containers"
rc=0
MESHTRUST_TEST_IMAGE=meshtrust:dev MESHTRUST_TEST_RUNTIME_IMAGE=meshtrust:0.1.0 \
    "$BIN/python" -m pytest -m containers tests/containers "$@" || rc=$?
if ((rc == 5)); then
    # pytest's "no tests collected" (e.g. a -k that matches nothing) is not a failure of the
    # stack; that tests/containers always has tests is checked by make test
    # (tests/deploy/test_container_selection.py).
    say "WARNING: pytest collected no container test (exit 5); not counted as a failure"
    rc=0
fi
exit "$rc"
