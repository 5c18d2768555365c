"""The idle fetch wait: when it grows, how far, and that it drops back with work."""

from __future__ import annotations

import asyncio
import doctest
import inspect

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher

from saga.kafka import fetch_wait
from saga.kafka.consumer import set_fetch_wait
from saga.kafka.fetch_wait import FetchWait
from saga.settings import Settings


def test_the_module_example_holds() -> None:
    assert doctest.testmod(fetch_wait, raise_on_error=False).failed == 0


def test_the_wait_stays_at_the_base_for_the_first_step() -> None:
    wait = FetchWait(base_ms=5, idle_ms=100, step_s=1.0)
    assert wait.update(busy=False, now=10.0) == 5
    assert wait.update(busy=False, now=10.99) == 5
    assert wait.update(busy=False, now=11.0) == 10


def test_the_wait_doubles_per_step_up_to_the_bound() -> None:
    wait = FetchWait(base_ms=5, idle_ms=100, step_s=1.0)
    assert [wait.wait_after(s) for s in (0, 1, 2, 3, 4, 5, 60, 3600)] == [
        5,
        10,
        20,
        40,
        80,
        100,
        100,
        100,
    ]


def test_work_drops_the_wait_back_at_once_and_restarts_the_idle_spell() -> None:
    wait = FetchWait(base_ms=5, idle_ms=100, step_s=1.0)
    wait.update(busy=False, now=0.0)
    assert wait.update(busy=False, now=30.0) == 100
    assert wait.update(busy=True, now=30.1) == 5
    # A new idle spell starts from the base again, not where the last one ended.
    assert wait.update(busy=False, now=30.2) == 5
    assert wait.update(busy=False, now=31.1) == 5
    assert wait.update(busy=False, now=31.2) == 10


def test_continuous_work_never_changes_the_wait() -> None:
    wait = FetchWait(base_ms=5, idle_ms=100, step_s=1.0)
    assert {wait.update(busy=True, now=t / 10) for t in range(1000)} == {5}


@pytest.mark.parametrize(("base", "bound"), [(500, 100), (500, 500), (5, 5), (5, 0), (100, 50)])
def test_a_bound_not_above_the_base_never_changes_the_wait(base: int, bound: int) -> None:
    wait = FetchWait(base_ms=base, idle_ms=bound, step_s=1.0)
    assert not wait.adapts
    assert {wait.update(busy=False, now=float(t)) for t in range(0, 3600, 7)} == {base}


def test_a_zero_base_grows_from_one_millisecond() -> None:
    wait = FetchWait(base_ms=0, idle_ms=8, step_s=0.5)
    assert [wait.wait_after(s) for s in (0, 0.5, 1.0, 1.5, 2.0)] == [0, 2, 4, 8, 8]


def test_an_odd_bound_is_reached_exactly() -> None:
    wait = FetchWait(base_ms=5, idle_ms=30, step_s=1.0)
    assert [wait.wait_after(s) for s in (1, 2, 3)] == [10, 20, 30]


def test_the_default_changes_nothing_against_apache_kafka() -> None:
    # Apache Kafka answers a waiting fetch when data arrives; the product's default
    # wait is long, and the idle bound is below it.
    settings = Settings()
    assert settings.fetch_idle_max_wait_ms <= settings.fetch_max_wait_ms
    assert not FetchWait(
        base_ms=settings.fetch_max_wait_ms, idle_ms=settings.fetch_idle_max_wait_ms
    ).adapts


def test_aiokafka_builds_each_fetch_from_the_attribute_we_set() -> None:
    # set_fetch_wait relies on it: if aiokafka renames it, the wait silently stays.
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(Fetcher.__init__)
    assert "self._fetch_max_wait_ms," in inspect.getsource(Fetcher._get_actions_per_node)


def test_set_fetch_wait_before_start_changes_nothing() -> None:
    async def unstarted() -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
        return set_fetch_wait(consumer, 50)

    assert asyncio.run(unstarted()) is False
