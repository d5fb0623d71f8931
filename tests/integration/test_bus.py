"""The bus against a real nats-server: publish, consume, dedupe, bad input, outcomes, stops."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest
from integration.bus_harness import Recorder, all_events_consumer, consumer_info, running
from structlog.testing import capture_logs

from devstack.natsserver import NatsServer
from shared.bus import Bus, NatsSettings, PublishError
from shared.bus.reading import read_stream
from shared.events import CsrRequested, EventType, encode, new_issuance_id, subject
from shared.runtime import PermanentError, TransientError
from shared.runtime.tracing import trace_id_for
from support.events import sample_events
from support.waiting import eventually


async def test_every_event_type_round_trips_through_publish_and_a_durable_consumer(
    bus: Bus,
) -> None:
    sent = sample_events("east") + sample_events("west")
    recorder = Recorder()
    async with running(bus.consumer(all_events_consumer(), recorder)):
        for event in sent:
            await bus.publish(event)
        await eventually(lambda: len(recorder.events) == len(sent), message="all events handled")
    assert sorted(recorder.events, key=lambda e: str(e.id)) == sorted(sent, key=lambda e: str(e.id))
    assert {type(e) for e in recorder.events} == {type(e) for e in sent}
    info = await consumer_info(bus, "test")
    assert info.num_ack_pending == 0  # type: ignore[attr-defined]
    assert info.num_pending == 0  # type: ignore[attr-defined]


async def test_the_same_issuance_published_twice_is_stored_and_handled_once(bus: Bus) -> None:
    first = sample_events("east")[0]
    # A different event object (new id, new time) for the same issuance and attempt: an agent
    # restarted mid-publish sends exactly this.
    again = first.model_copy(update={"id": uuid.uuid4()})
    one = await bus.publish(first)
    two = await bus.publish(again)
    assert not one.duplicate
    assert two.duplicate
    assert two.sequence == one.sequence
    recorder = Recorder()
    sentinel = sample_events("east")[5]
    async with running(bus.consumer(all_events_consumer(), recorder)):
        await bus.publish(sentinel)
        await eventually(lambda: sentinel in recorder.events, message="sentinel handled")
    assert recorder.by_issuance[first.issuance] == 1


async def test_bad_input_is_terminated_with_its_reason_and_never_stops_the_consumer(
    bus: Bus, nats_server: NatsServer
) -> None:
    good = sample_events("east")[0].model_dump(mode="json")
    bad: list[tuple[str, bytes]] = [
        ("meshtrust.v1.east.csr.requested", b"\x00\xffnot json"),
        ("meshtrust.v1.east.csr.requested", json.dumps({**good, "data": {"x": 1}}).encode()),
        ("meshtrust.v1.east.csr.requested", json.dumps({**good, "type": "csr.exploded"}).encode()),
        ("meshtrust.v1.east.csr.requested", b"{" + b" " * (300 * 1024) + b"}"),
        ("meshtrust.v1.west.csr.requested", json.dumps(good).encode()),
    ]
    raw = await nats.connect(nats_server.url)
    try:
        js = raw.jetstream()
        for subj, payload in bad:
            await js.publish(subj, payload)
    finally:
        await raw.close()
    recorder = Recorder()
    follower = sample_events("east")[1]
    with capture_logs() as logs:
        async with running(bus.consumer(all_events_consumer(), recorder)):
            await bus.publish(follower)
            await eventually(lambda: follower in recorder.events, message="good message handled")
            await eventually(
                lambda: sum(1 for e in logs if e["event"] == "terminating invalid message") == 5,
                message="every bad message terminated",
            )
    reasons = sorted(e["reason"] for e in logs if e["event"] == "terminating invalid message")
    assert reasons == sorted(
        ["NotJson", "SchemaMismatch", "UnknownType", "TooLarge", "SubjectMismatch"]
    )
    assert recorder.events == [follower], "no bad message reached the handler"
    info = await consumer_info(bus, "test")
    assert info.num_ack_pending == 0  # type: ignore[attr-defined]
    assert info.num_redelivered == 0  # type: ignore[attr-defined]


async def test_a_type_the_consumer_does_not_take_is_terminated(bus: Bus) -> None:
    recorder = Recorder()
    csr, issued = sample_events("east")[:2]
    settings = all_events_consumer(accept=frozenset({EventType.CERTIFICATE_ISSUED}))
    with capture_logs() as logs:
        async with running(bus.consumer(settings, recorder)):
            await bus.publish(csr)
            await bus.publish(issued)
            await eventually(lambda: issued in recorder.events)
            await eventually(lambda: any(e.get("reason") == "UnexpectedType" for e in logs))
    assert recorder.events == [issued]


async def test_a_transient_error_is_redelivered_after_its_delay(bus: Bus) -> None:
    async def fail_first(event: object, delivery: object) -> None:
        if recorder.deliveries[-1].num_delivered == 1:
            raise TransientError("kube-apiserver unavailable", retry_after=0.3)

    recorder = Recorder(behaviour=fail_first)  # type: ignore[arg-type]
    event = sample_events("east")[0]
    async with running(bus.consumer(all_events_consumer(), recorder)):
        await bus.publish(event)
        await eventually(lambda: recorder.by_issuance[event.issuance] == 1, message="retried")
    assert [d.num_delivered for d in recorder.deliveries] == [1, 2]


async def test_a_permanent_error_is_terminated_and_never_redelivered(bus: Bus) -> None:
    doomed, sentinel = sample_events("east")[0], sample_events("east")[0]

    async def refuse(event: CsrRequested, delivery: object) -> None:
        if event.issuance == doomed.issuance:
            raise PermanentError("NoDeclaration", "nothing is declared for east/istio-ca")

    recorder = Recorder(behaviour=refuse)  # type: ignore[arg-type]
    with capture_logs() as logs:
        async with running(bus.consumer(all_events_consumer(ack_wait=1.0), recorder)):
            await bus.publish(doomed)
            await eventually(lambda: doomed in recorder.events)
            await bus.publish(sentinel)
            await eventually(lambda: sentinel in recorder.events)

            async def nothing_pending() -> bool:
                info = await consumer_info(bus, "test")
                return info.num_ack_pending == 0  # type: ignore[attr-defined,no-any-return]

            # The sentinel's ack follows its completion record, a few milliseconds later.
            await eventually(nothing_pending, message="the doomed message terminated, not pending")
    assert [e.issuance for e in recorder.events].count(doomed.issuance) == 1
    assert any(e.get("reason") == "NoDeclaration" for e in logs)


async def test_an_unexpected_exception_is_logged_and_redelivered_with_backoff(bus: Bus) -> None:
    async def buggy(event: object, delivery: object) -> None:
        if recorder.deliveries[-1].num_delivered < 3:
            raise KeyError("a bug")

    recorder = Recorder(behaviour=buggy)  # type: ignore[arg-type]
    event = sample_events("east")[3]
    with capture_logs() as logs:
        async with running(bus.consumer(all_events_consumer(), recorder)):
            await bus.publish(event)
            await eventually(lambda: recorder.by_issuance[event.issuance] == 1, within=15)
    assert [d.num_delivered for d in recorder.deliveries] == [1, 2, 3]
    assert sum(e["event"] == "handler failed unexpectedly, redelivering" for e in logs) == 2


async def test_a_slow_handler_is_kept_alive_and_not_redelivered(bus: Bus) -> None:
    async def slow(event: object, delivery: object) -> None:
        # Work that outlasts ack_wait (1 s) several times over; in_progress() keeps it ours.
        await asyncio.sleep(2.5)

    recorder = Recorder(behaviour=slow)  # type: ignore[arg-type]
    event = sample_events("east")[0]
    async with running(bus.consumer(all_events_consumer(ack_wait=1.0), recorder)):
        await bus.publish(event)
        await eventually(lambda: recorder.by_issuance[event.issuance] == 1, within=15)
    assert [d.num_delivered for d in recorder.deliveries] == [1]


async def test_concurrency_is_bounded_by_max_in_flight(bus: Bus) -> None:
    running_now = 0
    peak = 0
    release = asyncio.Event()

    async def hold(event: object, delivery: object) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await release.wait()
        running_now -= 1

    recorder = Recorder(behaviour=hold)  # type: ignore[arg-type]
    events = [e for _ in range(4) for e in sample_events("east")[:3]]
    async with running(bus.consumer(all_events_consumer(max_in_flight=3), recorder)):
        for event in events:
            await bus.publish(event)
        await eventually(lambda: running_now == 3, message="three handlers running")
        info = await consumer_info(bus, "test")
        assert info.num_pending + info.num_ack_pending >= len(events) - 3  # type: ignore[attr-defined]
        release.set()
        await eventually(lambda: sum(recorder.by_issuance.values()) == len(events))
    assert peak == 3


async def test_stop_lets_in_flight_handlers_finish_and_fetches_nothing_new(bus: Bus) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def hold(event: object, delivery: object) -> None:
        entered.set()
        await release.wait()

    recorder = Recorder(behaviour=hold)  # type: ignore[arg-type]
    first, *rest = sample_events("east")
    consumer = bus.consumer(all_events_consumer(max_in_flight=1), recorder)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(stop))
        await bus.publish(first)
        await entered.wait()
        for event in rest:
            await bus.publish(event)
        stop.set()
        release.set()
        await task
    assert recorder.events == [first]
    assert recorder.by_issuance[first.issuance] == 1, "the in-flight handler completed"

    async def acked_and_nothing_more_fetched() -> bool:
        # The ack is not confirmed (the completion record makes it durable): the server
        # applies it a moment later, so wait for it rather than race it.
        info = await consumer_info(bus, "test")
        assert info.num_pending == len(rest)  # type: ignore[attr-defined]
        return info.num_ack_pending == 0  # type: ignore[attr-defined]

    await eventually(acked_and_nothing_more_fetched, within=5, message="the ack applied")


async def test_a_cancelled_handler_leaves_its_message_unacked_for_redelivery(bus: Bus) -> None:
    entered = asyncio.Event()

    async def never_done(event: object, delivery: object) -> None:
        entered.set()
        await asyncio.Event().wait()

    event = sample_events("east")[0]
    consumer = bus.consumer(all_events_consumer(ack_wait=1.0), Recorder(behaviour=never_done))  # type: ignore[arg-type]
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(consumer.run(stop))
        await bus.publish(event)
        await entered.wait()
        task.cancel()  # what the lifecycle does once the grace period is over
    assert task.cancelled()
    # The next consumer process gets it again, after ack_wait.
    recorder = Recorder()
    async with running(bus.consumer(all_events_consumer(ack_wait=1.0), recorder)):
        await eventually(lambda: event in recorder.events, within=10)
    assert recorder.deliveries[0].num_delivered == 2


async def test_a_publish_during_an_outage_lands_once_the_server_is_back(
    bus: Bus, nats_server: NatsServer
) -> None:
    nats_server.kill()
    event = sample_events("east")[0]
    publishing = asyncio.ensure_future(bus.publish(event))
    await eventually(lambda: not bus.connection.nc.is_connected, message="client noticed")
    await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
    published = await asyncio.wait_for(publishing, 30)
    assert published.sequence == 1
    assert not published.duplicate


async def test_a_consumer_that_opens_during_an_outage_waits_for_nats_past_its_deadline(
    nats_settings: NatsSettings, nats_server: NatsServer
) -> None:
    """The connect deadline is for the first connection: a service that is connected and
    opening its consumers when NATS goes away waits for it, as a running consumer does."""
    settings = nats_settings.model_copy(update={"connect_deadline": 3.0})
    async with Bus.connect(settings) as bus:
        await bus.provision()
        nats_server.kill()
        await eventually(lambda: not bus.connection.nc.is_connected, message="client noticed")
        recorder = Recorder()
        retries = "consumer not open yet, retrying"
        with capture_logs() as logs:
            async with running(bus.consumer(all_events_consumer(), recorder)):
                # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 2 s of retries: past the 3 s deadline.
                await eventually(
                    lambda: sum(1 for e in logs if e["event"] == retries) >= 6,
                    within=20,
                    message="the open retried past its deadline",
                )
                await asyncio.get_running_loop().run_in_executor(None, nats_server.start)
                event = sample_events("east")[0]
                await bus.publish(event)
                await eventually(lambda: event in recorder.events, within=20)


async def test_a_publish_that_can_never_land_fails_with_a_clear_error(
    nats_settings: NatsSettings,
) -> None:
    settings = nats_settings.model_copy(update={"publish_deadline": 1.5, "request_timeout": 0.3})
    async with Bus.connect(settings) as bus:
        # No stream provisioned: no responders for this subject, ever.
        with pytest.raises(PublishError, match="not stored within"):
            await bus.publish(sample_events("east")[0])


async def test_provisioning_is_idempotent_and_repairs_drift(nats_settings: NatsSettings) -> None:
    async with Bus.connect(nats_settings) as bus:
        await bus.provision()
        await bus.provision()
        info = await bus.connection.js.stream_info("MESHTRUST")
        assert info.config.duplicate_window == 120
    wider = nats_settings.model_copy(update={"duplicate_window": 300.0})
    async with Bus.connect(wider) as bus:
        await bus.provision()
        info = await bus.connection.js.stream_info("MESHTRUST")
        assert info.config.duplicate_window == 300
        assert await bus.connection.js.key_value("meshtrust-desired")


def test_subjects_used_by_the_tests_are_ours() -> None:
    assert subject("east", EventType.CSR_REQUESTED) == "meshtrust.v1.east.csr.requested"
    assert encode(sample_events()[0]).startswith(b"{")


async def test_a_second_provisioning_with_the_same_settings_changes_nothing(
    nats_settings: NatsSettings,
) -> None:
    """A restricted user (an agent) provisions after the issuer: it must find no drift."""
    async with Bus.connect(nats_settings) as bus:
        await bus.provision()
        before = {
            name: (await bus.connection.js.stream_info(name)).config
            for name in ("MESHTRUST", "MESHTRUST_CONSUMED", "KV_meshtrust-desired")
        }
        with capture_logs() as logs:
            await bus.provision()
        after = {name: (await bus.connection.js.stream_info(name)).config for name in before}
    assert [e for e in logs if e["event"] in {"stream updated", "stream created"}] == []
    assert after == before


async def test_an_event_stored_in_another_stream_than_configured_fails_clearly(
    nats_settings: NatsSettings,
) -> None:
    async with Bus.connect(nats_settings) as bus:
        await bus.provision()
    elsewhere = nats_settings.model_copy(update={"stream": "ELSEWHERE"})
    async with Bus.connect(elsewhere) as bus:
        with pytest.raises(PublishError, match="stored in stream MESHTRUST, not ELSEWHERE"):
            await bus.publish(sample_events("east")[0])


async def test_a_stored_event_carries_only_its_message_id_and_trace_headers(bus: Bus) -> None:
    """Every header is stored with the event and parsed by every consumer: only the dedupe id
    and the trace context (published outside a handler: the issuance's trace)."""
    event = sample_events("east")[0]
    published = await bus.publish(event)
    stored = await bus.connection.js.get_msg("MESHTRUST", published.sequence)
    assert stored.headers is not None
    assert stored.headers.keys() == {"Nats-Msg-Id", "traceparent"}
    assert stored.headers["Nats-Msg-Id"] == event.dedupe_key()
    assert stored.headers["traceparent"].startswith(f"00-{trace_id_for(event.issuance)}-")


async def test_completion_records_are_group_committed_and_cover_every_handled_message(
    bus: Bus,
) -> None:
    template = sample_events("east")[0]
    sent = [template.model_copy(update={"issuance": new_issuance_id()}) for _ in range(40)]
    recorder = Recorder()
    # Stored before the consumer starts, so that the handlers finish in bursts however slow
    # the machine is: published one by one to a running consumer, a loaded machine spaced the
    # completions further apart than the linger, and the test measured the machine.
    published = [await bus.publish(event) for event in sent]
    async with running(bus.consumer(all_events_consumer(), recorder)):
        await eventually(lambda: len(recorder.events) == len(sent), message="all handled")
    records = [
        record
        async for record in read_stream(
            bus.connection, "MESHTRUST_CONSUMED", subject="meshtrust.consumed.test"
        )
    ]
    recorded = [seq for record in records for seq in json.loads(record.data)]
    assert sorted(recorded) == [p.sequence for p in published]
    assert len(records) < len(sent) / 4, "records share writes"


async def test_a_consumer_asks_for_one_message_after_a_quiet_fetch_and_batches_in_a_stream(
    bus: Bus,
) -> None:
    """Pull requests as the server sees them: after a fetch that found nothing (and at start)
    a consumer asks for one message, so that a lone event is not held back behind a late
    status of an earlier request (shared.bus.consuming `_fetch_size`); while events keep
    coming it asks for batches."""
    nc = bus.connection.nc
    requests: list[int] = []

    async def seen(msg: nats.aio.msg.Msg) -> None:
        requests.append(int(json.loads(msg.data)["batch"]))

    spy = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{bus.settings.stream}.test", cb=seen)
    release = asyncio.Event()

    async def hold(event: object, delivery: object) -> None:
        await release.wait()

    recorder = Recorder(behaviour=hold)  # type: ignore[arg-type]
    settings = all_events_consumer(batch=4, max_in_flight=8, fetch_timeout=0.2)
    try:
        async with running(bus.consumer(settings, recorder)):
            await eventually(lambda: len(requests) >= 3, message="quiet fetches")
            assert set(requests) == {1}  # nothing came: one at a time
            events = [e for _ in range(3) for e in sample_events("east")[:3]]
            for event in events:
                await bus.publish(event)
            await eventually(
                lambda: any(batch > 1 for batch in requests), message="a batch asked for"
            )  # once events came (the first of them fetched alone)
            release.set()
            await eventually(lambda: sum(recorder.by_issuance.values()) == len(events))
            quiet = len(requests)
            await eventually(lambda: len(requests) >= quiet + 3, message="quiet again")
            assert requests[-1] == 1
    finally:
        await spy.unsubscribe()


async def test_a_consumer_whose_durable_is_deleted_makes_it_again_and_loses_nothing(
    bus: Bus,
) -> None:
    """Self-healing: the durable deleted under a running consumer (as the auditor could, before
    the account model) is made again from the server's ack floor; every event is handled, none
    twice."""
    recorder = Recorder()
    js = bus.connection.js
    first = [sample_events("east")[1] for _ in range(5)]
    then = [sample_events("east")[1] for _ in range(5)]
    async with running(bus.consumer(all_events_consumer(), recorder)):
        for event in first:
            await bus.publish(event)
        await eventually(lambda: len(recorder.events) == len(first), message="first handled")

        async def acked() -> bool:
            info = await js.consumer_info(bus.settings.stream, "test")
            return info.num_ack_pending == 0

        await eventually(acked, message="first acknowledged")
        await js.delete_consumer(bus.settings.stream, "test")
        for event in then:
            await bus.publish(event)
        await eventually(
            lambda: len(recorder.events) == len(first) + len(then), message="then handled"
        )
    assert sorted(recorder.by_issuance.values()) == [1] * (len(first) + len(then))
    info = await js.consumer_info(bus.settings.stream, "test")
    assert info.num_pending == 0
