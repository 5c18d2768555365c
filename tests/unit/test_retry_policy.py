"""RetryPolicy: backoff shape, jitter bounds, retryability, and execution with tenacity."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga.resilience.retry import NonRetryableError, RetryPolicy, run_with_retry


def test_backoff_grows_by_the_coefficient_and_stops_at_the_maximum() -> None:
    policy = RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=3,
        maximum_interval=timedelta(seconds=20),
    )
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 9, 20]


def test_default_cap_is_a_hundred_initial_intervals() -> None:
    policy = RetryPolicy(initial_interval=timedelta(milliseconds=10), backoff_coefficient=10)
    assert policy.backoff(10) == timedelta(seconds=1)


@pytest.mark.parametrize(("rand", "seconds"), [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_jitter_spreads_within_its_fraction(rand: float, seconds: float) -> None:
    policy = RetryPolicy(initial_interval=timedelta(seconds=1), jitter=0.2)
    assert policy.delay(1, rand=lambda: rand).total_seconds() == pytest.approx(seconds)


def test_an_open_circuit_stretches_the_delay_to_its_next_probe() -> None:
    from saga.resilience.circuit import CircuitOpen

    policy = RetryPolicy(initial_interval=timedelta(milliseconds=100), jitter=0)
    assert policy.delay(1, error=CircuitOpen("bank", timedelta(seconds=9))) == timedelta(seconds=9)
    assert policy.delay(1, error=ConnectionError()) == timedelta(milliseconds=100)


def test_non_retryable_by_type_by_name_and_by_marker_class() -> None:
    class Declined(Exception):
        pass

    class HardDeclined(Declined):
        pass

    policy = RetryPolicy(non_retryable_error_types=(KeyError, "Declined"))
    assert not policy.is_retryable(KeyError("x"))
    assert not policy.is_retryable(HardDeclined())  # a subclass of a named type
    assert not policy.is_retryable(NonRetryableError())
    assert policy.is_retryable(ConnectionError())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_interval": timedelta(seconds=-1)},
        {"backoff_coefficient": 0.5},
        {"maximum_attempts": -1},
        {"jitter": 1.5},
        {"initial_interval": timedelta(seconds=5), "maximum_interval": timedelta(seconds=1)},
    ],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RetryPolicy().maximum_attempts = 3  # type: ignore[misc]


async def test_run_with_retry_counts_attempts_and_sleeps_per_policy() -> None:
    slept: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise ConnectionError("down")
        return "ok"

    policy = RetryPolicy(initial_interval=timedelta(seconds=1), jitter=0, maximum_attempts=5)
    assert await run_with_retry(policy, flaky, sleep=sleep) == "ok"
    assert calls == [1, 2, 3]
    assert slept == [1.0, 2.0]


async def test_run_with_retry_gives_up_after_maximum_attempts_with_the_last_error() -> None:
    calls: list[int] = []

    async def always(attempt: int) -> None:
        calls.append(attempt)
        raise ConnectionError(f"down {attempt}")

    async def sleep(seconds: float) -> None:
        pass

    with pytest.raises(ConnectionError, match="down 4"):
        await run_with_retry(RetryPolicy(maximum_attempts=4), always, sleep=sleep)
    assert calls == [1, 2, 3, 4]


async def test_non_retryable_error_fails_at_once_and_stopping_stops_retrying() -> None:
    calls: list[int] = []

    async def refuse(attempt: int) -> None:
        calls.append(attempt)
        raise NonRetryableError("no")

    with pytest.raises(NonRetryableError):
        await run_with_retry(RetryPolicy(), refuse)
    assert calls == [1]

    async def down(attempt: int) -> None:
        calls.append(attempt)
        raise ConnectionError

    calls.clear()
    with pytest.raises(ConnectionError):
        await run_with_retry(RetryPolicy(), down, keep_going=lambda: False)
    assert calls == [1]
