"""Write prometheusrule.yaml (a Prometheus Operator PrometheusRule) from rules.yaml.

The rules file is the source; the manifest holds the same groups as its `spec`
(tests/monitoring/test_rules.py fails when they differ). Run after editing rules.yaml:

    .venv/bin/python deploy/monitoring/render_prometheusrule.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules.yaml"
MANIFEST = HERE / "prometheusrule.yaml"
HEADER = (
    "# Generated from rules.yaml by render_prometheusrule.py: edit rules.yaml, then run\n"
    "# `.venv/bin/python deploy/monitoring/render_prometheusrule.py`. Runbooks: docs/metrics.md.\n"
    "# The `release`-style label selecting rules differs per Prometheus: add yours.\n"
)


def manifest(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "meshtrust",
            "namespace": "meshtrust-system",
            "labels": {
                "app.kubernetes.io/name": "meshtrust",
                "app.kubernetes.io/part-of": "meshtrust",
            },
        },
        "spec": rules,
    }


class _Dumper(yaml.SafeDumper):
    pass


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def render() -> str:
    rules = yaml.safe_load(RULES.read_text())
    body = yaml.dump(manifest(rules), Dumper=_Dumper, sort_keys=False, width=100)
    return HEADER + body


def main() -> int:
    MANIFEST.write_text(render())
    print(f"wrote {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
