"""Publishing events: JSON, `Nats-Msg-Id` from the issuance, retried until acknowledged.

JetStream acknowledges a publish once the stream has stored it. During an outage or a leader
election the publish times out (or finds no responders) although the buffered message may still
land later; so every publish carries a `Nats-Msg-Id` and is retried with the same id, and the
stream's duplicate window drops the repeat. A publish that is refused for any other reason
(for example a subject the user may not publish on) is not retried beyond `publish_deadline`.

Every event carries a W3C `traceparent` header (and `tracestate` when its trace has one): a
child of the span of the message being handled, else the first span of the issuance's trace
(`shared.runtime.spans.producing`). Retries send the same header: they are the same message.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.bus.connection import BusError, Connection
from shared.bus.settings import NatsSettings
from shared.events import Envelope, encode
from shared.events.subjects import PREFIX
from shared.runtime.errors import TransientError
from shared.runtime.logging import get_logger
from shared.runtime.retry import RetryPolicy, retry
from shared.runtime.spans import producing
from shared.runtime.tracing import TRACEPARENT

log = get_logger(__name__)

T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"

# What a publish may meet while the cluster recovers; everything else surfaces at once.
RETRIABLE: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)


@dataclass(frozen=True, slots=True)
class Published:
    stream: str
    sequence: int
    duplicate: bool
    """True when JetStream had the same Nats-Msg-Id already: nothing new was stored."""


async def once_then_retry(once: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """`once()`, retried under `policy` only after it met a RETRIABLE error: the common case,
    a first call that works, skips the retry machinery's cost on this hot path."""
    try:
        return await once()
    except RETRIABLE:
        return await retry(once, on=RETRIABLE, policy=policy)


MSG_ID_INFO = b"meshtrust nats-msg-id v1"


def msg_id_key(settings: NatsSettings) -> bytes | None:
    """The key that makes this identity's `Nats-Msg-Id`s its own, derived from its NATS
    credential (the nkey seed, the password or the creds file), so equal for every replica
    and restart of one identity; None without a credential (no identities to tell apart)."""
    material: bytes | None = None
    if settings.nkeys_seed_file is not None:
        material = settings.nkeys_seed_file.read_bytes().strip()
    elif settings.creds_file is not None:
        material = settings.creds_file.read_bytes()
    elif settings.password is not None:
        material = settings.password.get_secret_value().encode()
    if not material:
        return None
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MSG_ID_INFO).derive(material)


def msg_id(key: bytes | None, subject: str, dedupe_key: str) -> str:
    """The `Nats-Msg-Id` of a publish: the event's dedupe key, tagged with an HMAC over the
    subject and that key. JetStream deduplicates by id across the whole stream, whatever the
    subject, and any publisher may set any id: an untagged id that another identity can
    predict would let it store a message under that id first, and the real event would then
    be dropped as a duplicate. Only the holder of the credential can make the tag."""
    if key is None:
        return dedupe_key
    tag = hmac.new(key, f"{subject}\n{dedupe_key}".encode(), "sha256").hexdigest()[:32]
    return f"{dedupe_key}:{tag}"


class PublishError(BusError, TransientError):
    """The event could not be stored within the deadline; the message says why. Retry kind:
    the same publish (deduplicated by its message id) may succeed later."""


class Publisher:
    """Publishes events on `meshtrust.v1.<event.cluster>.<event.type>`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        settings = connection.settings
        self._policy = RetryPolicy(
            attempts=0,
            timeout=settings.publish_deadline,
            wait_initial=0.05,
            wait_max=2.0,
            wait_jitter=0.25,
        )
        self._timeout = settings.request_timeout
        self._stream = settings.stream
        self._key = msg_id_key(settings)

    async def publish(self, event: Envelope) -> Published:
        """Store `event` in the stream; raises `PublishError` when that cannot be done in time."""
        # The envelope's cluster is a validated DNS label: no need to check it again here.
        target = f"{PREFIX}.{event.cluster}.{event.event_type.value}"
        with producing(target, issuance=event.issuance) as span:
            headers = {MSG_ID: msg_id(self._key, target, event.dedupe_key()), **span.headers()}
            return await self._publish(event, target, headers)

    async def _publish(self, event: Envelope, target: str, headers: dict[str, str]) -> Published:
        payload = encode(event)
        js = self._connection.js

        async def once() -> Published:
            # Not `stream=` (a Nats-Expected-Stream header): it would be stored with every event
            # and parsed by every consumer. Streams cannot share subjects, so the stream that
            # answers is the one that owns the subject; checked below instead.
            ack = await js.publish(target, payload, timeout=self._timeout, headers=headers)
            return Published(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))

        try:
            result = await once_then_retry(once, self._policy)
        except RETRIABLE as exc:
            raise PublishError(
                f"{event.event_type.value} for issuance {event.issuance} not stored within "
                f"{self._policy.timeout:.0f}s ({type(exc).__name__}); is NATS up, and may this "
                f"user publish on {target}?"
            ) from None
        except nats.js.errors.APIError as exc:
            raise PublishError(f"JetStream refused {target}: {exc.description}") from None
        if result.stream != self._stream:
            raise PublishError(
                f"{target} was stored in stream {result.stream}, not {self._stream}: "
                "another stream captures meshtrust subjects"
            )
        log.debug(
            "published",
            subject=target,
            seq=result.sequence,
            duplicate=result.duplicate,
            issuance=event.issuance,
            traceparent=headers.get(TRACEPARENT),
        )
        return result
