"""A saga's spans become its hops: the path, the phases, the table (tests/benchmarks/hops.py)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from saga.dev.otlp_decode import CollectedSpan, SpanKind
from saga.observability import tracing
from tests.benchmarks.figures import Figures
from tests.benchmarks.hops import (
    PHASES,
    BenchTimes,
    breakdown,
    by_saga,
    render,
    saga_hops,
    saga_path,
    tracing_env,
    tracing_ratios,
)

MS = 1_000_000
_ids = itertools.count(1)


def span(
    service: str,
    kind: SpanKind,
    start_ms: float,
    end_ms: float,
    *,
    parent: CollectedSpan | None = None,
    message: str = "",
    message_type: str = "x.Thing",
    events: tuple[tuple[str, float], ...] = (),
    saga: str = "s-1",
) -> CollectedSpan:
    attributes: dict[str, Any] = {"saga.id": saga, "saga.message.type": message_type}
    if message:
        attributes["messaging.message.id"] = message
    return CollectedSpan(
        trace_id="t" * 32,
        span_id=f"{next(_ids):016x}",
        parent_span_id=parent.span_id if parent else None,
        name=f"{kind} {service}",
        kind=kind,
        service=service,
        start_ns=round(start_ms * MS),
        end_ns=round(end_ms * MS),
        attributes=attributes,
        status_code="unset",
        links=(),
        events=tuple((name, round(at * MS)) for name, at in events),
    )


def service_events(start: float) -> tuple[tuple[str, float], ...]:
    return (
        (tracing.DECODED, start + 0.1),
        (tracing.CLAIMED, start + 0.5),
        (tracing.HANDLED, start + 1.5),
        (tracing.WRITTEN, start + 2.0),
        (tracing.COMMITTED, start + 3.0),
    )


BENCH = BenchTimes(sent_ns=0, acked_ns=2 * MS, received_ns=30 * MS)


def a_saga() -> list[CollectedSpan]:
    """bench -> inventory -> coordinator -> bench; the coordinator also reads the
    first record (off the path), and inventory's record is read by payment too,
    which sends nothing on."""
    inventory = span(
        "inventory", "consumer", 5, 16, message="m1", events=service_events(5), message_type="A"
    )
    off_path = span("coordinator", "consumer", 6, 9, message="m1", message_type="A")
    sent = span("inventory", "producer", 8.2, 12, parent=inventory, message="m2", message_type="B")
    idle_reader = span("payment", "consumer", 13, 14, message="m2", message_type="B")
    coordinator = span(
        "coordinator",
        "consumer",
        15,
        29,
        message="m2",
        message_type="B",
        events=(
            (tracing.DECODED, 15.2),
            (tracing.LOADED, 17),
            (tracing.DECIDED, 17.5),
            (tracing.WRITTEN, 18),
            (tracing.COMMITTED, 19),
        ),
    )
    decide = span("coordinator", "internal", 17.4, 19, parent=coordinator)
    finished = span(
        "coordinator",
        "producer",
        19.5,
        25,
        parent=decide,
        message="m3",
        message_type="saga.SagaFinished",
    )
    return [finished, idle_reader, coordinator, off_path, inventory, decide, sent]


def test_the_path_follows_the_reader_that_sent_on() -> None:
    path = saga_path(a_saga())
    assert path is not None
    assert [(s.service if s else "bench", p.service if p else "bench") for s, p in path] == [
        ("bench", "inventory"),
        ("inventory", "coordinator"),
        ("coordinator", "bench"),
    ]


def test_hops_cut_each_trip_into_phases_that_add_up_to_the_end_to_end() -> None:
    hops = saga_hops(a_saga(), BENCH)
    assert hops is not None
    first, second, last = hops
    assert first.name == "bench -> inventory: A"
    assert first.phases == pytest.approx(
        {
            "publish": 2.0,
            "fetch wait": 3.0,
            "decode": 0.1,
            "tx begin": 0.4,
            "handler": 1.0,
            "writes": 0.5,
            "commit": 1.0,
            "hand-over": 0.2,
        }
    )
    assert first.total_ms == pytest.approx(8.2)
    assert first.after_ack_ms == pytest.approx(4.0)  # acked at 12, span ended at 16
    assert (first.records_out, first.commits) == (1, 1)
    assert second.phases["tx begin"] == pytest.approx(1.8)  # decoded 15.2 -> loaded 17
    assert second.phases["handler"] == pytest.approx(0.5)  # loaded -> decided
    assert second.phases["hand-over"] == pytest.approx(0.5)
    assert last.name == "coordinator -> bench: saga.SagaFinished"
    assert last.phases == pytest.approx({"publish": 5.5, "fetch wait": 5.0})
    total = sum(hop.total_ms for hop in hops)
    assert total == pytest.approx((BENCH.received_ns - BENCH.sent_ns) / MS)


def test_a_missing_event_gives_its_time_to_the_next_phase() -> None:
    spans = a_saga()
    inventory = next(s for s in spans if s.service == "inventory" and s.kind == "consumer")
    without = CollectedSpan(
        **{
            **inventory.__dict__,
            "events": tuple(e for e in inventory.events if e[0] != tracing.HANDLED),
        }
    )
    hops = saga_hops([without if s is inventory else s for s in spans], BENCH)
    assert hops is not None
    assert "handler" not in hops[0].phases
    assert hops[0].phases["writes"] == pytest.approx(1.5)
    assert hops[0].total_ms == pytest.approx(8.2)


@pytest.mark.parametrize("missing", ["finished", "sent", "first reader"])
def test_no_path_without_every_record_on_it(missing: str) -> None:
    spans = a_saga()
    drop: Callable[[CollectedSpan], bool] = {
        "finished": lambda s: s.attributes["saga.message.type"] == "saga.SagaFinished",
        "sent": lambda s: s.kind == "producer" and s.service == "inventory",
        "first reader": lambda s: s.attributes.get("messaging.message.id") == "m1",
    }[missing]
    assert saga_hops([s for s in spans if not drop(s)], BENCH) is None


def test_breakdown_and_table() -> None:
    hops = [saga_hops(a_saga(), BENCH) for _ in range(3)]
    result = breakdown([h for h in hops if h is not None], [30.0, 31.0, 32.0])
    assert result["sagas"] == 3
    assert [row["hop"] for row in result["hops"]] == [
        "bench -> inventory: A",
        "inventory -> coordinator: B",
        "coordinator -> bench: saga.SagaFinished",
    ]
    assert result["hops"][0]["total"]["p50"] == pytest.approx(8.2)
    assert result["saga_by_phase"]["publish"]["p50"] == pytest.approx(2.0 + 3.8 + 5.5)
    assert result["sum_of_hops"]["p50"] == pytest.approx(30.0)
    assert result["end_to_end"]["p50"] == pytest.approx(31.0)
    result["fetch_max_wait_ms"] = 5
    text = render(result)
    assert "bench -> inventory: A" in text
    assert "fetch_max_wait_ms=5" in text
    assert all(len(line.split()) >= len(PHASES) for line in text.splitlines()[2:4])


def test_no_sagas_no_table() -> None:
    assert render(breakdown([], [])).startswith("hops: no breakdown")


def test_spans_grouped_by_saga() -> None:
    spans = [span("a", "consumer", 0, 1, saga="x"), span("b", "consumer", 0, 1, saga="y")]
    assert {k: [s.service for s in v] for k, v in by_saga(spans).items()} == {
        "x": ["a"],
        "y": ["b"],
    }


def test_tracing_env_samples_all_or_a_ratio() -> None:
    assert tracing_env("http://h:1", None) == {
        "SAGA_OTLP_ENDPOINT": "http://h:1",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    assert tracing_env("http://h:1", 0.1)["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert tracing_env("http://h:1", 0.1)["OTEL_TRACES_SAMPLER_ARG"] == "0.1"


def test_tracing_ratios_are_over_the_untraced_row() -> None:
    rows = [
        Figures("ours: order saga", 200.0, 60.0, 90.0),
        Figures("ours, traced: every span over OTLP/HTTP", 100.0, 90.0, 120.0),
        Figures("FastStream", 300.0, 15.0, 20.0),
    ]
    assert tracing_ratios(rows) == {
        "traced (every span)/untraced throughput": 0.5,
        "traced (every span)/untraced p50": 1.5,
    }
