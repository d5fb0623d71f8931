"""What the agent's policy tables share: a fixed now, the timing, a spec, and builders of
observed states (`observed`, `requested`, `status`, `key`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.agent.policies import (
    IssuedView,
    KeyMaterial,
    Observed,
    Timing,
    Verdict,
)
from shared.api.v1alpha2 import IssuedCertificateSpec, IssuedCertificateStatus, State
from shared.pki import BundleInfo

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
TIMING = Timing(resend_after=60, failure_backoff_initial=10, failure_backoff_max=600)
SPEC = IssuedCertificateSpec.model_validate(
    {
        "hosts": ["spiffe://cluster.local/ns/istio-system/sa/citadel"],
        "org": "meshtrust",
        "signingCertificateSecret": {"name": "root", "namespace": "east"},
        "issuedCertificateSecret": {"name": "cacerts", "namespace": "istio-system"},
    }
)
BOUNCING = SPEC.model_copy(
    update={
        "pod_bounce_directive": SPEC.issued_certificate_secret.model_copy(update={"name": "istiod"})
    }
)
INFO = BundleInfo(
    serial=0xABC,
    not_before=NOW - dt.timedelta(days=1),
    not_after=NOW + dt.timedelta(days=364),
    fingerprint="f",
    public_key_fingerprint="p",
)
GOOD = IssuedView(issuance="i-current", info=INFO, problem=None)
REFUSED = Verdict(
    issuance="i-current",
    kind="refused",
    reason="UntrustedRoot",
    message="the certificate's root is not one of the roots pinned in ns/bundle",
)


LIMITED = Verdict(
    issuance="i-current",
    kind="denied",
    reason="RateLimited",
    message="RateLimited: cluster east is over its issuance rate",
    retry_after=NOW + dt.timedelta(minutes=10),
)


def status(state: State, **values: Any) -> IssuedCertificateStatus:
    base: dict[str, Any] = {
        "state": state,
        "observed_generation": 1,
        "issuance_id": "i-current",
        "serial_number": "abc",
        "not_before": INFO.not_before,
        "not_after": INFO.not_after,
        "renewal_time": NOW + dt.timedelta(days=200),
    }
    base.update(values)
    return IssuedCertificateStatus(**base)


def key(issuance: str = "i-current", **values: Any) -> KeyMaterial:
    base: dict[str, Any] = {
        "issuance": issuance,
        "generation": 1,
        "attempt": 1,
        "requested_at": NOW - dt.timedelta(seconds=10),
    }
    base.update(values)
    return KeyMaterial(**base)


def observed(st: IssuedCertificateStatus, **values: Any) -> Observed:
    base: dict[str, Any] = {
        "generation": 1,
        "status": st,
        "spec": SPEC,
        "spec_error": None,
        "key": None,
        "issued": GOOD,
        "verdict": None,
        "sent": True,
    }
    base.update(values)
    return Observed(**base)


def requested(**values: Any) -> Observed:
    return observed(status(State.REQUESTED), **{"key": key(), "issued": None, **values})
