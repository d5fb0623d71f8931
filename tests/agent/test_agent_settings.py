"""AgentSettings from the environment, as a pod's Deployment sets them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.agent.settings import AgentSettings


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRUST_AGENT_CLUSTER", "east")
    monkeypatch.setenv("MESHTRUST_AGENT_INSTANCE", "agent-0")
    monkeypatch.setenv("MESHTRUST_AGENT_NAMESPACES", "istio-system, gloo-mesh")
    monkeypatch.setenv("MESHTRUST_AGENT_RESEND_AFTER", "5")
    monkeypatch.setenv("MESHTRUST_NATS_URLS", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("MESHTRUST_NATS_CREDS_FILE", "/etc/nats/east.creds")
    monkeypatch.setenv("MESHTRUST_KUBE_KUBECONFIG", "/etc/east.kubeconfig")
    monkeypatch.setenv("MESHTRUST_HEALTH_PORT", "9090")
    settings = AgentSettings()
    assert settings.cluster == "east"
    assert settings.source == "agent/agent-0"
    assert settings.durable == "agent-east"
    assert settings.namespaces == ("istio-system", "gloo-mesh")
    assert settings.resend_after == 5.0
    assert settings.nats.urls == ("nats://a:4222", "nats://b:4222")
    assert str(settings.nats.creds_file) == "/etc/nats/east.creds"
    assert str(settings.kube.kubeconfig) == "/etc/east.kubeconfig"
    assert settings.health.port == 9090


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHTRUST_AGENT_CLUSTER", "west")
    settings = AgentSettings()
    assert settings.resend_after == 60.0
    assert settings.namespaces == ()
    assert settings.kube.kubeconfig is None  # in-cluster
    assert settings.failure_backoff_initial < settings.failure_backoff_max


@pytest.mark.parametrize(
    "cluster",
    [
        pytest.param("East", id="an upper-case cluster name is refused"),
        pytest.param("east.1", id="a dotted cluster name is refused"),
        pytest.param("", id="an empty cluster name is refused"),
    ],
)
def test_a_cluster_name_must_be_one_subject_token(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHTRUST_AGENT_CLUSTER", cluster)
    with pytest.raises(ValidationError):
        AgentSettings()


def test_the_cluster_name_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHTRUST_AGENT_CLUSTER", raising=False)
    with pytest.raises(ValidationError, match="cluster"):
        AgentSettings()
