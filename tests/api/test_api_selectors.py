"""Label selectors (shared/api/selectors.py) against Kubernetes' rules, as tables: the match,
what the model refuses, and kubectl's `-l` syntax."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.api.selectors import (
    LabelSelector,
    Operator,
    format_selector,
    matches,
    parse_selector,
)

PROD = {"env": "prod", "tier": "web", "example.com/team": "a"}


def selector(**wire: Any) -> LabelSelector:
    return LabelSelector.model_validate(wire)


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


@pytest.mark.parametrize(
    ("wire", "labels", "expected"),
    [
        # The empty selector matches everything, labelled or not.
        ({}, PROD, True),
        ({}, {}, True),
        # matchLabels: the label present with exactly that value.
        ({"matchLabels": {"env": "prod"}}, PROD, True),
        ({"matchLabels": {"env": "dev"}}, PROD, False),
        ({"matchLabels": {"region": "eu"}}, PROD, False),
        ({"matchLabels": {"env": "prod", "tier": "db"}}, PROD, False),
        ({"matchLabels": {"example.com/team": "a"}}, PROD, True),
        ({"matchLabels": {"env": ""}}, {"env": ""}, True),
        ({"matchLabels": {"env": ""}}, {}, False),
        # In: present and one of the values.
        ({"matchExpressions": [expr("tier", "In", "web", "db")]}, PROD, True),
        ({"matchExpressions": [expr("tier", "In", "db")]}, PROD, False),
        ({"matchExpressions": [expr("region", "In", "eu")]}, PROD, False),
        # NotIn: absent, or none of the values (an absent label satisfies NotIn).
        ({"matchExpressions": [expr("tier", "NotIn", "db")]}, PROD, True),
        ({"matchExpressions": [expr("tier", "NotIn", "web", "db")]}, PROD, False),
        ({"matchExpressions": [expr("region", "NotIn", "eu")]}, PROD, True),
        # Exists / DoesNotExist: the key alone, whatever the value (the empty one too).
        ({"matchExpressions": [expr("env", "Exists")]}, PROD, True),
        ({"matchExpressions": [expr("env", "Exists")]}, {"env": ""}, True),
        ({"matchExpressions": [expr("region", "Exists")]}, PROD, False),
        ({"matchExpressions": [expr("region", "DoesNotExist")]}, PROD, True),
        ({"matchExpressions": [expr("env", "DoesNotExist")]}, PROD, False),
        # Everything ANDed: matchLabels and every expression.
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [expr("tier", "In", "web"), expr("legacy", "DoesNotExist")],
            },
            PROD,
            True,
        ),
        (
            {"matchLabels": {"env": "prod"}, "matchExpressions": [expr("tier", "In", "db")]},
            PROD,
            False,
        ),
        (
            {"matchLabels": {"env": "dev"}, "matchExpressions": [expr("tier", "In", "web")]},
            PROD,
            False,
        ),
        (
            {"matchExpressions": [expr("env", "Exists"), expr("env", "NotIn", "prod")]},
            PROD,
            False,
        ),
        # Label keys and values are compared exactly (case too).
        ({"matchLabels": {"env": "Prod"}}, PROD, False),
        ({"matchLabels": {"Env": "prod"}}, PROD, False),
    ],
)
def test_the_match_follows_kubernetes(
    wire: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert matches(selector(**wire), labels) is expected


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        ({"matchExpressions": [expr("tier", "In")]}, "needs at least one value"),
        ({"matchExpressions": [expr("tier", "NotIn")]}, "needs at least one value"),
        ({"matchExpressions": [expr("tier", "Exists", "web")]}, "takes no values"),
        ({"matchExpressions": [expr("tier", "DoesNotExist", "web")]}, "takes no values"),
        ({"matchExpressions": [expr("tier", "in", "web")]}, "operator"),
        ({"matchExpressions": [expr("tier", "Gt", "1")]}, "operator"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key"),
        ({"matchLabels": {"-env": "prod"}}, "label key"),
        ({"matchLabels": {"Example.com/env": "prod"}}, "prefix"),
        ({"matchLabels": {"a" * 64: "prod"}}, "label key"),
        ({"matchLabels": {"env": "pro d"}}, "label value"),
        ({"matchLabels": {"env": "x" * 64}}, "label value"),
        ({"matchLabels": {"env": "prod-"}}, "label value"),
        ({"matchExpressions": [expr("tier", "In", "ok", "not ok")]}, "label value"),
        ({"matchLabels": {"env": "prod"}, "matchFields": {}}, "matchFields"),
    ],
)
def test_the_model_refuses_what_kubernetes_refuses(wire: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        selector(**wire)


def test_the_longest_valid_key_and_value_are_taken() -> None:
    key = f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 61}/{'n' * 63}"
    one = selector(matchLabels={key: "v" * 63})
    assert matches(one, {key: "v" * 63})
    with pytest.raises(ValidationError, match="prefix"):
        selector(matchLabels={f"{'a' * 63}.{'b' * 63}.{'c' * 63}.{'d' * 62}/n": "v"})


def test_the_wire_form_is_kubernetes_own() -> None:
    wire = {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [expr("tier", "In", "a", "b"), expr("legacy", "DoesNotExist")],
    }
    assert selector(**wire).to_wire() == wire
    assert selector().to_wire() == {}


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("", {}),
        ("env=prod", {"matchLabels": {"env": "prod"}}),
        ("env==prod", {"matchLabels": {"env": "prod"}}),
        (" env = prod , tier=web ", {"matchLabels": {"env": "prod", "tier": "web"}}),
        ("env=", {"matchLabels": {"env": ""}}),
        ("env!=prod", {"matchExpressions": [expr("env", "NotIn", "prod")]}),
        ("tier in (a,b)", {"matchExpressions": [expr("tier", "In", "a", "b")]}),
        ("tier in (a, b, a)", {"matchExpressions": [expr("tier", "In", "a", "b")]}),
        ("tier notin (a)", {"matchExpressions": [expr("tier", "NotIn", "a")]}),
        ("tier in (a,)", {"matchExpressions": [expr("tier", "In", "a", "")]}),
        ("legacy", {"matchExpressions": [expr("legacy", "Exists")]}),
        ("!legacy", {"matchExpressions": [expr("legacy", "DoesNotExist")]}),
        ("in", {"matchExpressions": [expr("in", "Exists")]}),
        (
            "env=prod,tier in (a,b),!legacy",
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [expr("tier", "In", "a", "b"), expr("legacy", "DoesNotExist")],
            },
        ),
        # A second equality on one key stays a requirement: both must hold (nothing matches).
        (
            "env=a,env=b",
            {"matchLabels": {"env": "a"}, "matchExpressions": [expr("env", "In", "b")]},
        ),
        ("example.com/team=a", {"matchLabels": {"example.com/team": "a"}}),
    ],
)
def test_kubectl_syntax_is_parsed_into_match_labels_and_expressions(
    text: str, wire: dict[str, Any]
) -> None:
    parsed = parse_selector(text)
    assert parsed.to_wire() == wire
    assert parse_selector(format_selector(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("env=prod tier=web", "expected ',' between requirements at 'tier' \\(character 10\\)"),
        ("env=prod,", "expected a requirement after ',' at the end"),
        (",env", "expected a label key at ','"),
        ("tier in ()", "at least one value"),
        ("tier in a", "expected '\\(' opening the set of values at 'a'"),
        ("tier in (a", "expected '\\)' closing the set of values at the end"),
        ("tier in (a b)", "expected ',' or '\\)' in the set of values at 'b'"),
        ("replicas>1", "no < or >"),
        ("env prod", "after a key"),
        ("!", "expected a label key at the end"),
        ("!env=prod", "expected ',' between requirements at '='"),
        ("-env=prod", "label key '-env'"),
        ("env=pro/d", "label value 'pro/d'"),
        ("tier in (ok,not/ok)", "label value 'not/ok'"),
    ],
)
def test_bad_kubectl_syntax_says_where(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        parse_selector(text)
    assert text in str(caught.value)


def test_a_parsed_selector_matches_as_its_model() -> None:
    parsed = parse_selector("env=prod,tier in (web,db),!legacy,example.com/team")
    assert matches(parsed, PROD)
    assert not matches(parsed, {**PROD, "legacy": "yes"})
    assert not matches(parsed, {k: v for k, v in PROD.items() if k != "example.com/team"})
    assert [r.operator for r in parsed.match_expressions] == [
        Operator.IN,
        Operator.DOES_NOT_EXIST,
        Operator.EXISTS,
    ]
