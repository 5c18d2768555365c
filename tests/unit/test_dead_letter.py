"""A dead letter keeps the record whole and says why and where it came from."""

from __future__ import annotations

from datetime import UTC, datetime

from saga.kafka.dead_letter import MAX_REASON_CHARS, dead_letter, describe_error, shrink
from saga.messages import headers as h
from saga.messages.codec import RawRecord

RECORD = RawRecord(
    topic="orders.events",
    partition=2,
    offset=41,
    key=b"o-1",
    value=b"\x00not json",
    headers=[("ce_id", b"m-1"), ("custom", None), (h.DLQ_REASON, b"stale")],
)


def test_dead_letter_keeps_key_value_and_original_headers_and_adds_provenance() -> None:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    letter = dead_letter(
        RECORD, reason="bad\nthing", error_type="NotJson", group="inventory", now=now
    )
    assert letter.topic == "orders.events.dlq"
    assert (letter.key, letter.value) == (b"o-1", b"\x00not json")
    assert letter.headers == [
        ("ce_id", b"m-1"),
        ("custom", None),
        (h.DLQ_REASON, b"bad thing"),
        (h.DLQ_ERROR_TYPE, b"NotJson"),
        (h.DLQ_TOPIC, b"orders.events"),
        (h.DLQ_PARTITION, b"2"),
        (h.DLQ_OFFSET, b"41"),
        (h.DLQ_GROUP, b"inventory"),
        (h.DLQ_TIME, b"2026-11-21T00:00:00+00:00"),
    ]


def test_reason_is_one_bounded_line() -> None:
    letter = dead_letter(RECORD, reason="x" * 5000, error_type="E", group="g")
    assert len(letter.reason) == MAX_REASON_CHARS


def test_describe_error_is_type_and_message_without_traceback() -> None:
    assert describe_error(ValueError("no\n  stock")) == "ValueError: no stock"
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_oversized_dead_letter_drops_the_value_then_the_original_headers_never_provenance() -> None:
    letter = dead_letter(RECORD, reason="r", error_type="E", group="g")
    no_value = shrink(letter, 5_000_000)
    assert no_value is not None
    assert no_value.value is None
    got = dict(no_value.headers)
    assert got[h.DLQ_VALUE_OMITTED] == b"value of 5000000 bytes left out: over the size limit"
    assert got["ce_id"] == b"m-1"
    bare = shrink(no_value, 900_000)
    assert bare is not None
    assert all(name.startswith("dlq_") for name, _ in bare.headers)
    assert dict(bare.headers)[h.DLQ_OFFSET] == b"41"
    assert shrink(bare, 800_000) is None
