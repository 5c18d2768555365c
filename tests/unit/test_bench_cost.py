"""The bench's arithmetic: CPU of a process tree between two samples, and its targets."""

from __future__ import annotations

import pytest

from tests.benchmarks.breakdown import Target, targets
from tests.benchmarks.cost import DRIVER, DatabaseSample, Sample, cpu_seconds, database_per_unit
from tests.benchmarks.cost import per_unit as cpu_per_unit


def test_processes_at_both_ends_count_their_difference() -> None:
    assert cpu_seconds(Sample({1: 2.0, 2: 1.0}), Sample({1: 2.5, 2: 1.25})) == pytest.approx(0.75)


def test_a_process_new_at_the_end_counts_in_full() -> None:
    assert cpu_seconds(Sample({1: 2.0}), Sample({1: 2.0, 7: 0.4})) == pytest.approx(0.4)


def test_a_process_that_ended_counts_through_what_its_parent_reaped() -> None:
    # Pid 3 had spent 1.0 s at the start and 1.5 s in all when it ended; pid 9
    # started and ended in between, spending 0.2 s. The parent reaped 1.7 s.
    start = Sample({1: 5.0, 3: 1.0}, reaped=10.0)
    end = Sample({1: 5.1}, reaped=11.7)
    assert cpu_seconds(start, end) == pytest.approx(0.1 + 0.5 + 0.2)


def test_per_unit_figures_leave_the_driver_out_of_the_total() -> None:
    start = {"coordinator": Sample({1: 1.0}), DRIVER: Sample({2: 1.0}), "broker": None}
    end = {"coordinator": Sample({1: 2.0}), DRIVER: Sample({2: 3.0}), "broker": None}
    figures = cpu_per_unit(start, end, 500)
    assert figures == {
        "cpu_ms_coordinator": pytest.approx(2.0),
        f"cpu_ms_{DRIVER}": pytest.approx(4.0),
        "cpu_ms_total": pytest.approx(2.0),
    }


def test_statements_fall_back_to_rows_where_they_are_not_counted() -> None:
    start, end = DatabaseSample(None, 100, 10, "0/0"), DatabaseSample(None, 300, 30, "0/0")
    assert database_per_unit(start, end, 10) == {"pg_commits": 2.0, "pg_rows": 20.0}
    counted = database_per_unit(
        DatabaseSample(5, 0, 0, "0/0"), DatabaseSample(45, 0, 10, "0/0"), 10
    )
    assert counted == {"pg_commits": 1.0, "pg_statements": 4.0}


def test_targets_compare_ours_with_the_floor_and_the_baseline() -> None:
    floor = {"throughput": 5000.0, "p50_ms": 15.0, "extra": {}}
    ours = {
        "throughput": 400.0,  # 0.08 of the floor's
        "p50_ms": 45.0,  # 3x the floor's
        "extra": {
            "cpu_ms_total": 2.5,
            "compensate_p50_ms": 40.0,  # one undo after the other
            "compensate_parallel_p50_ms": 20.0,  # both at once
        },
    }
    met = [t.met for t in targets(floor, ours, baseline_cpu_ms=6.0)]
    assert met == [True, True, False, False, True]
    assert [t.met for t in targets(floor, {"extra": {}})] == [None] * 5


def test_a_target_survives_its_round_trip_through_json() -> None:
    target = Target("throughput", 0.01, 0.06, at_most=False)
    assert target.met is False
    assert Target.from_dict(target.name, target.as_dict()) == target
