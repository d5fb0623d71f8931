"""Authorise and sign one `csr.requested`: gather, decide, have it answered.

1. If `meshtrust-issued` has a record for (cluster, issuance), the same question was answered
   already: `Answers` sends that certificate again (same serial), or denies `IssuanceReused` if
   the record is for another CSR. No new signature. A record that cannot be read answers
   nothing: the request is handled as if there were none, and the new record replaces the
   unreadable one by compare-and-set on its revision.
2. Read the declaration `<cluster>/<name>` and its signing Secret *live* from the API (not from a
   cache that may lag behind a generation bump); the cached declaration only chooses which
   Secret to read early. Decide with `policies.authorise`, with the cluster's ClusterRegistration
   from the issuer's cache (`registrations.py`; until its first list no CSR is answered: nak).
3. Take a token from the cluster's issuance bucket (`quota.py`, at the registration's rate if it
   sets one; none left: deny `RateLimited` with `retry_after`, not recorded); sign with the
   registration's name constraints, if any. Sign in the signing executor (CPU-bound), then
   `Answers.deliver`. Denials publish `certificate.denied`; they are not recorded, so a request
   denied for a missing declaration succeeds once the declaration exists.

Kubernetes failures are transient (nak with backoff). Nothing here logs or raises anything from
the CSR but names and fingerprints. Deliberately not here: the bus handler around this (one
issuance at a time, `handlers.py`), and recording and sending answers (`answers.py`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from services.issuer.answers import Answers
from services.issuer.policies import CsrInput, SigningState, authorise, scope_problem
from services.issuer.quota import IssuanceQuota
from services.issuer.registrations import Registrations, constraints_of, rate_of
from services.issuer.roots import RootMemory, root_changed
from services.issuer.rotating import Rotations
from services.issuer.rotating import decoded_secret_data as _decoded
from services.issuer.settings import IssuerSettings
from services.issuer.signer import SigningCAs, read_signing_secret, sign
from services.issuer.steps import StepCA, signs_with_new_ca, step_ca
from shared.api import reasons
from shared.api.meta import ObjectKey
from shared.api.rotations import CertificateRotation, Step
from shared.api.v1alpha2 import IssuedCertificate, ObjectRef
from shared.bus import Bucket
from shared.controller.policy import Finding
from shared.events import CsrRequested
from shared.k8s import KubeClient, KubeError, NotFound
from shared.k8s.early import read_early, spec_ref
from shared.k8s.informer import Informer
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS
from shared.pki import IssuedCertificate as Signed
from shared.pki import KeyPolicy, SigningCA, fingerprint
from shared.runtime import TransientError
from shared.runtime.clock import Clock, utcnow
from shared.runtime.concurrency import concurrently

__all__ = ["CsrSigning"]

_Secret = Mapping[str, Any] | Finding | None
"""The signing Secret as read (None: absent), or why it may not be used."""


class _RateLimited:
    """The cluster's issuance bucket is empty: deny `RateLimited`, re-send at `at`."""

    def __init__(self, cluster: str, at: datetime, rate: tuple[float, int], whose: str) -> None:
        self.at = at.replace(microsecond=0) + timedelta(seconds=1)  # rounded up, never early
        self.verdict = Finding(
            reasons.RATE_LIMITED,
            f"cluster {cluster} is over its issuance rate ({rate[1]} at once, then "
            f"{rate[0]:g} an hour, {whose}): the CSR was not signed; send it again at or "
            f"after {self.at.isoformat()}",
        )


@dataclass(frozen=True, slots=True)
class _Rotating:
    """A rotation covers the CSR's declaration: the cluster's step and the new CA's Secret."""

    rotation: CertificateRotation
    step: Step
    new_secret: _Secret


class _Unreadable(Exception):
    """The declaration exists but does not fit the model (say so, rather than 'no such')."""


