"""Process plumbing: key redaction in logs, the retry helper, the lifecycle's grace period."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field

import pytest
import stamina

from shared.runtime import (
    PermanentError,
    RetryPolicy,
    TransientError,
    retry,
    supervise,
)
from shared.runtime.logging import REDACTED, redact_private_keys

PK = "PRIVATE" + " KEY"  # built here so that no key-shaped header is written in the tree


@pytest.fixture(autouse=True)
def _no_retry_waits() -> None:
    stamina.set_testing(True, attempts=5)
    yield
    stamina.set_testing(False)


@pytest.mark.parametrize(
    "value",
    [
        f"-----BEGIN {PK}-----\nMIIE\n-----END {PK}-----",
        f"prefix -----BEGIN EC {PK}----- suffix",
        f"-----BEGIN RSA {PK}-----".encode(),
    ],
    ids=["PKCS8 PEM", "an EC key inside other text", "bytes"],
)
def test_log_lines_never_carry_private_keys(value: str | bytes) -> None:
    event = redact_private_keys(None, "info", {"event": "x", "payload": value})
    assert event["payload"] == REDACTED


def test_log_lines_keep_certificates_and_csrs() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----"
    assert redact_private_keys(None, "info", {"cert": cert})["cert"] == cert


async def test_retry_retries_only_the_errors_named() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("not yet")
        return "done"

    assert await retry(flaky, on=TransientError, policy=RetryPolicy()) == "done"
    assert calls == 3

    async def broken() -> str:
        raise PermanentError("Nope", "never")

    with pytest.raises(PermanentError):
        await retry(broken, on=TransientError, policy=RetryPolicy())


async def test_retry_gives_up_after_the_attempt_cap() -> None:
    calls = 0

    async def always() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    with pytest.raises(TransientError):
        await retry(always, on=TransientError, policy=RetryPolicy(attempts=5))
    assert calls == 5


@dataclass
class Worker:
    name: str
    obeys_stop: bool = True
    finished: bool = False
    cancelled: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        self.started.set()
        try:
            if self.obeys_stop:
                await stop.wait()
            else:
                await asyncio.Event().wait()
            self.finished = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_stop_lets_components_finish_and_cancels_the_late_ones() -> None:
    polite, stubborn = Worker("polite"), Worker("stubborn", obeys_stop=False)
    stop = asyncio.Event()

    async def stop_when_started() -> None:
        await polite.started.wait()
        await stubborn.started.wait()
        stop.set()

    async with asyncio.TaskGroup() as group:
        group.create_task(stop_when_started())
        group.create_task(supervise([polite, stubborn], grace=0.2, stop=stop, handle_signals=False))
    assert polite.finished
    assert not polite.cancelled
    assert stubborn.cancelled
    assert not stubborn.finished


async def test_sigterm_sets_stop() -> None:
    worker = Worker("w")

    async def send_sigterm() -> None:
        await worker.started.wait()
        os.kill(os.getpid(), signal.SIGTERM)

    async with asyncio.TaskGroup() as group:
        group.create_task(send_sigterm())
        group.create_task(supervise([worker], grace=1.0))
    assert worker.finished


async def test_components_that_return_by_themselves_end_the_service() -> None:
    @dataclass
    class OneShot:
        name: str = "one-shot"

        async def run(self, stop: asyncio.Event) -> None:
            return None

    await asyncio.wait_for(supervise([OneShot()], grace=1.0, handle_signals=False), 5)


async def test_a_failing_component_fails_the_service_and_cancels_the_rest() -> None:
    other = Worker("other")

    @dataclass
    class Failing:
        name: str = "failing"

        async def run(self, stop: asyncio.Event) -> None:
            await other.started.wait()
            raise RuntimeError("boom")

    with pytest.raises(ExceptionGroup) as caught:
        await supervise([other, Failing()], grace=1.0, handle_signals=False)
    assert caught.group_contains(RuntimeError, match="boom")
    assert other.cancelled


def test_freeze_start_up_moves_the_objects_alive_into_the_permanent_generation() -> None:
    import gc

    from shared.runtime.memory import freeze_start_up

    assert gc.get_freeze_count() == 0
    try:
        freeze_start_up()
        assert gc.get_freeze_count() > 10_000  # the test process's imports, at the least
    finally:
        gc.unfreeze()
