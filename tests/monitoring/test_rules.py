"""The alert rules and the dashboard (deploy/monitoring), checked without promtool.

`make test-rules` runs promtool on the rules (their PromQL and `tests/monitoring/*.test.yaml`);
this checks what promtool does not: the PrometheusRule holds the same rules, every metric a
rule or a panel reads is listed in docs/metrics.md, every alert has its runbook entry there and
the labels that best practice asks for, and no rule aggregates by an issuance id.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
METRICS_DOC = REPO / "docs" / "metrics.md"

METRIC = re.compile(r"\bmeshtrust_[a-z0-9_]+\b")
DOCUMENTED = re.compile(r"^\|\s*`(meshtrust_[a-z0-9_]+)`\s*\|", re.MULTILINE)
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
SEVERITIES = {"warning", "critical"}


def _rules() -> dict[str, Any]:
    loaded = yaml.safe_load((MONITORING / "rules.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _rules()["groups"] for rule in group["rules"] if "alert" in rule]


def _documented() -> set[str]:
    return set(DOCUMENTED.findall(METRICS_DOC.read_text()))


def _undocumented(expr: str, documented: set[str]) -> set[str]:
    """Metric names in `expr` not listed in docs/metrics.md (a histogram's series by its name)."""
    missing = set()
    for name in METRIC.findall(expr):
        base = next((name[: -len(s)] for s in HISTOGRAM_SERIES if name.endswith(s)), name)
        if name not in documented and base not in documented:
            missing.add(name)
    return missing


def _runbooks() -> dict[str, str]:
    """The "Alerts" section's entries: `### Name` heading -> its text."""
    text = METRICS_DOC.read_text()
    section = text[text.index("\n## Alerts\n") :]
    end = section.find("\n## ", 1)  # the next section, if the Alerts are not the last
    section = section if end < 0 else section[:end]
    parts = re.split(r"^### (\S+)\n", section, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_prometheusrule", MONITORING / "render_prometheusrule.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rules_file_has_the_alerts_the_issue_asks_for() -> None:
    names = {rule["alert"] for rule in _alerts()}
    assert names >= {
        "MeshtrustCertificateExpiringSoon",
        "MeshtrustCertificateRenewalOverdue",
        "MeshtrustCertificateFailed",
        "MeshtrustClusterSilent",
        "MeshtrustClusterUnheard",
        "MeshtrustSigningCAExpiring",
        "MeshtrustRootCAExpiring",
        "MeshtrustDenialsRising",
        "MeshtrustConsumerLag",
        "MeshtrustStreamNearLimit",
        "MeshtrustLedgerLarge",
    }


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_each_alert_is_held_labelled_and_annotated(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"[1-9][0-9]*[smh]", str(rule.get("for", ""))), "a `for:` duration"
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["labels"]) == {"severity"}, "no other static labels"
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert all(str(value).strip() for value in annotations.values())
    assert annotations["runbook_url"] == f"docs/metrics.md#{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_no_alert_keeps_an_issuance_id_or_a_pod(rule: dict[str, Any]) -> None:
    """Every rule aggregates (`max by`/`sum by`) to the labels an operator acts on."""
    clauses = BY_CLAUSE.findall(rule["expr"])
    assert clauses, "aggregates over the replicas"
    for clause in clauses:
        labels = {label.strip() for label in clause.split(",")}
        assert labels <= {"cluster", "namespace", "name", "reason", "durable", "stream"}


def test_every_metric_a_rule_reads_is_documented() -> None:
    documented = _documented()
    read = {name for rule in _alerts() for name in METRIC.findall(rule["expr"])}
    assert len(read) >= 9
    assert {n: _undocumented(n, documented) for n in read if _undocumented(n, documented)} == {}


def test_the_documented_names_check_catches_an_unknown_metric() -> None:
    documented = _documented()
    assert _undocumented("rate(meshtrust_issuer_denials_total[5m])", documented) == set()
    assert _undocumented("meshtrust_agent_issuance_duration_seconds_bucket", documented) == set()
    assert _undocumented("meshtrust_issuer_denial_total", documented) == {
        "meshtrust_issuer_denial_total"
    }


def test_every_alert_has_a_runbook_entry_and_every_entry_an_alert() -> None:
    runbooks = _runbooks()
    assert set(runbooks) == {rule["alert"] for rule in _alerts()}
    for name, text in runbooks.items():
        for part in ("**Means**", "**Check**", "**Do**"):
            assert part in text, f"{name}: {part}"


def test_the_prometheusrule_holds_the_rules_file() -> None:
    manifest = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == _rules()


def test_the_prometheusrule_is_what_the_script_renders() -> None:
    """Edited by hand, or rules.yaml edited without rendering: run render_prometheusrule.py."""
    assert (MONITORING / "prometheusrule.yaml").read_text() == _render_module().render()


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    loaded = json.loads((MONITORING / "dashboard.json").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_dashboard_reads_only_documented_metrics() -> None:
    dashboard = _dashboard()
    documented = _documented()
    exprs = [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(exprs) >= 15
    assert {e: _undocumented(e, documented) for e in exprs if _undocumented(e, documented)} == {}


def test_the_dashboard_shows_the_fleet_view() -> None:
    exprs = " ".join(
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
    )
    for metric in (
        "meshtrust_agent_certificate_state",
        "meshtrust_issuer_certificate_expiration_timestamp_seconds",
        "meshtrust_issuer_cluster_last_seen_timestamp_seconds",
        "meshtrust_agent_issuance_duration_seconds_bucket",
        "meshtrust_issuer_denials_total",
        "meshtrust_bus_consumer_pending_messages",
    ):
        assert metric in exprs


def test_the_dashboard_panels_are_well_formed() -> None:
    dashboard = _dashboard()
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"]
