"""Pure decisions of the agent's state machine: (observed state, now) -> what to do next.

The reconciler gathers what is (the IssuedCertificate, its key Secret, its issued Secret, the
verdict a bus handler left for the current issuance) into an `Observed`, and `decide` returns one
`Decision`. Nothing here does I/O, reads a clock or draws randomness: `now` and `rand` are
arguments, so every rule is a row of a table test.

What is observed is in `observed.py`. Re-issuance of a certificate that is in place (ISSUED or
FINISHED) is decided by the chain of small policies of `reissue.py` (`reissue_chain`); the same
chain decides whether a new IssuedCertificate (PENDING) may re-adopt the certificate already in
its issued Secret (`Readopt`: the remote object was deleted and made again from desired state).

Deliberately not here: how a key is made or a Secret written (the reconciler's I/O layer), and
whether a certificate passes the bundle check (the reconciler runs `shared.pki.check_bundle`
while gathering and hands the verdict in as `IssuedView.problem`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from services.agent.observed import IssuedView as IssuedView
from services.agent.observed import KeyMaterial as KeyMaterial
from services.agent.observed import Observed as Observed
from services.agent.observed import Timing as Timing
from services.agent.observed import Verdict as Verdict
from services.agent.reissue import TRUST_EPOCH_CHANGED, reissue_chain
from shared.api import reasons
from shared.api.v1alpha2 import CertOptions, IssuedCertificateSpec, IssuedCertificateStatus, State
from shared.pki import BundleInfo, InvalidHost, InvalidSubject, parse_hosts, serial_hex
from shared.pki.names import subject_for

# --- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """Start an issuance: a fresh key (or `adopt` the key Secret of an interrupted start),
    the key Secret, the CSR, csr.requested, REQUESTED."""

    reason: str
    message: str
    adopt: KeyMaterial | None = None


@dataclass(frozen=True, slots=True)
class Readopt:
    """A new (PENDING) IssuedCertificate whose issued Secret already holds a valid certificate of
    ours that matches it (the object was deleted and made again): take that issuance over,
    FINISHED at once. No new key, no CSR, no bounce."""

    issuance: str
    info: BundleInfo


@dataclass(frozen=True, slots=True)
class Send:
    """Send the current issuance's CSR again: attempt `attempt` (the same attempt after a
    restart, deduplicated by the bus; the next one after `resend_after`)."""

    attempt: int
    wait: float
    """Seconds until the next re-send is due, for the requeue."""


@dataclass(frozen=True, slots=True)
class Complete:
    """The issued Secret holds the current issuance's valid bundle: delete the key Secret and
    go ISSUED (at once: see `spent_key`), then bounce or FINISHED."""

    info: BundleInfo


@dataclass(frozen=True, slots=True)
class Bounce:
    """(Re-)send bounce.requested for the current issuance (after a restart in ISSUED)."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The bouncer is done: FINISHED."""


@dataclass(frozen=True, slots=True)
class Fail:
    """Go FAILED with `error`; `retry` False when only a spec change can help."""

    reason: str
    error: str
    retry: bool = True


