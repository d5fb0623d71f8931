"""NATS connection and JetStream provisioning settings (`MESHTRUST_NATS_*`).

Every field says its unit and why its default. Lists come as comma-separated strings
(`MESHTRUST_NATS_URLS=nats://a:4222,nats://b:4222`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from shared.runtime.settings import MeshtrustSettings


class NatsSettings(MeshtrustSettings, env_prefix="MESHTRUST_NATS_"):
    urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("nats://127.0.0.1:4222",),
        description="Servers to try, comma-separated; the client fails over between them.",
    )
    name: str | None = Field(default=None, description="Connection name shown by nats-server.")

    # --- security: at most one of user/password, nkeys seed, creds file ---
    tls_ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    tls_cert_file: Path | None = Field(default=None, description="Client certificate (mTLS).")
    tls_key_file: Path | None = Field(default=None, description="Client key (mTLS).")
    user: str | None = None
    password: SecretStr | None = None
    nkeys_seed_file: Path | None = Field(default=None, description="File holding an nkeys seed.")
    creds_file: Path | None = Field(default=None, description="A JWT .creds file.")
    inbox_prefix: str = Field(
        default="_INBOX",
        description="Reply subjects' prefix; per-cluster users are allowed only their own.",
    )

    # --- timing ---
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds per connect attempt.")
    connect_deadline: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the first connection may take before the service fails with the "
        "reason (later disconnections are retried forever).",
    )
    reconnect_wait: float = Field(
        default=1.0, gt=0, description="Seconds between reconnect attempts; forever (-1 attempts)."
    )
    request_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to wait for one publish ack or API answer."
    )
    publish_deadline: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a publish keeps retrying (a stream leader election takes ~7 s).",
    )

    # --- JetStream provisioning ---
    stream: str = Field(default="MESHTRUST", description="The stream that is also the audit log.")
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Replicas of the event stream and the ledger; 1 locally, 3 in production "
        "(a clustered server raises an existing stream's replicas in place).",
    )
    stream_max_age_days: float = Field(
        default=365.0, ge=0, description="Audit history kept; 0 keeps it forever."
    )
    stream_max_bytes: int = Field(
        default=1024**3,
        ge=0,
        description="Bytes the event stream may hold; 0: no limit. At the limit JetStream "
        "refuses new events (discard new: an event not yet handled is never dropped to make "
        "room) until the audit history ages out or the limit is raised. 1 GiB: ~300,000 "
        "events, years of a large fleet's issuance; alert well before it "
        "(`meshtrust_bus_stream_bytes` / `meshtrust_bus_stream_max_bytes`).",
    )
    duplicate_window: float = Field(
        default=120.0,
        gt=0,
        description="Seconds during which a repeated Nats-Msg-Id is dropped (NATS default 2 min).",
    )
    kv_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="Replicas of the KV buckets and the record stream; 1 locally, 3 in production.",
    )
    provision: bool = Field(
        default=True,
        description="Create/update the stream and buckets at start; off where an operator "
        "provisions JetStream and the service user may not.",
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """A comma-separated string, or a sequence of them: one URL per server (a stack's
        recorded `nats_url` names every node of its NATS cluster, comma-separated)."""
        if isinstance(value, str):
            value = (value,)
        if isinstance(value, tuple | list):
            return tuple(
                part.strip()
                for item in value
                for part in (item.split(",") if isinstance(item, str) else (item,))
                if not isinstance(part, str) or part.strip()
            )
        return value

    @field_validator("urls")
    @classmethod
    def _at_least_one(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one NATS URL is needed")
        return value
