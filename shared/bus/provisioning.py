"""Idempotent provisioning of the stream `MESHTRUST` and the KV buckets.

Safe to run from every replica at every start: a missing stream is created, an existing one whose
configuration differs in a field we own is updated in place (its messages kept: a stream made by
an older version gets its size limit this way, discard-new first; a stream or bucket made with
one replica gets `MESHTRUST_NATS_STREAM_REPLICAS` / `..._KV_REPLICAS` once the server is a
cluster with that many nodes, docs/bus.md), and an equal one is left alone. Storage type
and retention are never changed in place (JetStream refuses it); a mismatch there is an error an
operator must resolve.
"""

from __future__ import annotations

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from shared.bus.settings import NatsSettings
from shared.events import STREAM_SUBJECTS
from shared.runtime.logging import get_logger

log = get_logger(__name__)

_DAY = 86_400.0
UNLIMITED = -1
"""JetStream's "no limit" for a stream's max_bytes and max_msgs."""


def stream_config(settings: NatsSettings) -> StreamConfig:
    """The MESHTRUST stream: limits retention (it is the audit log), file storage, at most
    `stream_max_bytes`; at the limit new events are refused (discard new), never old ones
    dropped: an old event may not be handled yet."""
    return StreamConfig(
        name=settings.stream,
        description="meshtrust events; also the audit log",
        subjects=[STREAM_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=settings.stream_max_bytes or UNLIMITED,
        num_replicas=settings.stream_replicas,
        duplicate_window=settings.duplicate_window,
        max_age=settings.stream_max_age_days * _DAY if settings.stream_max_age_days else None,
        # Read by direct get (shared.bus.reading): the auditor reads it across accounts.
        allow_direct=True,
    )


_OWNED = (
    "subjects",
    "num_replicas",
    "duplicate_window",
    "max_age",
    "description",
    "discard",
    "max_bytes",
    "allow_direct",
)


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update the fields we own when they drifted."""
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
        log.info("stream created", stream=config.name)
        return
    current = info.config
    # Only fields we set count: None (or nats-py's 0) leaves the server's default: no drift.
    drift = [
        f
        for f in _OWNED
        if getattr(config, f) is not None
        and _norm(getattr(current, f)) != _norm(getattr(config, f))
    ]
    if current.storage != config.storage or current.retention != config.retention:
        raise RuntimeError(
            f"stream {config.name} exists with storage={current.storage} "
            f"retention={current.retention}; expected {config.storage}/{config.retention}"
        )
    if drift:
        if current.discard != config.discard:
            # Discard new first, on its own: a limit applied while the stream still discards
            # old messages would drop the oldest (maybe unhandled) ones to fit.
            current.discard = config.discard
            await js.update_stream(current)
        await js.update_stream(config)
        log.info("stream updated", stream=config.name, fields=drift)
    _warn_if_full(config, info.state.bytes)


def _warn_if_full(config: StreamConfig, size: int) -> None:
    """A stream already holding its limit (a limit lowered below its size keeps every message;
    JetStream then refuses new ones): say so at every start."""
    if config.discard == DiscardPolicy.NEW and config.max_bytes and 0 < config.max_bytes <= size:
        log.error(
            "stream is at its size limit: new messages are refused until the limit is raised "
            "or old ones age out",
            stream=config.name,
            bytes=size,
            max_bytes=config.max_bytes,
        )


def _norm(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return round(float(value), 3) or None
    if isinstance(value, list):
        return sorted(value)
    return value


async def ensure_kv(
    js: JetStreamContext,
    *,
    bucket: str,
    history: int,
    replicas: int,
    description: str,
    ttl: float | None = None,
) -> KeyValue:
    """Open a KV bucket, creating it when missing; `ttl` (seconds) expires old entries.

    Buckets allow direct gets: a watch reads its snapshot that way (`shared.bus.kv`), the only
    read a cluster's identity has across accounts. A bucket made before that is opened to
    them here, and one with other replicas gets `replicas` (a clustered server copies its
    entries to the new peers in place); nothing else of an existing bucket is changed."""
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    else:
        info = await js.stream_info(f"KV_{bucket}")
        drift = []
        if not info.config.allow_direct:
            info.config.allow_direct = True
            drift.append("allow_direct")
        if (info.config.num_replicas or 1) != replicas:
            info.config.num_replicas = replicas
            drift.append("num_replicas")
        if drift:
            await js.update_stream(info.config)
            log.info("kv bucket updated", bucket=bucket, fields=drift)
            kv = await js.key_value(bucket)
        return kv
    config = KeyValueConfig(
        bucket=bucket,
        description=description,
        history=history,
        replicas=replicas,
        storage=StorageType.FILE,
        ttl=ttl,
        direct=True,
    )
    kv = await js.create_key_value(config)
    log.info("kv bucket created", bucket=bucket)
    return kv