@dataclass(frozen=True, slots=True)
class Refuse:
    """A certificate.issued was refused: say so (status.error, a Warning Event, status.changed)
    and stay REQUESTED; the next pass goes on waiting for (and re-asking for) the real answer."""

    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to do now; look again after `seconds` (None: only when something changes)."""

    seconds: float | None = None


Decision = Issue | Readopt | Send | Complete | Bounce | Finish | Fail | Refuse | Wait


# --- spec validation --------------------------------------------------------------------------


def validate_spec(raw: Mapping[str, Any] | None, *, name: str) -> tuple[Any, str | None]:
    """(spec model, None) for a usable spec, else (None, an error naming the field).

    The model's own validation comes first (missing `issuedCertificateSecret`, empty `hosts`,
    an unsupported `keySize`...), then what only the PKI can tell: each host is a SAN we can
    issue, and `org` and the object's name fit in an X.509 subject.
    """
    try:
        spec = IssuedCertificateSpec.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        return None, _describe(exc)
    try:
        parse_hosts(spec.hosts)
    except InvalidHost as exc:
        return None, f"spec.{exc.message}"
    try:
        subject_for(org=spec.org, name=name)
    except InvalidSubject as exc:
        return None, f"spec.org or metadata.name: {exc.message}"
    return spec, None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        loc = [str(p) for p in error["loc"] if p not in ("function-after", "function-before")]
        path = "spec"
        for part in loc:
            path += f"[{part}]" if part.isdigit() else f".{part}"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {message}")
    return "; ".join(parts) or "spec: invalid"


# --- the state machine ------------------------------------------------------------------------


def spent_key(o: Observed) -> bool:
    """Whether the key Secret is that of an issuance already ISSUED (or FINISHED): its key is in
    the issued Secret, and the key Secret is only left over. `Complete` deletes it beside the
    ISSUED write; a crash between the two leaves it here, for the next pass to delete."""
    return (
        o.status.state in (State.ISSUED, State.FINISHED)
        and o.key is not None
        and o.key.issuance == o.status.issuance_id
    )


def decide(o: Observed, *, now: dt.datetime, timing: Timing) -> Decision:
    """The next step for one IssuedCertificate (see docs/agent.md for the table)."""
    state = o.status.state
    current_generation = o.status.observed_generation == o.generation
    if o.spec_error is not None:
        if state is State.FAILED and current_generation and o.status.error == o.spec_error:
            return Wait()
        return Fail(reasons.INVALID_SPEC, o.spec_error, retry=False)
    if state is State.PENDING:
        if (readopt := readoptable(o, now=now)) is not None:
            return readopt
        return _issue(o, reasons.PENDING, "a new IssuedCertificate")
    if state is State.FAILED:
        if not current_generation:
            return _issue(o, reasons.SPEC_CHANGED, "the spec changed after a failure")
        retry_at = o.status.renewal_time
        if retry_at is None:
            return Wait()  # not retried: only a spec change helps (e.g. it was invalid)
        if now >= retry_at:
            return _issue(o, reasons.RETRY, f"retrying after {o.status.failed_attempts} failure(s)")
        return Wait(_seconds(retry_at - now))
    if state is State.REQUESTED:
        return _requested(o, now=now, timing=timing)
    # ISSUED or FINISHED: the bundle is in place; is it still the right one?
    reissue = reissue_chain(now).evaluate(o)
    if reissue is not None:
        return _issue(o, reissue.reason, reissue.message)
    if state is State.ISSUED:
        verdict = o.verdict
        if verdict is not None and verdict.kind == "bounced":
            if verdict.message:
                return Fail(reasons.BOUNCE_FAILED, f"pod bounce failed: {verdict.message}")
            return Finish()
        if o.spec is not None and o.spec.pod_bounce_directive is None:
            return Finish()  # the directive was removed while bouncing: nothing to wait for
        if not o.sent:
            return Bounce()
        return Wait()
    return Wait(_until_renewal(o, now=now, timing=timing))


def _requested(o: Observed, *, now: dt.datetime, timing: Timing) -> Decision:
    issuance = o.status.issuance_id
    if o.status.observed_generation != o.generation:
        return _issue(o, reasons.SPEC_CHANGED, "the spec changed while the CSR was out")
    key = o.key
    if (
        o.signing_chain is not None
        and key is not None
        and key.issuance == issuance
        and key.signing_chain != o.signing_chain
    ):
        return _issue(o, reasons.SIGNING_CA_CHANGED, "the issuer's signing CA changed meanwhile")
    if key is not None and key.issuance == issuance and key.trust_epoch != o.trust_epoch:
        return _issue(o, TRUST_EPOCH_CHANGED, "the issuer asks for another trust epoch meanwhile")
    issued = o.issued
    if issued is not None and issued.issuance == issuance and issued.info is not None:
        return Complete(issued.info)
    verdict = o.verdict
    if verdict is not None and verdict.kind == "denied" and verdict.reason == reasons.RATE_LIMITED:
        limited = _rate_limited(o, verdict, now=now, timing=timing)
        if limited is not None:
            return limited
    elif verdict is not None and verdict.kind == "denied":
        return Fail(
            verdict.reason or reasons.DENIED, f"the issuer denied the CSR: {verdict.message}"
        )
    if verdict is not None and verdict.kind == "refused":
        error = refusal_error(verdict)
        if o.status.error != error:
            return Refuse(verdict.reason or reasons.REFUSED, error)
    if key is None or key.issuance != issuance:
        # Nobody else writes the key Secret: it was deleted (or replaced) under us, and the key
        # of this issuance is gone. A certificate for it could never be used.
        return _issue(o, reasons.KEY_LOST, "the key Secret of the requested issuance is gone")
    if key.requested_at is None:
        return Send(attempt=key.attempt, wait=timing.resend_after)
    elapsed = (now - key.requested_at).total_seconds()
    if elapsed >= timing.resend_after:
        return Send(attempt=key.attempt + 1, wait=timing.resend_after)
    if not o.sent:
        return Send(attempt=key.attempt, wait=timing.resend_after - elapsed)
    return Wait(max(0.0, timing.resend_after - elapsed))


def _rate_limited(
    o: Observed, verdict: Verdict, *, now: dt.datetime, timing: Timing
) -> Decision | None:
    """Over the issuer's rate: say so (status.error, staying REQUESTED), send nothing before
    `retry_after`, then send the next attempt once; None: decide as without the verdict (the
    key is gone, or the re-send after `retry_after` went out and waits for its answer)."""
    error = rate_limited_error(verdict)
    if o.status.error != error:
        return Refuse(reasons.RATE_LIMITED, error)
    key = o.key
    if key is None or key.issuance != o.status.issuance_id or verdict.retry_after is None:
        return None  # no time given (an older issuer): the usual re-send timing
    if now < verdict.retry_after:
        return Wait(_seconds(verdict.retry_after - now))
    if key.requested_at is None or key.requested_at < verdict.retry_after:
        return Send(attempt=key.attempt + 1, wait=timing.resend_after)
    return None


def refusal_event_reason(reason: str) -> str:
    """The Warning Event's reason for a `Refuse` of `reason` (the issuance stays REQUESTED)."""
    if reason in (reasons.TRUST_BUNDLE_MISSING, reasons.TRUST_BUNDLE_INVALID):
        return reasons.TRUST_BUNDLE_UNAVAILABLE
    if reason == reasons.RATE_LIMITED:
        return reasons.RATE_LIMITED
    return reasons.UNTRUSTED_CERTIFICATE


