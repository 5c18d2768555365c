"""Circuit breaker: opens on N failures in a window, fails fast, half-opens, closes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga.resilience.circuit import CircuitBreaker, CircuitOpen, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(b: CircuitBreaker) -> CircuitState:
    return b.state  # a call: each read is fresh for the type checker too


def breaker(clock: Clock, **kwargs: object) -> CircuitBreaker:
    options: dict[str, object] = {
        "failure_threshold": 3,
        "window": timedelta(seconds=10),
        "reset_timeout": timedelta(seconds=5),
        "clock": clock,
    }
    options.update(kwargs)
    return CircuitBreaker("bank", **options)  # type: ignore[arg-type]


def test_opens_after_threshold_failures_within_the_window() -> None:
    clock = Clock()
    bank = breaker(clock)
    for _ in range(2):
        bank.check()
        bank.record(ConnectionError())
    assert state(bank) is CircuitState.CLOSED
    bank.check()
    bank.record(ConnectionError())
    assert state(bank) is CircuitState.OPEN
    with pytest.raises(CircuitOpen, match=r"circuit 'bank' is open; next probe in 5\.0s"):
        bank.check()


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    bank = breaker(clock)
    bank.record(ConnectionError())
    bank.record(ConnectionError())
    clock.now += 11
    bank.record(ConnectionError())
    assert state(bank) is CircuitState.CLOSED


def test_failures_within_the_window_count_even_with_successes_between() -> None:
    clock = Clock()
    bank = breaker(clock)
    bank.record(ConnectionError())
    bank.record(None)
    bank.record(ConnectionError())
    bank.record(None)
    assert state(bank) is CircuitState.CLOSED
    bank.record(ConnectionError())
    assert state(bank) is CircuitState.OPEN


def test_a_probe_given_back_unused_lets_the_next_caller_probe() -> None:
    clock = Clock()
    bank = breaker(clock, failure_threshold=1)
    bank.record(ConnectionError())
    clock.now += 5
    bank.check()
    bank.release()  # e.g. the delivery turned out to be a duplicate
    bank.check()  # not stuck half-open
    bank.record(None)
    assert state(bank) is CircuitState.CLOSED


def test_half_open_lets_one_probe_through_success_closes_failure_reopens() -> None:
    clock = Clock()
    bank = breaker(clock, failure_threshold=1)
    bank.record(ConnectionError())
    clock.now += 5
    assert state(bank) is CircuitState.HALF_OPEN
    bank.check()  # the probe
    with pytest.raises(CircuitOpen):
        bank.check()  # a second caller while the probe runs
    bank.record(ConnectionError())
    assert state(bank) is CircuitState.OPEN
    clock.now += 5
    bank.check()
    bank.record(None)
    assert state(bank) is CircuitState.CLOSED
    bank.check()


async def test_used_as_a_context_manager_records_the_outcome() -> None:
    clock = Clock()
    bank = breaker(clock, failure_threshold=1)
    with pytest.raises(ConnectionError):
        async with bank:
            raise ConnectionError("refused")
    with pytest.raises(CircuitOpen):
        async with bank:
            raise AssertionError("not called while open")


def test_errors_that_are_not_the_dependencys_fault_count_as_success() -> None:
    clock = Clock()
    bank = breaker(
        clock, failure_threshold=1, counts_as_failure=lambda e: not isinstance(e, ValueError)
    )
    bank.record(ValueError("declined"))
    assert state(bank) is CircuitState.CLOSED


def test_states_lists_known_breakers(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    bank = breaker(clock, failure_threshold=1)
    with caplog.at_level("WARNING", logger="saga.resilience.circuit"):
        bank.record(ConnectionError())
    assert CircuitBreaker.states(["bank"]) == {"bank": "open"}
    assert "circuit 'bank': closed -> open" in caplog.text
