"""The status mirror, and the issuer's health endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from pathlib import Path

import aiohttp

from devstack.ports import free_port
from issuer.issuer_testing import declaration, running, world
from services.issuer.handlers import StatusHandler
from shared.api.meta import ObjectKey
from shared.api.v1alpha2 import IssuedCertificate, State
from shared.bus import Delivery, NatsSettings
from shared.events import CertificateState, StatusChanged, StatusChangedData
from shared.k8s import EventRecorder
from shared.k8s.informer import Informer
from shared.k8s.resources import ISSUED_CERTIFICATES
from shared.runtime.concurrency import InFlight
from shared.runtime.health import HealthSettings
from support.waiting import eventually

KUBECTL = Path(sys.executable).parent / "kubectl"


async def kubectl(kubeconfig: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL),
        f"--kubeconfig={kubeconfig}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def report(
    cluster: str,
    name: str,
    state: CertificateState,
    *,
    issuance: str = "issuance-0001",
    generation: int = 1,
    error: str | None = None,
    not_after: dt.datetime | None = None,
) -> StatusChanged:
    return StatusChanged(
        source=f"agent/{cluster}",
        cluster=cluster,
        issuance=issuance,
        data=StatusChangedData(
            name=name,
            namespace="istio-system",
            state=state,
            error=error,
            observed_generation=4,  # the remote object's own count: not mirrored
            declaration_generation=generation,
            serial_number="0abc" if not_after else None,
            not_after=not_after,
        ),
    )


async def test_status_reports_of_every_cluster_are_mirrored_onto_the_declarations(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    expires = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    async with world(tmp_path, nats_settings) as w, running(w.settings()):
        await w.create(declaration("east", "istio-ca"))
        await w.create(declaration("west", "istio-ca"))
        await w.bus.publish(report("east", "istio-ca", CertificateState.REQUESTED))
        await w.bus.publish(
            report("east", "istio-ca", CertificateState.FINISHED, not_after=expires)
        )
        await w.bus.publish(
            report("west", "istio-ca", CertificateState.FAILED, error="bundle invalid: x")
        )
        # a report for nobody is acknowledged and changes nothing
        await w.bus.publish(report("east", "nobody", CertificateState.FINISHED))

        async def status(cluster: str) -> IssuedCertificate:
            raw = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace=cluster)
            return IssuedCertificate.from_object(raw)

        async def mirrored() -> bool:
            east, west = await status("east"), await status("west")
            return east.status.state == State.FINISHED and west.status.state == State.FAILED

        await eventually(mirrored, message="both clusters' states on the declarations")
        east, west = await status("east"), await status("west")
        assert east.status.not_after == expires
        assert east.status.observed_generation == 1
        assert east.status.error == ""
        assert east.status.issuance_id == "issuance-0001"
        assert west.status.error == "bundle invalid: x"

        # a late report of an earlier step of the same issuance does not roll it back
        await w.bus.publish(report("east", "istio-ca", CertificateState.ISSUED))
        await w.bus.publish(report("west", "istio-ca", CertificateState.FINISHED))

        async def drained() -> bool:
            info = await w.bus.connection.js.consumer_info("MESHTRUST", "issuer-status")
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(drained, message="every report handled")
        assert (await status("west")).status.state == State.FINISHED
        assert (await status("east")).status.state == State.FINISHED

        # what an operator sees on the management cluster
        table = await kubectl(w.kubeconfig, "get", "ic", "-A")
        rows = {tuple(line.split()[:3]) for line in table.splitlines()[1:]}
        assert ("east", "istio-ca", "FINISHED") in rows
        assert ("west", "istio-ca", "FINISHED") in rows
        assert "2027-01-01T00:00:00Z" in table


async def test_health_endpoints_answer_once_the_caches_are_synced(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    port = free_port()
    health = HealthSettings(host="127.0.0.1", port=port)
    async with (
        world(tmp_path, nats_settings) as w,
        running(w.settings(health=health)),
        aiohttp.ClientSession() as http,
    ):

        async def answers(path: str) -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(lambda: answers("/healthz"), message="/healthz")
        await eventually(lambda: answers("/readyz"), message="/readyz")


async def test_a_mirror_written_from_a_stale_cached_declaration_is_read_again_not_lost(
    tmp_path: Path, nats_settings: NatsSettings
) -> None:
    """The mirror writes from its informer's copy; when that copy is behind (here: frozen
    before the first write), the write is a 409 and the declaration is read fresh: both the
    newer status and everything written meanwhile survive."""
    async with world(tmp_path, nats_settings) as w:
        await w.create(declaration("east", "istio-ca"))
        informer = Informer(w.kube, ISSUED_CERTIFICATES)
        watching = asyncio.create_task(informer.run())
        await informer.wait_synced()
        watching.cancel()  # the cache stays as it is: no status at all
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        handler = StatusHandler(
            settings=w.settings(),
            kube=w.kube,
            recorder=EventRecorder(w.kube, component="meshtrust-issuer", instance="issuer-a"),
            declarations=informer,
        )
        delivery = Delivery(subject="", stream_sequence=1, num_delivered=1)
        await handler(report("east", "istio-ca", CertificateState.REQUESTED), delivery)
        await w.kube.patch_merge(
            ISSUED_CERTIFICATES,
            "istio-ca",
            {"metadata": {"labels": {"team": "mesh"}}},
            namespace="east",
        )
        expires = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
        finished = report("east", "istio-ca", CertificateState.FINISHED, not_after=expires)
        await handler(finished, delivery)
        cached = informer.get(ObjectKey("east", "istio-ca"))
        assert cached is not None
        assert "status" not in cached or not cached["status"].get("state")
        raw = await w.kube.get(ISSUED_CERTIFICATES, "istio-ca", namespace="east")
        stored = IssuedCertificate.from_object(raw)
        assert stored.status.state == State.FINISHED
        assert stored.status.not_after == expires
        assert raw["metadata"]["labels"] == {"team": "mesh"}


async def test_status_reports_make_way_for_csrs_in_flight_but_never_wait_long() -> None:
    in_flight = InFlight()
    await asyncio.wait_for(in_flight.none_within(60), 5)  # nothing in flight: at once
    with in_flight.held():
        waiting = asyncio.create_task(in_flight.none_within(60))
        done, _ = await asyncio.wait({waiting}, timeout=0.05)
        assert not done  # a CSR is being handled: the report waits
    await asyncio.wait_for(waiting, 5)  # and goes on as soon as none is
    with in_flight.held():
        await asyncio.wait_for(in_flight.none_within(0.01), 5)  # capped: CSRs never starve it
