"""Settings are read once from the environment, frozen, and passed down explicitly.

Every service's settings class derives from `MeshtrustSettings`, whose variables start with
`MESHTRUST_`; groups of settings (NATS, logging, ...) are their own classes with a longer prefix
(`MESHTRUST_NATS_`, `MESHTRUST_LOG_`) and are composed into a service's settings as fields.
Nothing reads `os.environ` anywhere else.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class MeshtrustSettings(BaseSettings):
    """Base of every settings class: prefix `MESHTRUST_`, frozen, unknown variables ignored."""

    model_config = SettingsConfigDict(env_prefix="MESHTRUST_", frozen=True, extra="ignore")
