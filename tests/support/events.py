"""One valid event of every type, for round trips and bad-input tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import (
    BounceCompleted,
    BounceCompletedData,
    BouncedSelector,
    BounceRequested,
    BounceRequestedData,
    CertificateDenied,
    CertificateDeniedData,
    CertificateIssued,
    CertificateIssuedData,
    CertificateState,
    CsrRequested,
    CsrRequestedData,
    Envelope,
    ObjectRef,
    StatusChanged,
    StatusChangedData,
    TraceContext,
    new_issuance_id,
)

# Not real PEM: the event models carry PEM as text and do not parse it (shared.pki does).
CSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
CERT = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
TRACE = TraceContext(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def sample_events(cluster: str = "east", issuance: str | None = None) -> list[Envelope]:
    issuance = issuance or new_issuance_id()
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    ref = ObjectRef(namespace="istio-system", name="istio-ca")
    common = {"cluster": cluster, "issuance": issuance, "trace": TRACE}
    return [
        CsrRequested(
            source=f"agent/{cluster}",
            data=CsrRequestedData(
                name="istio-ca", declaration_uid="u-1", declaration_generation=3, csr_pem=CSR
            ),
            **common,
        ),
        CertificateIssued(
            source="issuer/mgmt-0",
            data=CertificateIssuedData(
                name="istio-ca",
                declaration_generation=3,
                attempt=1,
                serial_number="0a1b2c3d4e5f6071",
                certificate_pem=CERT,
                ca_chain_pem=CERT,
                root_cert_pem=CERT,
                not_before=now - timedelta(minutes=5),
                not_after=now + timedelta(days=365),
            ),
            **common,
        ),
        CertificateDenied(
            source="issuer/mgmt-0",
            data=CertificateDeniedData(
                name="istio-ca",
                declaration_generation=3,
                attempt=1,
                reason="HostsMismatch",
                message="hosts differ: extra spiffe://evil",
            ),
            **common,
        ),
        BounceRequested(
            source=f"agent/{cluster}",
            data=BounceRequestedData(directive=ref, issued_certificate=ref),
            **common,
        ),
        BounceCompleted(
            source=f"bouncer/{cluster}",
            data=BounceCompletedData(
                directive=ref,
                issued_certificate=ref,
                selectors=(BouncedSelector(index=0, pods=("istiod-abc",)),),
            ),
            **common,
        ),
        StatusChanged(
            source=f"agent/{cluster}",
            data=StatusChangedData(
                name="istio-ca",
                namespace="istio-system",
                state=CertificateState.FINISHED,
                observed_generation=2,
                declaration_generation=3,
                serial_number="0a1b2c3d4e5f6071",
                not_after=now + timedelta(days=365),
            ),
            **common,
        ),
    ]
