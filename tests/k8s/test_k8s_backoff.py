"""Backoff arithmetic: capped exponential delays with jitter, token bucket, combined limiter."""

from __future__ import annotations

import pytest

from shared.k8s.backoff import BackoffPolicy, ItemBackoff, RateLimiter, TokenBucket

POLICY = BackoffPolicy(base_seconds=0.5, factor=2.0, cap_seconds=10.0, jitter=0.2)


@pytest.mark.parametrize(
    ("failures", "rand", "expected"),
    [
        pytest.param(0, 0.5, 0.5, id="the first failure waits the base delay"),
        pytest.param(1, 0.5, 1.0, id="the second failure waits twice as long"),
        pytest.param(3, 0.5, 4.0, id="each further failure doubles the delay"),
        pytest.param(5, 0.5, 10.0, id="the delay stops growing at the cap"),
        pytest.param(
            10_000, 0.5, 10.0, id="a huge failure count neither overflows nor passes the cap"
        ),
        pytest.param(0, 0.0, 0.4, id="jitter can shorten a delay by at most its ratio"),
        pytest.param(0, 0.999999, 0.6, id="jitter can lengthen a delay by at most its ratio"),
        pytest.param(5, 0.999999, 10.0, id="jitter never pushes a delay past the cap"),
        pytest.param(5, 0.0, 8.0, id="jitter below the cap still applies"),
    ],
)
def test_backoff_policy_delay(failures: int, rand: float, expected: float) -> None:
    assert POLICY.delay(failures, rand=rand) == pytest.approx(expected, abs=1e-5)


def test_backoff_grows_monotonically_until_the_cap_without_jitter() -> None:
    policy = BackoffPolicy(base_seconds=0.01, factor=3.0, cap_seconds=60.0, jitter=0.0)
    delays = [policy.delay(n) for n in range(20)]
    assert delays == sorted(delays)
    assert delays[0] == pytest.approx(0.01)
    assert max(delays) == 60.0
    assert delays[-1] == 60.0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"factor": 0.5}, id="a shrinking factor is refused"),
        pytest.param({"jitter": 1.5}, id="jitter above one is refused"),
        pytest.param({"base_seconds": -1.0}, id="a negative base is refused"),
    ],
)
def test_backoff_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(**kwargs)


def test_item_backoff_counts_failures_per_key_and_forgets_them() -> None:
    item = ItemBackoff(
        policy=BackoffPolicy(base_seconds=1, cap_seconds=100, jitter=0), rand=lambda: 0.5
    )
    assert [item.when("a") for _ in range(4)] == [1, 2, 4, 8]
    assert item.when("b") == 1, "another key has its own count"
    assert item.failures("a") == 4
    item.forget("a")
    assert item.failures("a") == 0
    assert item.when("a") == 1, "a forgotten key starts again from the base delay"


def test_token_bucket_lets_a_burst_through_then_spaces_requests_at_qps() -> None:
    bucket = TokenBucket(qps=10, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert bucket.reserve(0.0) == pytest.approx(0.2), "reservations queue up"


def test_token_bucket_refills_with_time_up_to_the_burst() -> None:
    bucket = TokenBucket(qps=10, burst=2)
    bucket.reserve(0.0)
    bucket.reserve(0.0)
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) == 0.0
    assert bucket.reserve(100.0) > 0.0, "a long pause saves up no more than the burst"


def test_rate_limiter_takes_the_slower_of_key_backoff_and_bucket() -> None:
    limiter = RateLimiter(
        item=ItemBackoff(policy=BackoffPolicy(base_seconds=0.001, jitter=0), rand=lambda: 0.5),
        bucket=TokenBucket(qps=1, burst=1),
    )
    assert limiter.when("a", now=0.0) == pytest.approx(0.001), "the burst absorbs the first"
    assert limiter.when("b", now=0.0) == pytest.approx(1.0), "then the bucket dominates"