@dataclass(kw_only=True, slots=True)
class CsrSigning:
    """Authorise-and-sign for `csr.requested` from every cluster; `handle` does one request."""

    settings: IssuerSettings
    kube: KubeClient
    issued: Bucket
    executor: Executor
    """The signing executor: the chain and the signature are CPU-bound."""
    cas: SigningCAs
    answers: Answers
    declarations: Informer | None = None
    """The issuer's IssuedCertificate informer: only to guess which Secret to read."""
    registrations: Registrations | None = None
    """The ClusterRegistrations (None: none are watched, the permissive mode)."""
    rotations: Rotations | None = None
    """The CertificateRotations: a cluster on a rotation step is signed for that step."""
    roots: Bucket | None = None
    """`meshtrust-roots` (None: hard cuts are not checked)."""
    clock: Clock = utcnow
    _policy: KeyPolicy = field(init=False)
    _quota: IssuanceQuota = field(init=False)
    _roots: RootMemory | None = field(init=False)

    def __post_init__(self) -> None:
        self._policy = self.settings.key_policy()
        self._quota = IssuanceQuota(
            per_hour=self.settings.issuance_per_hour, burst=self.settings.issuance_burst
        )
        self._roots = None if self.roots is None else RootMemory(self.roots)

    async def handle(self, event: CsrRequested, key: str) -> None:
        """Answer `event`, whose issuance has the `meshtrust-issued` key `key`."""
        if self.registrations is not None and not self.registrations.informer.has_synced:
            # Until they are listed, a registered cluster would look unregistered (permissive).
            raise TransientError("the ClusterRegistrations are not listed yet")
        # The record (was this issuance signed already?) and the state to sign against are
        # independent reads: both at once. The state goes unused when the record is there.
        entry, state = await concurrently(self.issued.get(key), self._read_state_or_why(event))
        if entry is not None and await self.answers.answered_before(event, entry):
            return
        # `entry`, if any, is answered by nothing: sign, and replace it by compare-and-set.
        if isinstance(state, KubeError):
            raise state  # the API failed us, and no record answers for it
        if isinstance(state, _Unreadable):
            await self.answers.deny(event, Finding(reasons.INVALID_DECLARATION, str(state)), None)
            return
        declaration, secret = state
        step = await self._rotation_step(event, declaration)
        remembered = await self._remembered_root(declaration, step)
        decide = functools.partial(
            self._decide, event, declaration, secret, self.clock(), step, remembered
        )
        outcome = await asyncio.get_running_loop().run_in_executor(self.executor, decide)
        if isinstance(outcome, _RateLimited):
            await self.answers.deny(event, outcome.verdict, declaration, retry_after=outcome.at)
            return
        if isinstance(outcome, Finding):
            await self.answers.deny(event, outcome, declaration)
            return
        assert declaration is not None
        await self.answers.deliver(event, declaration, outcome, corrupt=entry)
        await self._remember_root(declaration, secret)

    # -- gathering ----------------------------------------------------------------------------

    async def _read_state_or_why(
        self, event: CsrRequested
    ) -> tuple[IssuedCertificate | None, _Secret] | _Unreadable | KubeError:
        """The state, or why it cannot be read: returned, not raised, since the record read
        beside it decides first (a signed issuance is answered again from its record even while
        the declaration is unreadable or the API is down)."""
        try:
            return await self._read_state(event)
        except (_Unreadable, KubeError) as exc:
            return exc

    async def _read_state(self, event: CsrRequested) -> tuple[IssuedCertificate | None, _Secret]:
        cluster, name = event.cluster, event.data.name
        if not self.settings.is_cluster(cluster):
            return None, None
        # Both are read live. The Secret's name is in the declaration, but the cached
        # declaration almost always names the same one: read both at once, and read the
        # Secret again only if the live declaration names another.
        guess = self._signing_ref_cached(cluster, name)
        if guess is not None and not self.settings.signs_from(guess.namespace):
            guess = None  # a Secret outside the signing namespaces is never read
        raw, early = await concurrently(
            _get_or_none(self.kube, ObjectKey(cluster, name)),
            read_early(self.kube, SECRETS, guess),
        )
        if raw is None:
            return None, None
        try:
            declaration = IssuedCertificate.from_object(raw)
        except ValidationError:
            # The CRD admitted it but our model does not: the reconciler marks it FAILED.
            raise _Unreadable(
                f"IssuedCertificate {cluster}/{name} cannot be read by the issuer; see its status"
            ) from None
        ref = declaration.spec.signing_certificate_secret
        problem = scope_problem(ref.namespace, ref.name, self.settings.signing_namespaces)
        if problem is not None:
            return declaration, problem
        if early.answers(ObjectKey(ref.namespace, ref.name)):
            return declaration, early.object
        return declaration, await self._signing_secret(ObjectKey(ref.namespace, ref.name))

    async def _signing_secret(self, ref: ObjectKey) -> _Secret:
        """The signing Secret (None: absent), or why it may not be used; other API errors are
        transient (`SigningSecretForbidden` is not: a person must grant the read)."""
        try:
            return await read_signing_secret(self.kube, ref, scope=self.settings.signing_namespaces)
        except KubeError as exc:
            raise TransientError(f"reading Secret {ref.namespace}/{ref.name}: {exc}") from None

    def _signing_ref_cached(self, cluster: str, name: str) -> ObjectKey | None:
        """The signing Secret the cached declaration names, if it is cached."""
        if self.declarations is None:
            return None
        return spec_ref(self.declarations.get(ObjectKey(cluster, name)), "signingCertificateSecret")

    async def _remembered_root(
        self, declaration: IssuedCertificate | None, rotating: _Rotating | None
    ) -> str | None:
        """The root the declaration's Secret last signed under (None: unknown, or a rotation
        covers it: then the rotation decides which root)."""
        if self._roots is None or declaration is None or rotating is not None:
            return None
        ref = declaration.spec.signing_certificate_secret
        return await self._roots.remembered(ObjectKey(ref.namespace, ref.name))

    async def _remember_root(self, declaration: IssuedCertificate, secret: _Secret) -> None:
        """After a signature: the Secret's root, remembered (`roots.py`)."""
        if self._roots is None or secret is None or isinstance(secret, Finding):
            return
        ref = declaration.spec.signing_certificate_secret
        ca, _ = self.cas.load(secret, namespace=ref.namespace, name=ref.name, now=self.clock())
        if isinstance(ca, SigningCA):
            await self._roots.remember(ObjectKey(ref.namespace, ref.name), fingerprint(ca.root))

    async def _rotation_step(
        self, event: CsrRequested, declaration: IssuedCertificate | None
    ) -> _Rotating | None:
        """The rotation covering the declaration's Secret and the cluster's step, with the new
        CA's Secret read live; None outside a rotation. The step is the cluster's current one,
        whatever epoch the CSR carries (docs/rotation.md, "Which step a CSR is signed for")."""
        if self.rotations is None or declaration is None:
            return None
        ref = declaration.spec.signing_certificate_secret
        covered = self.rotations.covering(ObjectKey(ref.namespace, ref.name), event.cluster)
        if covered is None:
            return None
        rotation, step = covered
        new = rotation.spec.new_signing_certificate_secret
        secret = await self._signing_secret(ObjectKey(new.namespace, new.name))
        return _Rotating(rotation, step, secret)

    def _step_ca(
        self, rotating: _Rotating, old: SigningState, now: datetime
    ) -> tuple[SigningState, StepCA | None]:
        """The CA that signs for the step (or why none can), and the step's answer parts."""
        if not isinstance(old, SigningCA):
            return old, None
        new_secret = rotating.new_secret
        if isinstance(new_secret, Finding):
            return new_secret, None
        ref = rotating.rotation.spec.new_signing_certificate_secret
        new, _ = self.cas.load(new_secret, namespace=ref.namespace, name=ref.name, now=now)
        if not isinstance(new, SigningCA):
            return new, None
        cross = None
        if old.root != new.root and self.rotations is not None:
            made = self.rotations.cross_for(
                rotating.rotation, old, new, _decoded(new_secret), now=now
            )
            if isinstance(made, Finding):
                return made, None
            cross = made
        parts = step_ca(rotating.step, old=old, new=new, cross=cross)
        if isinstance(parts, Finding):
            return parts, None
        return parts.ca, parts

    # -- deciding -----------------------------------------------------------------------------

    def _signing_state(
        self,
        declaration: IssuedCertificate | None,
        secret: _Secret,
        now: datetime,
        rotating: _Rotating | None,
        remembered: str | None,
    ) -> tuple[SigningState | None, StepCA | None]:
        """The CA to sign with (or why none), and during a rotation the step's answer parts;
        outside one, a Secret now under another root than `remembered` is refused."""
        if isinstance(secret, Finding):
            return secret, None
        if declaration is None:
            return None, None
        ref = declaration.spec.signing_certificate_secret
        signing, _ = self.cas.load(secret, namespace=ref.namespace, name=ref.name, now=now)
        if rotating is not None:
            return self._step_ca(rotating, signing, now)
        if isinstance(signing, SigningCA):
            where = ObjectKey(ref.namespace, ref.name)
            cut = root_changed(where, remembered, fingerprint(signing.root), secret)
            return (signing if cut is None else cut), None
        return signing, None

    def _decide(
        self,
        event: CsrRequested,
        declaration: IssuedCertificate | None,
        secret: _Secret,
        now: datetime,
        rotating: _Rotating | None = None,
        remembered: str | None = None,
    ) -> Finding | _RateLimited | Signed:
        """Authorise and sign (runs in the signing executor); during a rotation with the CA
        and roots of the cluster's step (`steps.py`)."""
        signing, parts = self._signing_state(declaration, secret, now, rotating, remembered)
        registration = self.registrations.state(event.cluster) if self.registrations else None
        verdict = authorise(
            CsrInput(
                cluster=event.cluster,
                request=event.data,
                declaration=declaration,
                signing=signing,
                policy=self._policy,
                signing_namespaces=self.settings.signing_namespaces,
                registration=registration,
                rotated_to=_rotated_to(rotating),
            )
        )
        if verdict is not None:
            return verdict
        # Only a signature takes a token (an answer from the record never gets here).
        rate = rate_of(registration)
        retry_at = self._quota.take(event.cluster, now, rate=rate)
        if retry_at is not None:
            whose = "its ClusterRegistration's" if rate else "the issuer's default"
            default = (self.settings.issuance_per_hour, self.settings.issuance_burst)
            return _RateLimited(event.cluster, retry_at, rate or default, whose)
        # The chain allowed it, so both are there and the CA loaded.
        assert declaration is not None
        assert isinstance(signing, SigningCA)
        signed = sign(
            event.data.csr_pem,
            signing,
            declaration,
            max_ttl=self.settings.max_ttl,
            path_len=self.settings.path_len,
            backdate=self.settings.backdate,
            now=now,
            constraints=constraints_of(registration),
        )
        if parts is None or isinstance(signed, Finding):
            return signed
        return dataclasses.replace(signed, root_pem=parts.roots_pem)


def _rotated_to(rotating: _Rotating | None) -> ObjectRef | None:
    """The new CA's Secret when the cluster's rotation step signs with it."""
    if rotating is None or not signs_with_new_ca(rotating.step):
        return None
    return rotating.rotation.spec.new_signing_certificate_secret


async def _get_or_none(kube: KubeClient, key: ObjectKey) -> dict[str, Any] | None:
    """The declaration, None if absent; other API errors (a 403 too) are transient."""
    try:
        return await kube.get(ISSUED_CERTIFICATES, key.name, namespace=key.namespace)
    except NotFound:
        return None
    except KubeError as exc:
        raise TransientError(
            f"reading {ISSUED_CERTIFICATES.kind} {key.namespace}/{key.name}: {exc}"
        ) from None
