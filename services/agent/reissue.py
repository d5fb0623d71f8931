"""The re-issuance policy chain: why a certificate in place (ISSUED or FINISHED) is issued again.

Each check is `check(observed) -> Finding | None`, chained in a `shared.controller.policy.Chain`
built with `now` (`reissue_chain`); the first finding re-issues, and its reason and message become
the Event's and the log line's. Pure: no I/O, no clock (`now` is an argument).
"""

from __future__ import annotations

import datetime as dt

from services.agent.observed import Observed
from shared.api import reasons
from shared.controller.policy import Chain, Check, Finding
from shared.pki import serial_hex

__all__ = ["TRUST_EPOCH_CHANGED", "reissue_chain", "renewal_due"]

TRUST_EPOCH_CHANGED = "TrustEpochChanged"
"""The reason of a re-issuance asked for by a root rotation's step (docs/agent.md)."""


def spec_changed(o: Observed) -> Finding | None:
    if o.status.observed_generation != o.generation:
        return Finding(
            reasons.SPEC_CHANGED,
            f"generation {o.generation} differs from the observed generation "
            f"{o.status.observed_generation}",
        )
    return None


def secret_missing(o: Observed) -> Finding | None:
    if o.issued is None:
        return Finding(reasons.SECRET_MISSING, "the issued Secret does not exist")
    return None


def secret_unfit(o: Observed) -> Finding | None:
    if o.issued is not None and o.issued.problem is not None:
        return Finding(
            reasons.SECRET_INVALID, f"the issued Secret is not fit for use: {o.issued.problem}"
        )
    return None


def secret_not_ours(o: Observed) -> Finding | None:
    issued = o.issued
    if issued is None or issued.info is None:
        return None
    if issued.issuance != o.status.issuance_id:
        return Finding(
            reasons.SECRET_MISMATCH,
            "the issued Secret does not hold the current issuance's certificate",
        )
    serial = serial_hex(issued.info.serial)
    if o.status.serial_number is not None and o.status.serial_number != serial:
        return Finding(
            reasons.SECRET_MISMATCH,
            f"the issued Secret holds serial {serial}, not the issued {o.status.serial_number}",
        )
    return None


def signing_ca_changed(o: Observed) -> Finding | None:
    issued = o.issued
    if o.signing_chain is None or issued is None or issued.info is None:
        return None
    if issued.signing_chain != o.signing_chain:
        return Finding(
            reasons.SIGNING_CA_CHANGED,
            "the issuer's signing CA changed since the certificate was issued",
        )
    return None


def epoch_changed(o: Observed) -> Finding | None:
    """The issuer asks for another trust epoch (a step of a root rotation) than the one the
    certificate in place was issued under: a new key and CSR, sent with the new epoch."""
    issued = o.issued
    if issued is None or issued.info is None or issued.epoch == o.trust_epoch:
        return None
    return Finding(
        TRUST_EPOCH_CHANGED,
        f"the issuer asks for trust epoch {o.trust_epoch or '(none)'!r}; the certificate was "
        f"issued under {issued.epoch or '(none)'!r}",
    )


def renewal_due(now: dt.datetime) -> Check[Observed]:
    """The check that the renewal time has come, as of `now`."""

    def renewal_due(o: Observed) -> Finding | None:
        renewal = o.status.renewal_time
        if renewal is not None and now >= renewal:
            return Finding(reasons.RENEWAL_DUE, f"renewal time {renewal.isoformat()} has come")
        return None

    return renewal_due


def reissue_chain(now: dt.datetime) -> Chain[Observed]:
    """Checked in this order for ISSUED and FINISHED; the first finding re-issues."""
    return Chain(
        spec_changed,
        secret_missing,
        secret_unfit,
        secret_not_ours,
        signing_ca_changed,
        epoch_changed,
        renewal_due(now),
    )
