"""Go-style durations for `certOptions.ttl`."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from shared.api.durations import DURATION_PATTERN, format_duration, parse_duration

CRD = Path(__file__).parents[2] / "deploy/crds/issuedcertificates.certificates.smh.solo.io.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("720h", timedelta(hours=720), id="hours"),
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("1h30m", timedelta(minutes=90), id="units combine"),
        pytest.param("1.5h", timedelta(minutes=90), id="fractions are allowed"),
        pytest.param("300ms", timedelta(milliseconds=300), id="milliseconds are not minutes"),
        pytest.param("2m3s4ms", timedelta(minutes=2, seconds=3, milliseconds=4), id="three units"),
        pytest.param("0", timedelta(0), id="a bare zero is Go's zero duration"),
    ],
)
def test_parse_duration_reads_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("10", id="a number without a unit"),
        pytest.param("1d", id="days are not a Go unit"),
        pytest.param("-5s", id="negative durations"),
        pytest.param("5 s", id="spaces"),
        pytest.param("h", id="a unit without a number"),
    ],
)
def test_parse_duration_rejects_what_go_or_we_reject(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(timedelta(0), "0s", id="zero"),
        pytest.param(timedelta(seconds=90), "1m30s", id="minutes and seconds"),
        pytest.param(timedelta(days=365), "8760h", id="a year in hours"),
    ],
)
def test_format_duration_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_the_crd_pattern_is_the_models_pattern() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    ttl = schema["properties"]["spec"]["properties"]["certOptions"]["properties"]["ttl"]
    assert ttl["pattern"] == DURATION_PATTERN
    assert re.fullmatch(ttl["pattern"], "720h")
