"""A dead letter keeps the record whole and says why and where it came from."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import headers as h
from contracts.codec import RawRecord
from saga.dead_letter import MAX_REASON_CHARS, dead_letter, describe_error

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
