"""The bus boundaries, tried as an attacker would, from each identity's own credentials.

A real nats-server with the shipped account model (`devstack.natsconfig`), nkeys, provisioned
by the provisioner as `meshtrust-issuer provision` does. Each attack below was reproduced
against the per-user permission model this replaced (docs/bus.md, "Threat model"); each test
asserts what the server stored afterwards, message by message, not merely that a call failed.

Raw `nats-py` calls are used for the attacks on purpose: an attacker does not go through our
library. The hub's side is read with the issuer's (or the provisioner's) credentials.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from cli import ledger as cli_ledger
from shared.bus import Bus, Delivery, PublishError
from shared.bus.fleet import FleetConsumers, agent_consumer
from shared.bus.publishing import MSG_ID
from shared.bus.reading import read_stream
from shared.events import Event, EventType, InvalidEvent, decode, encode, subject
from support.events import sample_events
from support.secured_nats import SecuredNats, ledger, secured_nats
from support.waiting import eventually

CLUSTERS = ("east", "west")
STREAMS = ("MESHTRUST", "MESHTRUST_CONSUMED", "MESHTRUST_LEDGER", "KV_meshtrust-desired")
ATTACKERS = ("agent-west", "bouncer-west", "bouncer-east", "auditor")
"""Every identity that is not the hub's."""

CAPTURED = (
    "meshtrust.ledger.east",
    "meshtrust.consumed.agent-east",
    "meshtrust.consumed.issuer",
    "$KV.meshtrust-desired.east.issuedcertificates.istio-ca",
    "$KV.meshtrust-issued.east.0123456789abcdef",
    "meshtrust.v1.east.certificate.issued",
    "meshtrust.v1.east.csr.requested",
    "meshtrust.v1.west.status.changed",
)
"""Subjects a stream or bucket of the hub captures, of another cluster and of the issuer."""


@dataclass
class Hub:
    nats: SecuredNats
    issuer: Bus

    async def counts(self) -> dict[str, int]:
        js = self.issuer.connection.js
        out = {}
        for stream in (*STREAMS, "KV_meshtrust-issued"):
            out[stream] = (await js.stream_info(stream)).state.messages
        return out

    async def consumers(self) -> set[str]:
        js = self.issuer.connection.js
        names = set()
        for stream in ("MESHTRUST", "KV_meshtrust-desired"):
            names |= {info.name for info in await js.consumers_info(stream)}
        return names

    async def connect(self, user: str) -> Client:
        """A raw connection as `user`, as an attacker would make it."""
        return await self.nats.connect_raw(user)


@pytest.fixture(scope="module")
def nats_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredNats]:
    """One server for the module: every test compares what is stored before and after its
    own attack, so they need not start from an empty hub."""
    with secured_nats(tmp_path_factory.mktemp("hub"), CLUSTERS) as hub:
        asyncio.run(hub.provision(CLUSTERS))
        yield hub


@pytest.fixture
async def hub(nats_hub: SecuredNats) -> AsyncIterator[Hub]:
    async with Bus.connect(nats_hub.settings("issuer")) as issuer:
        # One issuer durable, as a running issuer has.
        await issuer.connection.js.add_consumer(
            "MESHTRUST",
            ConsumerConfig(
                name="issuer",
                durable_name="issuer",
                filter_subject="meshtrust.v1.*.csr.requested",
                ack_policy=AckPolicy.EXPLICIT,
            ),
        )
        yield Hub(nats_hub, issuer)


async def settle(client: Client) -> None:
    """Everything `client` sent has reached the server (and been acted on or refused)."""
    await client.flush(timeout=2)


def allowed_publish(user: str) -> tuple[str, bytes]:
    """A subject a cluster's `user` (`agent-west`, `bouncer-east`) may publish on, with a
    valid event."""
    service, _, cluster = user.partition("-")
    kind = EventType.STATUS_CHANGED if service == "agent" else EventType.BOUNCE_COMPLETED
    (event,) = [e for e in sample_events(cluster) if e.type == kind]
    return subject(cluster, kind), encode(event)


