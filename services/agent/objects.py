"""The agent's thin I/O layer over Kubernetes: its names, labels and annotations, and the reads and
writes of the key Secret, the issued Secret and the verdicts handlers leave for the reconciler.

Every function takes plain values and does one request (or a read-then-write for a Secret that
may exist already); deciding what to write is the policies' job. Private keys are only ever put
into Secret `data` here; they appear in no annotation, label, log line or exception (the
exceptions of `shared.k8s` quote server messages, which never echo a Secret's data).

Deliberately not here: retries (the controller requeues with backoff; bus handlers nak).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.agent.bundles import BundleChecks
from services.agent.policies import KeyMaterial, Verdict
from shared.api.meta import Obj, ObjectKey, metadata
from shared.events.desired import TRUST_EPOCH_ANNOTATION
from shared.k8s.client import KubeClient
from shared.k8s.early import EarlyRead, read_early
from shared.k8s.errors import AlreadyExists, NotFound
from shared.k8s.resources import ISSUED_CERTIFICATES, SECRETS
from shared.pki import Bundle

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "meshtrust"
MANAGED_SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"

DECLARATION_UID = "meshtrust.io/declaration-uid"
DECLARATION_GENERATION = "meshtrust.io/declaration-generation"
DESIRED_KEY = "meshtrust.io/desired-key"
ISSUANCE_ID = "meshtrust.io/issuance-id"
ISSUED_CERTIFICATE = "meshtrust.io/issued-certificate"
"""On both Secrets: `namespace/name` of the IssuedCertificate they belong to."""
KEY_GENERATION = "meshtrust.io/generation"
ATTEMPT = "meshtrust.io/attempt"
REQUESTED_AT = "meshtrust.io/requested-at"
SERIAL_NUMBER = "meshtrust.io/serial-number"
SIGNING_CHAIN = "meshtrust.io/signing-chain-fingerprint"
"""On the IssuedCertificate: the desired signing-chain fingerprint (set by the applier); on the
key Secret and the issued Secret: the value the issuance was started under."""
TRUST_EPOCH = TRUST_EPOCH_ANNOTATION
"""On the IssuedCertificate: the rotation step the issuer asks for (copied from desired state);
on the key Secret and the issued Secret: the value the issuance was started under. Absent is the
epoch "" (outside any rotation); a difference re-issues (docs/agent.md, "Trust bundle")."""
CROSS_SIGNED = "meshtrust.io/cross-signed"
"""On the issued Secret: the cross certificates (PEM) the issuer's answer came with, by which a
pinned root vouches for a root of root-cert.pem the agent does not pin (a root rotation)."""
VERDICT = "meshtrust.io/verdict"
"""On the IssuedCertificate: JSON {issuance, kind, reason, message} left by a bus handler."""

ISSUED_SECRET = "issuedCertificateSecret"  # noqa: S105 - a field name, not a password
"""The IssuedCertificate's spec field naming its issued Secret."""

KEY_FIELD = "tls.key"
CSR_FIELD = "csr.pem"
KEY_SECRET_SUFFIX = "-meshtrust-key"  # noqa: S105 - a name, not a password


def key_secret_name(ic_name: str) -> str:
    """`<ic-name>-meshtrust-key` (docs/flow.md)."""
    return f"{ic_name}{KEY_SECRET_SUFFIX}"


def owner_of(secret: Mapping[str, Any]) -> ObjectKey | None:
    """The IssuedCertificate a Secret of ours belongs to, from its annotation."""
    value = metadata(secret).annotations.get(ISSUED_CERTIFICATE)
    if not isinstance(value, str) or "/" not in value:
        return None
    return ObjectKey.parse(value)


def is_managed(obj: Mapping[str, Any]) -> bool:
    return bool(metadata(obj).labels.get(MANAGED_BY) == MANAGED_BY_VALUE)


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(metadata(obj).annotations)


def declaration_uid(obj: Obj) -> str:
    """The declaration's uid (annotation); for an IssuedCertificate made locally, its own."""
    value = annotations_of(obj).get(DECLARATION_UID) or metadata(obj).uid or "unknown"
    return value[:64]


def declaration_generation_or_none(obj: Obj) -> int | None:
    """The declaration's generation from the annotation, if there is a usable one."""
    value = annotations_of(obj).get(DECLARATION_GENERATION)
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and number >= 1 else None


def declaration_generation(obj: Obj) -> int:
    """The declaration's generation; for an IssuedCertificate made locally, its own."""
    value = declaration_generation_or_none(obj)
    if value is not None:
        return value
    return max(1, metadata(obj).generation)


