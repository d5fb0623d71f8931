"""Liveness end to end, in process: a real issuer (on the emulated management cluster) and a real
agent (on an emulated cluster "east"), on a real nats-server.

The agent is stopped with a certificate of a short lifetime: the management declaration shows
the silence and then the expiry on `status.error` (the mirrored state kept), the issuer's
expiry metric stays scrapeable and equals the certificate's notAfter; the agent starts again,
renews, and the flag clears. No sleeps: every wait is a condition with a deadline.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from agent.agent_testing import AgentProcess, put_trust_bundle
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from issuer.issuer_testing import World, declaration, install_crds, world
from issuer.test_issuer_metrics import replica
from services.agent.settings import AgentSettings
from services.issuer.liveness import LIVENESS_PREFIX
from shared.bus import NatsSettings
from shared.k8s import KubeClient
from shared.k8s.config import KubeSettings
from shared.k8s.resources import ISSUED_CERTIFICATES, NAMESPACES, SECRETS
from shared.runtime.health import HealthSettings
from support.metrics import scrape
from support.waiting import eventually

NAME = "istio-ca"
EXPIRY = "meshtrust_issuer_certificate_expiration_timestamp_seconds"
RENEWAL = "meshtrust_issuer_certificate_renewal_timestamp_seconds"
LAST_SEEN = "meshtrust_issuer_cluster_last_seen_timestamp_seconds"
TTL = "8s"
"""Short enough to expire while the agent is stopped; renewal is due at ~2/3 of it."""


@asynccontextmanager
async def east(tmp_path: Path, w: World) -> AsyncIterator[tuple[KubeClient, Path]]:
    """The emulated cluster east: our CRDs, istio-system, the trust bundle pinning the root."""
    from devstack.kubeapi import KubeAPI

    async with KubeAPI(name="east", tls=False, token=None, bookmark_interval=0.5) as api:
        kubeconfig = api.write_kubeconfig(tmp_path / "east.kubeconfig")
        async with KubeClient.from_kubeconfig(kubeconfig) as kube:
            await install_crds(kube)
            await kube.create(
                NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
            )
            root = w.hierarchy.root.cert.public_bytes(serialization.Encoding.PEM).decode()
            await put_trust_bundle(kube, root)
            yield kube, kubeconfig


def agent_settings(nats: NatsSettings, kubeconfig: Path) -> AgentSettings:
    return AgentSettings(
        cluster="east",
        instance="east-test",
        report_interval=0.3,
        renewal_jitter=0.0,
        fetch_timeout=0.2,
        grace=2.0,
        nats=nats,
        kube=KubeSettings(kubeconfig=kubeconfig, request_timeout=10.0),
        health=HealthSettings(host="127.0.0.1", port=0),
    )


async def mgmt_status(w: World) -> dict[str, Any]:
    obj = await w.kube.get(ISSUED_CERTIFICATES, NAME, namespace="east")
    return dict(obj.get("status") or {})


async def cacerts_not_after(kube: KubeClient) -> dt.datetime:
    secret = await kube.get(SECRETS, "cacerts", namespace="istio-system")
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca-cert.pem"]))
    return cert.not_valid_after_utc


async def test_a_stopped_agent_is_flagged_silent_and_expired_then_cleared(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    async with world(tmp_path, nats_settings) as w, east(tmp_path, w) as (kube, kubeconfig):
        settings = w.settings(
            backdate=dt.timedelta(0),
            silence_threshold=dt.timedelta(seconds=1.5),
            renewal_grace=dt.timedelta(seconds=30),
            liveness_interval=0.2,
            last_seen_resolution=dt.timedelta(0),
        )
        decl = declaration("east", NAME)
        decl["spec"]["certOptions"] = {"keyAlgorithm": "ECDSA", "keySize": 256, "ttl": TTL}
        agent = AgentProcess(agent_settings(nats_settings, kubeconfig))
        async with replica(settings) as port:
            await agent.start()
            try:
                await w.create(decl)

                async def finished() -> dict[str, Any] | None:
                    status = await mgmt_status(w)
                    ok = status.get("state") == "FINISHED" and status.get("lastSeenTime")
                    return status if ok and not status.get("error") else None

                await eventually(finished, within=30, message="FINISHED, seen, in mgmt")
                not_after = await cacerts_not_after(kube)
                labels = {"cluster": "east", "namespace": "istio-system", "name": NAME}

                async def reported() -> bool:
                    return (await scrape(port)).value(EXPIRY, **labels) == not_after.timestamp()

                await eventually(reported, within=10, message="the certificate reported")
                await agent.stop()

                # Silent first (1.5 s), then expired (the 8 s lifetime), the state kept.
                async def flagged() -> dict[str, Any] | None:
                    status = await mgmt_status(w)
                    error = str(status.get("error") or "")
                    return status if "silent since" in error and "expired at" in error else None

                status = await eventually(flagged, within=30, message="silence and expiry flagged")
                error = status["error"]
                assert status["state"] == "FINISHED"
                assert error.startswith(LIVENESS_PREFIX)
                assert "cluster east silent since" in error
                assert error.endswith("check the agent in east")
                expired_at = not_after.isoformat().replace("+00:00", "Z")
                assert f"its certificate expired at {expired_at}" in error

                # The expiry metric stays scrapeable from the issuer and is the certificate's.
                scraped = await scrape(port)
                assert scraped.value(EXPIRY, **labels) == not_after.timestamp()
                assert scraped.value(RENEWAL, **labels) is not None
                assert scraped.value(LAST_SEEN, cluster="east") is not None

                # The agent comes back: it renews, reports, and the flag clears.
                await agent.start()

                async def cleared() -> dict[str, Any] | None:
                    status = await mgmt_status(w)
                    fresh = status.get("notAfter") and status["notAfter"] > expired_at
                    done = status.get("state") == "FINISHED"
                    return status if not status.get("error") and fresh and done else None

                await eventually(cleared, within=30, message="renewed and the flag cleared")
                renewed = await cacerts_not_after(kube)
                assert renewed > not_after
            finally:
                await agent.stop()