@pytest.mark.parametrize("attacker", [a for a in ATTACKERS if a != "auditor"])
@pytest.mark.parametrize("target", CAPTURED)
async def test_a_reply_subject_cannot_make_the_hub_store_anything(
    hub: Hub, attacker: str, target: str
) -> None:
    subject, payload = allowed_publish(attacker)
    before = await hub.counts()
    client = await hub.connect(attacker)
    try:
        # The publish itself is allowed (and stored once); JetStream's ack goes to `target`.
        await client.publish(subject, payload, reply=target)
        await settle(client)
    finally:
        await client.close()
    await eventually(lambda: _stored_more(hub, before, 1), message="the event stored")
    assert await hub.counts() == {**before, "MESHTRUST": before["MESHTRUST"] + 1}


async def _stored_more(hub: Hub, before: dict[str, int], n: int) -> bool:
    """The event stream holds exactly `n` messages more than `before`."""
    return (await hub.counts())["MESHTRUST"] == before["MESHTRUST"] + n


@pytest.mark.parametrize("target", CAPTURED)
async def test_the_auditors_reads_cannot_aim_answers_at_the_hub(hub: Hub, target: str) -> None:
    for event in sample_events("east"):
        await hub.issuer.publish(event)
    before = await hub.counts()
    client = await hub.connect("auditor")
    try:
        request = json.dumps({"seq": 1, "batch": 5}).encode()
        await client.publish("$JS.API.DIRECT.GET.MESHTRUST", request, reply=target)
        await client.publish("$JS.API.DIRECT.GET.MESHTRUST_LEDGER", request, reply=target)
        await settle(client)
    finally:
        await client.close()
    assert await hub.counts() == before


@pytest.mark.parametrize(
    ("attacker", "subject"),
    [
        ("bouncer-east", "meshtrust.v1.east.certificate.issued"),
        ("agent-west", "meshtrust.v1.east.certificate.issued"),
        ("agent-east", "meshtrust.v1.east.certificate.issued"),
        ("agent-east", "meshtrust.v1.east.certificate.denied"),
        ("bouncer-east", "meshtrust.v1.east.csr.requested"),
        ("bouncer-east", "meshtrust.v1.east.status.changed"),
        ("bouncer-east", "meshtrust.v1.east.bounce.requested"),
        ("agent-east", "meshtrust.v1.east.bounce.completed"),
        ("agent-west", "meshtrust.v1.east.csr.requested"),
        ("bouncer-west", "meshtrust.v1.east.bounce.completed"),
        ("auditor", "meshtrust.v1.east.status.changed"),
        ("agent-east", "meshtrust.ledger.east"),
        ("agent-east", "meshtrust.consumed.issuer"),
        ("agent-east", "$KV.meshtrust-desired.east.issuedcertificates.istio-ca"),
        ("agent-east", "$KV.meshtrust-issued.east.0123456789abcdef"),
    ],
)
async def test_an_identity_cannot_publish_what_is_not_its_own(
    hub: Hub, attacker: str, subject: str
) -> None:
    before = await hub.counts()
    forged = encode(sample_events("east")[1])
    client = await hub.connect(attacker)
    try:
        await client.publish(subject, forged, headers={MSG_ID: "forged"})
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await client.request(subject, forged, timeout=0.5)
    finally:
        await client.close()
    assert await hub.counts() == before


@pytest.mark.parametrize(
    "attacker", ["agent-east", "agent-west", "bouncer-east", "bouncer-west", "auditor"]
)
@pytest.mark.parametrize(
    "api",
    [
        "$JS.API.CONSUMER.DELETE.MESHTRUST.issuer",
        "$JS.API.CONSUMER.DELETE.MESHTRUST.agent-east",
        "$JS.API.CONSUMER.DELETE.MESHTRUST.bouncer-east",
        "$JS.API.CONSUMER.DELETE.KV_meshtrust-desired.desired-east",
        "$JS.API.STREAM.DELETE.MESHTRUST_LEDGER",
        "$JS.API.STREAM.PURGE.MESHTRUST",
        "$JS.API.STREAM.DELETE.KV_meshtrust-desired",
        "$JS.API.CONSUMER.CREATE.MESHTRUST.agent-east",
    ],
)
async def test_no_identity_but_the_hubs_can_delete_or_change_consumers_or_streams(
    hub: Hub, attacker: str, api: str
) -> None:
    consumers, counts = await hub.consumers(), await hub.counts()
    client = await hub.connect(attacker)
    try:
        body = json.dumps(
            {"stream_name": "MESHTRUST", "config": {"durable_name": "agent-east",
                                                    "deliver_subject": "meshtrust.ledger.east"}}
        ).encode()  # fmt: skip
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await client.request(api, body, timeout=0.5)
    finally:
        await client.close()
    assert await hub.consumers() == consumers
    assert await hub.counts() == counts
    info = await hub.issuer.connection.js.consumer_info("MESHTRUST", "agent-east")
    assert info.config.deliver_subject is None