def secret_bytes(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's `data`, base64-decoded; undecodable values are left out."""
    out: dict[str, bytes] = {}
    for field, value in (secret.get("data") or {}).items():
        if not isinstance(value, str):
            continue
        try:
            out[field] = base64.b64decode(value, validate=True)
        except ValueError:
            continue
    return out


def issued_notes(
    *,
    issuance: str,
    serial: str,
    owner: ObjectKey,
    declaration_generation: int,
    signing_chain: str | None,
    trust_epoch: str,
    cross_signed: str | None,
) -> dict[str, str]:
    """The issued Secret's annotations for an issuance: whose it is, and what it was issued
    under (the declaration's generation, the signing-chain fingerprint, the trust epoch) and
    with (the cross certificates of its roots), for the checks of the Secret in place."""
    notes = {
        ISSUANCE_ID: issuance,
        SERIAL_NUMBER: serial,
        ISSUED_CERTIFICATE: str(owner),
        DECLARATION_GENERATION: str(declaration_generation),
    }
    if signing_chain:
        notes[SIGNING_CHAIN] = signing_chain
    if trust_epoch:
        notes[TRUST_EPOCH] = trust_epoch
    if cross_signed:
        notes[CROSS_SIGNED] = cross_signed
    return notes


def _b64(data: Mapping[str, bytes]) -> dict[str, str]:
    return {field: base64.b64encode(value).decode() for field, value in data.items()}


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeySecret:
    """The key Secret as read: what the policies see, and what only the I/O needs."""

    material: KeyMaterial
    key_pem: bytes
    csr_pem: bytes
    raw: Obj

    def __repr__(self) -> str:  # the dataclass repr would print the key
        return f"KeySecret(issuance={self.material.issuance!r})"


def read_key_secret(secret: Mapping[str, Any] | None) -> KeySecret | None:
    """The key Secret's facts, or None when absent or not one we could have written."""
    if secret is None:
        return None
    notes = annotations_of(secret)
    data = secret_bytes(secret)
    issuance = notes.get(ISSUANCE_ID)
    if not issuance or KEY_FIELD not in data or CSR_FIELD not in data:
        return None
    requested_at: dt.datetime | None = None
    if raw_time := notes.get(REQUESTED_AT):
        try:
            requested_at = dt.datetime.fromisoformat(raw_time)
        except ValueError:
            requested_at = None
    return KeySecret(
        material=KeyMaterial(
            issuance=issuance,
            generation=_int(notes.get(KEY_GENERATION)),
            attempt=max(1, _int(notes.get(ATTEMPT)) or 1),
            requested_at=requested_at,
            signing_chain=notes.get(SIGNING_CHAIN),
            trust_epoch=notes.get(TRUST_EPOCH, ""),
        ),
        key_pem=data[KEY_FIELD],
        csr_pem=data[CSR_FIELD],
        raw=dict(secret),
    )


def read_verdict(ic: Mapping[str, Any], issuance: str | None) -> Verdict | None:
    """The verdict a handler left for `issuance` (those of other issuances are stale)."""
    raw = annotations_of(ic).get(VERDICT)
    if not raw or issuance is None:
        return None
    try:
        value = json.loads(raw)
        verdict = Verdict(
            issuance=str(value["issuance"]),
            kind=value["kind"],
            reason=str(value.get("reason") or ""),
            message=str(value.get("message") or ""),
            retry_after=_aware(value.get("retry_after")),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if verdict.issuance != issuance or verdict.kind not in ("denied", "refused", "bounced"):
        return None
    return verdict


def _aware(value: object) -> dt.datetime | None:
    """An ISO 8601 time with its offset (raises ValueError/TypeError for anything else)."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("a time without an offset")
    return parsed


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class AgentObjects:
    """Reads and writes of the objects the agent owns, in one cluster."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.bundles = BundleChecks()
        """The bundle check, shared by the handler and the reconciler (checked once per bundle)."""

    async def get(self, resource: Any, namespace: str, name: str) -> Obj | None:
        try:
            return await self.kube.get(resource, name, namespace=namespace)
        except NotFound:
            return None

    async def get_secret(self, namespace: str, name: str) -> Obj | None:
        return await self.get(SECRETS, namespace, name)

    async def get_secret_early(self, ref: ObjectKey | None) -> EarlyRead:
        """The Secret `ref` names, read ahead (`shared.k8s.early`)."""
        return await read_early(self.kube, SECRETS, ref)

    async def settle(self, early: EarlyRead, ref: ObjectKey) -> Obj | None:
        """The Secret `ref` names (None: absent): the early read if it answers for it."""
        if early.answers(ref):
            return early.object
        return await self.get_secret(ref.namespace, ref.name)

    async def write_key_secret(
        self,
        ic: Mapping[str, Any],
        *,
        issuance: str,
        generation: int,
        key_pem: bytes,
        csr_pem: bytes,
        signing_chain: str | None,
        trust_epoch: str,
        requested_at: dt.datetime,
    ) -> Obj:
        """Create (or replace) the key Secret of a new issuance, owned by the IssuedCertificate
        so that it goes when the IssuedCertificate goes. Returns the Secret as stored.

        It records attempt 1 as requested at `requested_at` (just before it is sent): the
        re-send timer runs from there, and the first send needs no write of its own. A crash
        before that send is a restart, which sends the same attempt at once (`sent` is false)."""
        meta = metadata(ic)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": key_secret_name(name),
                "namespace": namespace,
                "labels": {MANAGED_BY: MANAGED_BY_VALUE},
                "annotations": {
                    ISSUANCE_ID: issuance,
                    ISSUED_CERTIFICATE: f"{namespace}/{name}",
                    KEY_GENERATION: str(generation),
                    ATTEMPT: "1",
                    REQUESTED_AT: _rfc3339(requested_at),
                    **({SIGNING_CHAIN: signing_chain} if signing_chain else {}),
                    **({TRUST_EPOCH: trust_epoch} if trust_epoch else {}),
                },
                "ownerReferences": [
                    {
                        "apiVersion": ic.get("apiVersion") or ISSUED_CERTIFICATES.api_version,
                        "kind": ISSUED_CERTIFICATES.kind,
                        "name": name,
                        "uid": meta.get("uid"),
                    }
                ],
            },
            "data": _b64({KEY_FIELD: key_pem, CSR_FIELD: csr_pem}),
        }
        return await self._create_or_replace(body)

    async def mark_sent(self, key: KeySecret, *, attempt: int, at: dt.datetime) -> None:
        """Record on the key Secret which attempt was sent, and when (for the re-send timer)."""
        meta = metadata(key.raw)
        await self.kube.patch_merge(
            SECRETS,
            str(meta["name"]),
            {"metadata": {"annotations": {ATTEMPT: str(attempt), REQUESTED_AT: _rfc3339(at)}}},
            namespace=str(meta["namespace"]),
        )

    async def delete_key_secret(self, ic_key: ObjectKey) -> None:
        with contextlib.suppress(NotFound):
            await self.kube.delete(
                SECRETS, key_secret_name(ic_key.name), namespace=ic_key.namespace
            )

    async def write_issued_secret(
        self,
        *,
        namespace: str,
        name: str,
        bundle: Bundle,
        notes: Mapping[str, str],
        current: Obj | None,
    ) -> None:
        """Write the four bundle fields in one request, so the Secret goes from one complete,
        valid bundle to the next with no moment in between. Other data fields and metadata an
        operator put on an existing Secret are kept.

        `notes` are the issuance's annotations (`issued_notes`); those of the previous issuance
        go. `current` is the Secret as the caller read it (None: absent). A stale read costs
        nothing but a retry: the create meets AlreadyExists (then the Secret is read), the
        replace carries the resourceVersion read and meets Conflict."""
        fields = _b64(bundle.to_secret_data())
        if current is None:
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "labels": {MANAGED_BY: MANAGED_BY_VALUE},
                    "annotations": dict(notes),
                },
                "data": fields,
            }
            try:
                await self.kube.create(SECRETS, body)
                return
            except AlreadyExists:
                current = await self.kube.get(SECRETS, name, namespace=namespace)
        meta = dict(metadata(current))
        meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: MANAGED_BY_VALUE}
        ours = (SIGNING_CHAIN, TRUST_EPOCH, CROSS_SIGNED, DECLARATION_GENERATION)
        kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in ours}
        meta["annotations"] = {**kept, **notes}
        # PUT with the resourceVersion read: a concurrent writer makes this a Conflict, retried.
        await self.kube.replace(
            SECRETS,
            {**current, "metadata": meta, "data": {**(current.get("data") or {}), **fields}},
        )

    async def set_verdict(self, ic_key: ObjectKey, verdict: Verdict) -> None:
        """Leave a handler's verdict on the IssuedCertificate (metadata only: no generation
        bump); the reconciler applies it if it is for the current issuance."""
        value = json.dumps(
            {
                "issuance": verdict.issuance,
                "kind": verdict.kind,
                "reason": verdict.reason,
                "message": verdict.message[:4000],
                "retry_after": (
                    verdict.retry_after.isoformat() if verdict.retry_after is not None else None
                ),
            },
            separators=(",", ":"),
        )
        await self.kube.patch_merge(
            ISSUED_CERTIFICATES,
            ic_key.name,
            {"metadata": {"annotations": {VERDICT: value}}},
            namespace=ic_key.namespace,
        )

    async def _create_or_replace(self, body: Obj) -> Obj:
        """The Secret as the API server stored it."""
        try:
            return await self.kube.create(SECRETS, body)
        except AlreadyExists:
            meta = body["metadata"]
            current = await self.kube.get(SECRETS, meta["name"], namespace=meta["namespace"])
            rv = metadata(current).resource_version
            return await self.kube.replace(
                SECRETS, {**body, "metadata": {**meta, "resourceVersion": rv}}
            )
