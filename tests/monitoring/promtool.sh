#!/usr/bin/env bash
# Check and unit-test the alert rules with promtool (`make test-rules`).
#
# promtool is not on PyPI. It is taken from PATH, else from .venv/bin, else (on a Debian machine)
# from Debian's `prometheus` package, downloaded without installing it (no daemon, no service, no
# postinst): `apt-get download`, `dpkg-deb -x` into a cache directory, and only bin/promtool
# copied into .venv/bin. Fails loudly when none of these works.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV_BIN="${VENV:-.venv}/bin"
CACHE="${MESHTRUST_PROMTOOL_CACHE:-${VENV:-.venv}/promtool-cache}"

die() {
    echo "test-rules: $*" >&2
    echo "test-rules: FAILED: promtool is needed (put it on PATH, or run on Debian with apt-get)" >&2
    exit 1
}

find_promtool() {
    if command -v promtool >/dev/null 2>&1; then
        command -v promtool
    elif [ -x "$VENV_BIN/promtool" ]; then
        echo "$VENV_BIN/promtool"
    else
        return 1
    fi
}

fetch_from_debian() {
    command -v apt-get >/dev/null 2>&1 || die "promtool is not on PATH and this is not a Debian machine"
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
    mkdir -p "$CACHE" "$VENV_BIN"
    local deb
    deb=$(ls "$CACHE"/prometheus_*.deb 2>/dev/null | head -n 1 || true)
    if [ -z "$deb" ]; then
        echo "test-rules: fetching Debian's prometheus package (not installed; only promtool is kept)" >&2
        if ! (cd "$CACHE" && apt-get download prometheus >&2); then
            echo "test-rules: apt-get download failed; running apt-get update first" >&2
            apt-get update >&2 || die "apt-get update failed"
            (cd "$CACHE" && apt-get download prometheus >&2) || die "apt-get download prometheus failed"
        fi
        deb=$(ls "$CACHE"/prometheus_*.deb | head -n 1)
    fi
    rm -rf "$CACHE/root"
    dpkg-deb -x "$deb" "$CACHE/root" || die "dpkg-deb -x $deb failed"
    [ -x "$CACHE/root/usr/bin/promtool" ] || die "no usr/bin/promtool in $deb"
    cp "$CACHE/root/usr/bin/promtool" "$VENV_BIN/promtool"
    rm -rf "$CACHE"  # promtool is kept in $VENV_BIN; the rest of the package is not needed
    echo "$VENV_BIN/promtool"
}

PROMTOOL=$(find_promtool || fetch_from_debian)
"$PROMTOOL" --version 2>&1 | head -n 1 >&2

"$PROMTOOL" check rules deploy/monitoring/rules.yaml
"$PROMTOOL" test rules tests/monitoring/*.test.yaml

# The dashboard's queries parse too: each becomes a recording rule of a throw-away rules file
# (Grafana's variables replaced by values a query could have).
panels=$(mktemp --suffix=.yaml)
trap 'rm -f "$panels"' EXIT
"$VENV_BIN/python" - deploy/monitoring/dashboard.json >"$panels" <<'PY'
import json, sys
dashboard = json.load(open(sys.argv[1]))
def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))
exprs = [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]
rules = [
    {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$cluster", ".*")}
    for i, e in enumerate(exprs)
]
json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout)
PY
echo "Checking the dashboard's queries (deploy/monitoring/dashboard.json)" >&2
"$PROMTOOL" check rules "$panels"