@pytest.mark.parametrize("attacker", ["agent-west", "bouncer-east", "auditor"])
@pytest.mark.parametrize("durable", ["agent-east", "issuer"])
async def test_no_identity_can_pull_from_anothers_durable(
    hub: Hub, attacker: str, durable: str
) -> None:
    csr, issued = sample_events("east")[:2]
    await hub.issuer.publish(csr if durable == "issuer" else issued)
    before = await hub.issuer.connection.js.consumer_info("MESHTRUST", durable)
    assert before.num_pending >= 1
    client = await hub.connect(attacker)
    try:
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await client.request(
                f"$JS.API.CONSUMER.MSG.NEXT.MESHTRUST.{durable}", b'{"batch":1}', timeout=0.5
            )
    finally:
        await client.close()
    # Nothing was delivered from the durable (its delivered sequence did not move, nothing
    # awaits an ack) and the message still waits. Not num_pending itself: the server counts a
    # message just stored into it a moment later, so it can grow between the two reads.
    info = await hub.issuer.connection.js.consumer_info("MESHTRUST", durable)
    assert info.delivered.consumer_seq == before.delivered.consumer_seq
    assert info.num_ack_pending == 0
    assert info.num_pending >= 1


async def test_the_auditor_lists_the_ledger_and_is_told_what_it_could_not_check(
    hub: Hub,
) -> None:
    """`meshtrust ledger` with the auditor's credential (it failed with a traceback): the
    entries, and a note that the stream's configuration is out of this identity's sight."""
    entry = {"serial_number": "a1", "cluster": "east"}
    sequence = await ledger(hub.issuer).append(
        "meshtrust.ledger.east", json.dumps(entry).encode(), msg_id="audit"
    )
    err = io.StringIO()
    async with Bus.connect(hub.nats.settings("auditor")) as auditor:
        rows = await cli_ledger.read_rows(
            auditor, stream="MESHTRUST_LEDGER", cluster="east", start=1, err=err
        )
    assert sequence in {row["sequence"] for row in rows}
    assert "append-only settings were not checked" in err.getvalue()


@pytest.mark.parametrize(
    "api",
    [
        "$JS.API.STREAM.DELETE.MESHTRUST_LEDGER",
        "$JS.API.STREAM.PURGE.MESHTRUST_LEDGER",
        "$JS.API.STREAM.DELETE.MESHTRUST",
        "$JS.API.STREAM.PURGE.MESHTRUST",
        "$JS.API.STREAM.MSG.DELETE.MESHTRUST_LEDGER",
        "$JS.API.STREAM.MSG.DELETE.MESHTRUST",
    ],
)
async def test_the_issuers_credential_cannot_erase_the_ledger_or_the_audit_log(
    hub: Hub, api: str
) -> None:
    await ledger(hub.issuer).append("meshtrust.ledger.east", b'{"serial":"1"}', msg_id="one")
    await hub.issuer.publish(sample_events("east")[0])
    before = await hub.counts()
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await hub.issuer.connection.nc.request(api, b'{"seq":1}', timeout=0.5)
    assert await hub.counts() == before


async def test_the_issuers_credential_cannot_lift_the_ledgers_guarantees(hub: Hub) -> None:
    js = hub.issuer.connection.js
    config = (await js.stream_info("MESHTRUST_LEDGER")).config
    lifted = StreamConfig.from_response({**config.as_dict(), "deny_delete": False})
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await hub.issuer.connection.nc.request(
            "$JS.API.STREAM.UPDATE.MESHTRUST_LEDGER",
            json.dumps(lifted.as_dict()).encode(),
            timeout=0.5,
        )
    assert (await js.stream_info("MESHTRUST_LEDGER")).config.deny_delete is True


async def test_a_guessed_msg_id_cannot_pre_empt_the_issuers_answer(hub: Hub) -> None:
    issued = sample_events("east")[1]
    client = await hub.connect("agent-west")
    try:
        # West stores a message of its own under every id the answer could have untagged.
        subject, payload = allowed_publish("agent-west")
        for guess in (issued.dedupe_key(), f"{issued.issuance}:certificate.issued"):
            answer = await client.request(subject, payload, headers={MSG_ID: guess}, timeout=2)
            assert json.loads(answer.data)["stream"] == "MESHTRUST"
    finally:
        await client.close()
    published = await hub.issuer.publish(issued)
    assert not published.duplicate, "the real answer was dropped as a duplicate"