def rate_limited_error(verdict: Verdict) -> str:
    """status.error while REQUESTED after a RateLimited denial."""
    when = verdict.retry_after.isoformat() if verdict.retry_after is not None else "later"
    return (
        f"the issuer rate-limited this cluster's CSRs ({verdict.message}); the CSR is sent "
        f"again at {when}"
    )


def refusal_error(verdict: Verdict) -> str:
    """status.error while REQUESTED after a certificate.issued was refused."""
    return (
        f"a certificate.issued was refused ({verdict.reason}): {verdict.message}; still waiting "
        "for the issuer's answer"
    )


def _issue(o: Observed, reason: str, message: str) -> Issue:
    """Adopt a key Secret left by an interrupted start of an issuance for this generation;
    never one of an issuance already recorded in status (that one is spent or failed)."""
    key = o.key
    if (
        key is not None
        and key.issuance != o.status.issuance_id
        and key.generation == o.generation
        and key.signing_chain == o.signing_chain
        and key.trust_epoch == o.trust_epoch
    ):
        return Issue(reason, message, adopt=key)
    return Issue(reason, message)


def readoptable(o: Observed, *, now: dt.datetime) -> Readopt | None:
    """`Readopt` when the issued Secret of a new IssuedCertificate holds an issuance of ours
    that the re-issuance chain would keep if it were the current one: it answered the same
    declaration generation, passes the bundle check for this spec and chains to pinned roots,
    was issued under the same signing CA and trust epoch, and its renewal time (without jitter)
    has not come."""
    issued = o.issued
    if o.spec is None or issued is None or issued.info is None or issued.issuance is None:
        return None
    if issued.declaration_generation is None or (
        issued.declaration_generation != o.declaration_generation
    ):
        return None  # not known to answer this declaration (its ttl and key are not checked)
    options = o.spec.cert_options
    due = renewal_time(
        not_before=issued.info.not_before,
        not_after=issued.info.not_after,
        declared=options.lifetime,
        ratio=options.secret_rotation_grace_period_ratio,
        jitter=0.0,
        rand=0.0,
    )
    adopted = replace(
        o,
        status=o.status.model_copy(
            update={
                "state": State.FINISHED,
                "observed_generation": o.generation,
                "issuance_id": issued.issuance,
                "serial_number": serial_hex(issued.info.serial),
                "renewal_time": due,
            }
        ),
    )
    if reissue_chain(now).evaluate(adopted) is not None:
        return None
    return Readopt(issued.issuance, issued.info)


