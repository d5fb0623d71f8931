"""Bus settings and the pure parts of the bus: connect options, nak backoff, stream config."""

from __future__ import annotations

import random
import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.bus import BusError, NatsSettings, connect_options, nak_delay, stream_config


def test_urls_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRUST_NATS_URLS", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("MESHTRUST_NATS_STREAM_REPLICAS", "3")
    settings = NatsSettings()
    assert settings.urls == ("nats://a:4222", "nats://b:4222")
    assert settings.stream_replicas == 3
    assert connect_options(settings)["servers"] == ["nats://a:4222", "nats://b:4222"]


def test_settings_are_frozen_and_validated() -> None:
    settings = NatsSettings()
    with pytest.raises(ValidationError):
        settings.stream = "OTHER"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        NatsSettings(urls=())
    with pytest.raises(ValidationError):
        NatsSettings(stream_replicas=0)


def test_user_and_password_are_passed_and_never_printed() -> None:
    settings = NatsSettings(user="agent-east", password="hunter2")  # type: ignore[arg-type]
    options = connect_options(settings)
    assert (options["user"], options["password"]) == ("agent-east", "hunter2")
    assert "hunter2" not in repr(settings)


def test_nkeys_seed_and_creds_files_are_passed_as_paths(tmp_path: Path) -> None:
    assert connect_options(NatsSettings(nkeys_seed_file=tmp_path / "seed"))["nkeys_seed"] == str(
        tmp_path / "seed"
    )
    creds = connect_options(NatsSettings(creds_file=tmp_path / "x.creds"))
    assert creds["user_credentials"] == str(tmp_path / "x.creds")


def test_two_kinds_of_credentials_at_once_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="choose one"):
        connect_options(NatsSettings(user="u", creds_file=tmp_path / "x.creds"))


def test_tls_with_a_ca_file_builds_a_verifying_context(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    options = connect_options(NatsSettings(tls_ca_file=ca_file))
    context = options["tls"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("delivered", "low", "high"),
    [(1, 0.8, 1.2), (2, 1.6, 2.4), (4, 6.4, 9.6), (7, 48.0, 72.0), (30, 48.0, 72.0)],
    ids=["first redelivery", "second doubles", "fourth", "reaches the cap", "stays capped"],
)
def test_nak_backoff_grows_and_caps(delivered: int, low: float, high: float) -> None:
    rng = random.Random(7)
    delays = [nak_delay(delivered, initial=1.0, cap=60.0, rng=rng) for _ in range(50)]
    assert all(low <= d <= high for d in delays)
    assert len(set(delays)) > 1, "jitter spreads redeliveries"


def test_stream_is_file_backed_limits_retention_with_the_settings_window() -> None:
    config = stream_config(NatsSettings(stream_replicas=3, duplicate_window=30))
    assert config.subjects == ["meshtrust.v1.>"]
    assert config.num_replicas == 3
    assert config.duplicate_window == 30
    assert str(config.storage) in {"file", "StorageType.FILE"}
    assert str(config.retention) in {"limits", "RetentionPolicy.LIMITS"}