async def test_an_agent_publishing_outside_its_subjects_gets_an_error_it_can_act_on(
    hub: Hub,
) -> None:
    async with Bus.connect(hub.nats.settings("agent-west", publish_deadline=1.0)) as bus:
        with pytest.raises(PublishError, match="may this user publish"):
            await bus.publish(sample_events("east")[0])


async def test_a_deleted_cluster_consumer_comes_back_from_its_ack_floor(hub: Hub) -> None:
    js = hub.issuer.connection.js
    fleet = FleetConsumers(hub.issuer.connection, sweep_interval=30)
    await fleet.ensure("east")
    first, second = sample_events("east")[1], sample_events("east")[1]  # certificate.issued
    stored = await hub.issuer.publish(first)
    handled: Counter[int] = Counter()
    """Stream sequence -> times handled."""

    async def handler(event: Event, delivery: Delivery) -> None:
        handled[delivery.stream_sequence] += 1

    async with Bus.connect(hub.nats.settings("agent-east")) as agent:
        settings = agent_consumer("east").consumer_settings(provision=False, fetch_timeout=0.2)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(fleet.run(stop))
            group.create_task(agent.consumer(settings, handler).run(stop))
            await eventually(lambda: handled[stored.sequence] == 1)
            await eventually(
                lambda: _floor(js, "agent-east", stored.sequence), message="the first acked"
            )
            await fleet.check("east")  # the sweep's look: it notes the floor
            floor = (await js.consumer_info("MESHTRUST", "agent-east")).ack_floor.stream_seq
            await js.delete_consumer("MESHTRUST", "agent-east")
            await eventually(
                lambda: _exists(js, "agent-east"), message="the hub re-created agent-east"
            )
            config = (await js.consumer_info("MESHTRUST", "agent-east")).config
            assert (config.deliver_policy, config.opt_start_seq) == (
                DeliverPolicy.BY_START_SEQUENCE,
                floor + 1,
            ), "re-created just after the ack floor, not from the start"
            again = await hub.issuer.publish(second)
            await eventually(lambda: handled[again.sequence] == 1)
            stop.set()
    assert set(handled.values()) == {1}, "an event was handled twice"


async def _floor(js: object, durable: str, sequence: int) -> bool:
    info = await js.consumer_info("MESHTRUST", durable)  # type: ignore[attr-defined]
    return bool(info.ack_floor and info.ack_floor.stream_seq >= sequence)


async def _exists(js: object, durable: str) -> bool:
    try:
        await js.consumer_info("MESHTRUST", durable)  # type: ignore[attr-defined]
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_an_ack_aimed_at_the_publishers_own_subject_is_stored_there_and_nowhere_else(
    hub: Hub,
) -> None:
    """The one reply subject that stores anything is one the publisher imports itself: the ack
    becomes a message of its own cluster's subject, which it may publish on anyway, and no
    decoder takes it for an event."""
    (request,) = [e for e in sample_events("west") if e.type == EventType.BOUNCE_REQUESTED]
    before = await hub.counts()
    last = (await hub.issuer.connection.js.stream_info("MESHTRUST")).state.last_seq
    client = await hub.connect("agent-west")
    try:
        await client.publish(
            subject("west", EventType.BOUNCE_REQUESTED),
            encode(request),
            reply=subject("west", EventType.STATUS_CHANGED),
        )
        await settle(client)
    finally:
        await client.close()
    await eventually(lambda: _stored_more(hub, before, 2), message="the event and its ack")
    stored = [
        m
        async for m in read_stream(hub.issuer.connection, "MESHTRUST", subject=">", start=last + 1)
    ]
    assert [m.subject for m in stored] == [
        "meshtrust.v1.west.bounce.requested",
        "meshtrust.v1.west.status.changed",
    ]
    with pytest.raises(InvalidEvent):
        decode(stored[1].data, subject=stored[1].subject)
    assert {k: v for k, v in (await hub.counts()).items() if k != "MESHTRUST"} == {
        k: v for k, v in before.items() if k != "MESHTRUST"
    }
