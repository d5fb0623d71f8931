"""The envelopes the reconciler publishes, built without I/O: a status without an issuance gets
an id derived once, the same way for an object's own status and for a refused declaration."""

from __future__ import annotations

import hashlib

from agent.test_agent_desired_plan import entry

from services.agent.messages import Messages, derived_issuance
from services.agent.objects import DECLARATION_GENERATION
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificateStatus, State
from shared.events import CertificateState

MESSAGES = Messages(source="agent/east-0", cluster="east")
KEY = ObjectKey("istio-system", "istio-ca")


def test_a_derived_issuance_is_stable_per_uid_and_generation() -> None:
    assert derived_issuance("uid-1", 1) == derived_issuance("uid-1", 1)
    assert derived_issuance("uid-1", 1) != derived_issuance("uid-1", 2)
    # the same id as before this was said once: repeats across versions still correlate
    assert derived_issuance("uid-1", 1) == hashlib.sha256(b"uid-1:1").hexdigest()[:32]


def test_a_status_without_an_issuance_carries_the_objects_derived_one() -> None:
    obj = {
        "metadata": {
            "name": "istio-ca",
            "namespace": "istio-system",
            "uid": "uid-ic",
            "generation": 3,
            "annotations": {DECLARATION_GENERATION: "2"},
        }
    }
    status = IssuedCertificateStatus(state=State.FAILED, error="spec.hosts: empty")
    event = MESSAGES.status_changed(KEY, obj, status)
    assert event.issuance == derived_issuance("uid-ic", 3)
    assert event.data.state is CertificateState.FAILED
    assert event.data.declaration_generation == 2


def test_a_refused_declaration_is_failed_under_the_declarations_derived_issuance() -> None:
    desired = entry(uid="uid-decl", generation=4)
    event = MESSAGES.declaration_refused(desired, "x" * 5000)
    assert event.issuance == derived_issuance("uid-decl", 4)
    assert event.data.state is CertificateState.FAILED
    assert event.data.error == "x" * 4096
    assert (event.data.observed_generation, event.data.declaration_generation) == (0, 4)
