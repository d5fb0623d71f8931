"""meshtrust's own API: object bodies and keys (`shared.api.meta`), its custom resources
(`shared.api.v1alpha2`), the Go durations their fields are written in (`shared.api.durations`),
and the reason codes its controllers write (`shared.api.reasons`).

Here, apart from `shared.k8s` (how to talk to a Kubernetes API) and `shared.controller` (how a
controller decides), because these names are the project's domain: they appear on the wire, in
object status, Events, metrics and the bus's answers, and every service must spell them the
same. Pure: pydantic models, constants and views over dicts, no I/O; `shared.k8s` imports this
package, never the reverse.
"""

from shared.api.meta import Obj, ObjectKey, metadata
from shared.api.rotations import CertificateRotation
from shared.api.v1alpha2 import (
    API_VERSION,
    IssuedCertificate,
    IssuedCertificateSpec,
    IssuedCertificateStatus,
    PodBounceDirective,
    PodBounceDirectiveSpec,
    State,
)

__all__ = [
    "API_VERSION",
    "CertificateRotation",
    "IssuedCertificate",
    "IssuedCertificateSpec",
    "IssuedCertificateStatus",
    "Obj",
    "ObjectKey",
    "PodBounceDirective",
    "PodBounceDirectiveSpec",
    "State",
    "metadata",
]
