"""The bouncer's settings from the environment, and the durable consumer they describe."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.bouncer.app import consumer_settings
from services.bouncer.settings import BouncerSettings
from shared.events import EventType


def test_settings_come_from_meshtrust_variables_and_name_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHTRUST_BOUNCER_CLUSTER", "east")
    monkeypatch.setenv("MESHTRUST_BOUNCER_INSTANCE", "bouncer-7d9f-x2")
    monkeypatch.setenv("MESHTRUST_BOUNCER_REPLICAS_TIMEOUT", "90")
    monkeypatch.setenv("MESHTRUST_NATS_URLS", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("MESHTRUST_KUBE_KUBECONFIG", "/etc/meshtrust/east.kubeconfig")
    settings = BouncerSettings()
    assert settings.replicas_timeout == 90.0
    assert settings.nats.urls == ("nats://a:4222", "nats://b:4222")
    assert str(settings.kube.kubeconfig) == "/etc/meshtrust/east.kubeconfig"
    assert settings.source == "bouncer/bouncer-7d9f-x2"
    consumer = consumer_settings(settings)
    assert consumer.durable == "bouncer-east"
    assert consumer.filter_subjects == ("meshtrust.v1.east.bounce.requested",)
    assert consumer.accept == frozenset({EventType.BOUNCE_REQUESTED})
    assert consumer.max_in_flight == 2
    assert consumer.batch == 1


@pytest.mark.parametrize(
    "options",
    [
        {"cluster": "East"},
        {"cluster": "east", "instance": "Bouncer_0"},
        {"cluster": "east", "replicas_timeout": 0},
        {"cluster": "east", "max_in_flight": 0},
    ],
    ids=[
        "a cluster name that is not a DNS label is refused",
        "an instance that cannot be part of an event's source is refused",
        "a deadline of zero is refused",
        "a consumer without room for one bounce is refused",
    ],
)
def test_bad_settings_are_refused_at_start(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BouncerSettings(**options)  # type: ignore[arg-type]


def test_a_missing_cluster_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHTRUST_BOUNCER_CLUSTER", raising=False)
    with pytest.raises(ValidationError, match="cluster"):
        BouncerSettings()