def _until_renewal(o: Observed, *, now: dt.datetime, timing: Timing) -> float | None:
    renewal = o.status.renewal_time
    if renewal is None:
        return timing.max_requeue
    return min(timing.max_requeue, _seconds(renewal - now))


def _seconds(delta: dt.timedelta) -> float:
    return max(0.0, delta.total_seconds())


# --- numbers the transitions record -----------------------------------------------------------


def renewal_time(
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    declared: dt.timedelta,
    ratio: float,
    jitter: float,
    rand: float,
) -> dt.datetime:
    """notAfter - ratio x lifetime, earlier by up to `jitter` of that window (`rand` in [0, 1)).

    The lifetime is the declared one (`certOptions.ttl`/`ttlDays`) unless the certificate is
    shorter (the issuer clamps notAfter to its own chain): the issuer backdates notBefore for
    clock skew (5 minutes), which would otherwise count as lifetime and, for a short ttl, put
    the renewal time before the certificate was even issued. Never before notBefore.
    """
    window = min(declared, not_after - not_before) * ratio
    at = not_after - window - window * (jitter * rand)
    return max(at, not_before).replace(microsecond=0)


def holding(
    status: IssuedCertificateStatus,
    info: BundleInfo,
    *,
    options: CertOptions,
    state: State,
    jitter: float,
    rand: float,
) -> IssuedCertificateStatus:
    """`status` in `state`, holding the certificate `info` describes, with its renewal time."""
    renewal = renewal_time(
        not_before=info.not_before,
        not_after=info.not_after,
        declared=options.lifetime,
        ratio=options.secret_rotation_grace_period_ratio,
        jitter=jitter,
        rand=rand,
    )
    return status.model_copy(
        update={
            "state": state,
            "error": "",
            "not_before": info.not_before,
            "not_after": info.not_after,
            "serial_number": serial_hex(info.serial),
            "renewal_time": renewal,
        }
    )


def retry_delay(failed_attempts: int, *, timing: Timing, rand: float) -> float:
    """Seconds before the `failed_attempts`-th failure (1 = first) is retried: capped
    exponential backoff, +-20 % jitter, never above the cap."""
    base = timing.failure_backoff_initial * 2.0 ** max(0, failed_attempts - 1)
    capped = min(timing.failure_backoff_max, base)
    return min(timing.failure_backoff_max, capped * (0.8 + 0.4 * rand))
