"""The ClusterRegistrations the issuer bounds each cluster by: watched, looked up, mapped.

`Registrations` holds an informer on the ClusterRegistrations of the registration namespace
(`MESHTRUST_ISSUER_REGISTRATION_NAMESPACE`) and answers `state(cluster)`: the cluster's
registration, None (none, and none required: the permissive mode), or why nothing of the
cluster may be signed (`policies.registration_for`). Both the declarations' reconcile and the
CSR path ask it; a registration's change requeues every declaration of its cluster, so a
narrowed registration FAILs what it no longer allows, and a widened one publishes it again.

Read from the cache, not live: a registration is the administrator's slow-changing setting,
and the reconcile that follows its event decides again with the new one. The decisions
themselves are pure and live in `policies.py`; the X.509 name constraints in `shared.pki`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cryptography import x509

from services.issuer.policies import RegistrationState, registration_for
from services.issuer.settings import IssuerSettings
from shared.api import v1alpha2
from shared.api.meta import ObjectKey
from shared.api.registrations import ClusterRegistration
from shared.k8s import Informer, InformerEvent, KubeClient
from shared.k8s.resources import Resource
from shared.pki import name_constraints

__all__ = ["CLUSTER_REGISTRATIONS", "Registrations", "constraints_of", "rate_of"]

CLUSTER_REGISTRATIONS = Resource(
    v1alpha2.GROUP, v1alpha2.VERSION, ClusterRegistration.PLURAL, ClusterRegistration.KIND
)


class Registrations:
    """The cached ClusterRegistrations of the registration namespace."""

    def __init__(self, kube: KubeClient, settings: IssuerSettings) -> None:
        self._namespace = settings.registration_namespace
        self._required = settings.require_registration
        self.informer = Informer(kube, CLUSTER_REGISTRATIONS, namespace=self._namespace)

    def state(self, cluster: str) -> RegistrationState:
        raw = self.informer.get(ObjectKey(self._namespace, cluster))
        return registration_for(cluster, raw, namespace=self._namespace, required=self._required)

    def declarations_of(
        self, declarations: Informer
    ) -> Callable[[InformerEvent], Iterable[ObjectKey]]:
        """The map from a registration's event to the keys of its cluster's declarations."""

        def keys(event: InformerEvent) -> Iterable[ObjectKey]:
            cluster = event.key.name
            return [
                key
                for key in (ObjectKey.of(obj) for obj in declarations.items())
                if key.namespace == cluster
            ]

        return keys


def rate_of(registration: RegistrationState) -> tuple[float, int] | None:
    """The registration's own issuance bucket (per_hour, burst), if it sets one."""
    if isinstance(registration, ClusterRegistration) and registration.spec.issuance is not None:
        return registration.spec.issuance.per_hour, registration.spec.issuance.burst
    return None


def constraints_of(registration: RegistrationState) -> x509.NameConstraints | None:
    """The NameConstraints the cluster's intermediates carry, if its registration sets any."""
    if not isinstance(registration, ClusterRegistration):
        return None
    spec = registration.spec.name_constraints
    if spec is None or spec.empty:
        return None
    return name_constraints(trust_domain=spec.trust_domain, dns_suffixes=spec.dns_suffixes)
