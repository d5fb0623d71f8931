"""Mapping of API answers (HTTP code + Status body) to our error types."""

from __future__ import annotations

from typing import Any

import pytest

from shared.k8s.errors import (
    AlreadyExists,
    BadRequest,
    Cause,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    Transient,
    error_from_status,
)


def status(code: int, reason: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "status": "Failure", "code": code, "reason": reason}
    body["message"] = f"{reason} happened"
    if details:
        body["details"] = details
    return body


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        pytest.param(404, "NotFound", NotFound, id="404 is NotFound"),
        pytest.param(409, "AlreadyExists", AlreadyExists, id="409 AlreadyExists is not a Conflict"),
        pytest.param(409, "Conflict", Conflict, id="409 for a stale resourceVersion is a Conflict"),
        pytest.param(422, "Invalid", Invalid, id="422 is Invalid"),
        pytest.param(410, "Expired", Gone, id="410 Expired is Gone"),
        pytest.param(403, "Forbidden", Forbidden, id="403 is Forbidden"),
        pytest.param(401, "Unauthorized", Forbidden, id="401 is Forbidden too"),
        pytest.param(429, "TooManyRequests", Transient, id="429 is Transient"),
        pytest.param(500, "InternalError", Transient, id="500 is Transient"),
        pytest.param(503, "ServiceUnavailable", Transient, id="503 is Transient"),
        pytest.param(504, "Timeout", Transient, id="504 is Transient"),
        pytest.param(415, "UnsupportedMediaType", BadRequest, id="415 is a BadRequest"),
        pytest.param(400, "BadRequest", BadRequest, id="400 is a BadRequest"),
        pytest.param(418, "Teapot", KubeError, id="an unknown code is a plain KubeError"),
    ],
)
def test_error_from_status_picks_the_type(
    code: int, reason: str, expected: type[KubeError]
) -> None:
    error = error_from_status(code, status(code, reason))
    assert type(error) is expected
    assert error.code == code
    assert error.reason == reason
    assert error.message == f"{reason} happened"


def test_invalid_carries_the_field_paths() -> None:
    causes = [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.hosts"},
        {
            "reason": "FieldValueNotSupported",
            "message": "Unsupported",
            "field": "spec.certOptions.keyAlgorithm",
        },
    ]
    error = error_from_status(422, status(422, "Invalid", causes=causes))
    assert isinstance(error, Invalid)
    assert error.fields == ("spec.hosts", "spec.certOptions.keyAlgorithm")
    assert error.causes[0] == Cause("spec.hosts", "FieldValueRequired", "Required value")


@pytest.mark.parametrize(
    ("headers", "details", "expected"),
    [
        pytest.param({"Retry-After": "7"}, {}, 7.0, id="the Retry-After header gives the delay"),
        pytest.param(
            {}, {"retryAfterSeconds": 3}, 3.0, id="details.retryAfterSeconds gives it too"
        ),
        pytest.param({"Retry-After": "soon"}, {}, None, id="an unreadable Retry-After is ignored"),
        pytest.param({}, {}, None, id="no hint means no retry_after"),
    ],
)
def test_transient_carries_the_retry_after_hint(
    headers: dict[str, str], details: dict[str, Any], expected: float | None
) -> None:
    error = error_from_status(429, status(429, "TooManyRequests", **details), headers=headers)
    assert isinstance(error, Transient)
    assert error.retry_after == expected


def test_a_body_that_is_not_a_status_still_gives_an_error() -> None:
    error = error_from_status(502, None, fallback_message="bad gateway")
    assert isinstance(error, Transient)
    assert error.message == "bad gateway"
