"""What the agent's reconciler observed of one IssuedCertificate, as `policies.decide` reads it:
the key Secret's facts (`KeyMaterial`), the issued Secret's (`IssuedView`), the verdict a bus
handler left (`Verdict`), all of it together (`Observed`), and the state machine's clocks
(`Timing`). Plain values only: no I/O, no clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from shared.api.v1alpha2 import IssuedCertificateSpec, IssuedCertificateStatus
from shared.pki import BundleInfo

__all__ = ["IssuedView", "KeyMaterial", "Observed", "Timing", "Verdict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyMaterial:
    """What the key Secret says about its issuance. The key itself is never part of a decision
    (and so never in a repr or a log line)."""

    issuance: str
    generation: int | None
    """The IssuedCertificate generation the key and CSR were made for."""
    attempt: int
    """The last csr.requested attempt sent for it."""
    requested_at: dt.datetime | None
    """When that attempt was sent (None: never, e.g. after a crash before the first send)."""
    signing_chain: str | None = None
    """The desired signing-chain fingerprint the issuance was started under."""
    trust_epoch: str = ""
    """The trust epoch the issuance was started under (its CSR carries it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedView:
    """The issued Secret as found: whose issuance it holds and whether it is fit for use."""

    issuance: str | None
    """`meshtrust.io/issuance-id` of the Secret (None: not written by us, or edited away)."""
    info: BundleInfo | None
    """Facts of the bundle when it passed the check, else None."""
    problem: str | None
    """Why it is not fit (the bundle check's reason and message), else None."""
    signing_chain: str | None = None
    """The desired signing-chain fingerprint its issuance was started under."""
    epoch: str = ""
    """The trust epoch its issuance was started under ("": none)."""
    declaration_generation: int | None = None
    """The declaration generation its issuance answered (None: not recorded)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a bus handler left on the IssuedCertificate for one issuance.

    `kind` is `denied` (the issuer refused), `refused` (a certificate.issued failed our trust
    and policy checks, `services.agent.trust`: the issuance keeps waiting for the real answer)
    or `bounced` (the bouncer finished; `message` is its error, empty on success).
    """

    issuance: str
    kind: Literal["denied", "refused", "bounced"]
    reason: str = ""
    message: str = ""
    retry_after: dt.datetime | None = None
    """With a `denied` of reason `RateLimited`: the CSR may be sent again from then on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """Everything `decide` looks at for one IssuedCertificate."""

    generation: int
    status: IssuedCertificateStatus
    spec: IssuedCertificateSpec | None
    spec_error: str | None
    """Set when the object is invalid; names the field (`spec.hosts[0]: empty`)."""
    key: KeyMaterial | None
    issued: IssuedView | None
    """None when the issued Secret does not exist."""
    verdict: Verdict | None = None
    signing_chain: str | None = None
    """The desired signing-chain fingerprint (`DesiredObject.signing_chain_fingerprint`, stamped
    on the IssuedCertificate by the applier); None for objects not from desired state."""
    declaration_generation: int | None = None
    """The declaration's generation (annotation; for an object made locally, its own)."""
    trust_epoch: str = ""
    """The trust epoch the issuer asks for (`meshtrust.io/trust-epoch` on the IssuedCertificate,
    copied from desired state during a root rotation); "" outside any."""
    sent: bool = False
    """Whether this process already sent the current step's message (csr.requested of the
    key's attempt in REQUESTED, bounce.requested in ISSUED). False after a restart."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """The state machine's clocks, in seconds (from `AgentSettings`)."""

    resend_after: float = 60.0
    failure_backoff_initial: float = 10.0
    failure_backoff_max: float = 600.0
    renewal_jitter: float = 0.05
    max_requeue: float = 3600.0
