"""A partition with records waiting whose position does not move is stalled; an idle one is not."""

from __future__ import annotations

import logging

import pytest

from saga.kafka.stalls import Progress, StallWatch, is_stalled, progress

AFTER = 60.0


def test_records_waiting_at_the_same_offset_for_longer_than_the_setting_is_a_stall() -> None:
    at = progress(None, position=7, waiting=True, now=100.0)
    at = progress(at, position=7, waiting=True, now=160.0)
    assert not is_stalled(at, waiting=True, now=160.0, after_s=AFTER), "not longer yet"
    at = progress(at, position=7, waiting=True, now=160.5)
    assert at == Progress(7, 100.0)
    assert is_stalled(at, waiting=True, now=160.5, after_s=AFTER)


def test_a_position_that_moves_starts_the_clock_again() -> None:
    at = progress(Progress(7, 0.0), position=8, waiting=True, now=500.0)
    assert at == Progress(8, 500.0)
    assert not is_stalled(at, waiting=True, now=500.0, after_s=AFTER)


def test_an_idle_partition_is_never_stalled_and_its_idle_time_does_not_count() -> None:
    at = progress(Progress(7, 0.0), position=7, waiting=False, now=1_000.0)
    assert not is_stalled(at, waiting=False, now=1_000.0, after_s=AFTER)
    # A record arrives after a long idle time: only the wait since then counts.
    at = progress(at, position=7, waiting=True, now=1_010.0)
    assert not is_stalled(at, waiting=True, now=1_010.0, after_s=AFTER)


def test_the_watch_logs_a_stall_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    watch = StallWatch("inventory", AFTER, clock=lambda: clock[0], wall=lambda: 1e9 + clock[0])
    caplog.set_level(logging.INFO, logger="saga.kafka.consumer")
    for now in (0.0, 30.0, 61.0, 90.0):
        clock[0] = now
        stalled = watch.check([("orders.events", 2, 41, True), ("orders.events", 0, 3, False)])
    [stall] = stalled
    assert (stall.topic, stall.partition, stall.offset) == ("orders.events", 2, 41)
    assert stall.since.timestamp() == 1e9
    assert stall.to_json()["since"] == "2001-09-09T01:46:40+00:00"
    clock[0] = 95.0
    assert watch.check([("orders.events", 2, 42, True), ("orders.events", 0, 3, False)]) == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("partition orders.events[2] stalled: no progress at offset 41")
    assert lines[1].startswith("partition orders.events[2] moves again after a stall")


def test_a_stalled_partition_revoked_from_this_member_is_no_longer_reported() -> None:
    clock = [0.0]
    watch = StallWatch("g", AFTER, clock=lambda: clock[0])
    watch.check([("t", 0, None, True)])
    clock[0] = 61.0
    assert [s.offset for s in watch.check([("t", 0, None, True)])] == [None]
    assert watch.check([]) == []
    assert watch.stalled == []
