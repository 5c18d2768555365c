"""Envelope <-> record: every header survives, and every bad record names its problem."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from contracts.catalog import default_registry
from contracts.orders import OrderPlaced
from saga.messages import headers as h
from saga.messages.codec import RawRecord, decode, encode, header_map
from saga.messages.envelope import Envelope
from saga.messages.errors import (
    InvalidHeader,
    InvalidMessage,
    MissingHeader,
    NotJson,
    PayloadValidationFailed,
    UnknownMessageType,
    UnknownSchemaVersion,
)

REGISTRY = default_registry()


def placed(**changes: object) -> Envelope[OrderPlaced]:
    envelope = Envelope(
        payload=OrderPlaced(order_id="o-1", customer_id="c-1", amount_cents=1250),
        saga_id="o-1",
        source="/services/orders",
        saga_type="order",
        step="place",
        causation_id="cause-1",
        attempt=2,
        subject="order/o-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
        time=datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
    )
    return envelope.replace(**changes)


def raw(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> RawRecord:
    return RawRecord(
        topic="orders.events", partition=0, offset=7, key=key, value=value, headers=headers
    )


def as_raw(envelope: Envelope[OrderPlaced]) -> RawRecord:
    record = encode(envelope)
    return raw(record.key, record.value, list(record.headers))


def test_encode_writes_cloudevents_binary_mode_headers_and_key_saga_id() -> None:
    envelope = placed()
    record = encode(envelope)
    found = {k: v.decode() for k, v in record.headers}
    assert record.key == b"o-1"
    assert json.loads(record.value) == {
        "order_id": "o-1",
        "customer_id": "c-1",
        "amount_cents": 1250,
        "currency": "EUR",
        "sku": "sku-1",
        "quantity": 1,
        "payment_connection": None,
    }
    assert found == {
        h.ID: envelope.id,
        h.SOURCE: "/services/orders",
        h.SPECVERSION: "1.0",
        h.TYPE: "orders.OrderPlaced",
        h.TIME: "2026-11-21T12:00:00+00:00",
        h.CONTENT_TYPE: "application/json",
        h.SUBJECT: "order/o-1",
        h.SAGA_ID: "o-1",
        h.SAGA_TYPE: "order",
        h.SAGA_STEP: "place",
        h.CAUSATION_ID: "cause-1",
        h.ATTEMPT: "2",
        h.SCHEMA_VERSION: "2",
        h.TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        h.TRACESTATE: "vendor=1",
    }


def test_decode_of_encode_is_the_same_envelope() -> None:
    envelope = placed()
    assert decode(as_raw(envelope), REGISTRY) == envelope


def test_optional_attributes_are_omitted_and_read_back_as_defaults() -> None:
    envelope = Envelope(
        payload=OrderPlaced(order_id="o-2", customer_id="c", amount_cents=1),
        saga_id="o-2",
        source="/s",
    )
    record = encode(envelope)
    assert {k for k, _ in record.headers} == {
        h.ID,
        h.SOURCE,
        h.SPECVERSION,
        h.TYPE,
        h.TIME,
        h.CONTENT_TYPE,
        h.SAGA_ID,
        h.ATTEMPT,
        h.SCHEMA_VERSION,
    }
    back = decode(as_raw(envelope), REGISTRY)
    assert back == envelope
    assert back.saga_type is None
    assert back.attempt == 1


@pytest.mark.parametrize("missing", h.REQUIRED)
def test_each_missing_required_header_is_named(missing: str) -> None:
    record = as_raw(placed())
    headers = [(k, v) for k, v in record.headers if k != missing]
    with pytest.raises(MissingHeader) as caught:
        decode(raw(record.key, record.value, headers), REGISTRY)
    assert caught.value.reason == f"missing required header {missing!r}"


def test_empty_required_header_counts_as_missing() -> None:
    record = as_raw(placed())
    headers = [(k, b"" if k == h.TYPE else v) for k, v in record.headers]
    with pytest.raises(MissingHeader, match="ce_type"):
        decode(raw(record.key, record.value, headers), REGISTRY)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (None, r"empty \(null\)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_value_that_is_not_json_is_rejected(value: bytes | None, problem: str) -> None:
    record = as_raw(placed())
    with pytest.raises(NotJson, match=problem):
        decode(raw(record.key, value, list(record.headers)), REGISTRY)


def test_unknown_type_is_rejected_with_the_type() -> None:
    record = as_raw(placed())
    headers = [(k, b"orders.Nonsense" if k == h.TYPE else v) for k, v in record.headers]
    with pytest.raises(UnknownMessageType, match=r"orders\.Nonsense"):
        decode(raw(record.key, record.value, headers), REGISTRY)


def test_newer_schema_version_is_rejected() -> None:
    record = as_raw(placed())
    headers = [(k, b"3" if k == h.SCHEMA_VERSION else v) for k, v in record.headers]
    with pytest.raises(UnknownSchemaVersion, match="newer than the newest known version 2"):
        decode(raw(record.key, record.value, headers), REGISTRY)


def test_old_schema_version_is_upcast_to_the_current_model() -> None:
    record = as_raw(placed())
    headers = [(k, b"1" if k == h.SCHEMA_VERSION else v) for k, v in record.headers]
    v1 = json.dumps({"order_id": "o-1", "customer_id": "c-1", "amount": 12}).encode()
    envelope = decode(raw(record.key, v1, headers), REGISTRY)
    assert envelope.payload == OrderPlaced(order_id="o-1", customer_id="c-1", amount_cents=1200)


def test_schema_invalid_payload_names_the_field_but_not_the_value() -> None:
    record = as_raw(placed())
    bad = json.dumps({"order_id": "o-1", "customer_id": "c-1", "amount_cents": "secret-42"})
    with pytest.raises(PayloadValidationFailed) as caught:
        decode(raw(record.key, bad.encode(), list(record.headers)), REGISTRY)
    assert "amount_cents" in caught.value.reason
    assert "secret-42" not in caught.value.reason


@pytest.mark.parametrize(
    ("header", "value", "problem"),
    [
        (h.SPECVERSION, b"0.3", "expected '1.0'"),
        (h.CONTENT_TYPE, b"application/avro", "expected 'application/json'"),
        (h.TIME, b"yesterday", "not an RFC 3339 timestamp"),
        (h.TIME, b"2026-11-21T12:00:00", "no UTC offset"),
        (h.SCHEMA_VERSION, b"two", "positive integer"),
        (h.ATTEMPT, b"0", "positive integer"),
        (h.ATTEMPT, "²".encode(), "positive integer"),
        (h.SCHEMA_VERSION, b"1" * 5000, "positive integer"),
        (h.SAGA_ID, b"\xff", "not UTF-8"),
    ],
)
def test_unreadable_header_is_rejected(header: str, value: bytes, problem: str) -> None:
    record = as_raw(placed())
    headers = [(k, value if k == header else v) for k, v in record.headers]
    with pytest.raises(InvalidHeader, match=problem):
        decode(raw(record.key, record.value, headers), REGISTRY)


def test_key_must_be_the_saga_id_so_ordering_holds() -> None:
    record = as_raw(placed())
    with pytest.raises(InvalidMessage, match="record key must equal ce_sagaid"):
        decode(raw(b"someone-else", record.value, list(record.headers)), REGISTRY)


def test_first_of_repeated_headers_wins() -> None:
    assert header_map([("a", b"1"), ("a", b"2")]) == {"a": b"1"}


@pytest.mark.parametrize(
    ("header", "value", "character"),
    [
        (h.SAGA_ID, b"o-1\x00", "U+0000"),
        (h.ID, b"id\nforged", "U+000A"),
        (h.SOURCE, b"/services/\x1borders", "U+001B"),
        (h.SAGA_STEP, "re\u0085serve".encode(), "U+0085"),
        (h.TRACESTATE, b"vendor=1\x7f", "U+007F"),
    ],
)
def test_an_id_or_header_value_with_a_control_character_is_refused(
    header: str, value: bytes, character: str
) -> None:
    record = as_raw(placed())
    headers = [(k, value if k == header else v) for k, v in record.headers]
    key = value if header == h.SAGA_ID else record.key
    expected = re.escape(f"invalid header '{header}': holds a control character ({character})")
    with pytest.raises(InvalidHeader, match=expected):
        decode(raw(key, record.value, headers), REGISTRY)


def test_a_payload_string_holding_a_nul_is_refused_at_decode() -> None:
    record = as_raw(placed())
    for poisoned in (
        {"order_id": "o-1", "customer_id": "c\u0000", "amount_cents": 1250},
        {"order_id": "o-1", "customer_id": "c", "amount_cents": 1250, "sku": "\u0000"},
    ):
        value = json.dumps(poisoned).encode()
        assert b"\\u0000" in value
        with pytest.raises(PayloadValidationFailed, match="holds a NUL character"):
            decode(raw(record.key, value, list(record.headers)), REGISTRY)


def test_a_payload_that_only_spells_a_nul_escape_is_read() -> None:
    record = as_raw(placed())
    value = json.dumps({"order_id": "o-1", "customer_id": "\\u0000", "amount_cents": 5})
    envelope = decode(raw(record.key, value.encode(), list(record.headers)), REGISTRY)
    assert envelope.payload.customer_id == "\\u0000"  # type: ignore[attr-defined]


def test_a_payload_string_holding_a_lone_surrogate_is_refused_at_decode() -> None:
    record = as_raw(placed())
    for half in ("\\ud800", "\\uDFFF"):
        value = f'{{"order_id": "o-1", "customer_id": "c{half}", "amount_cents": 5}}'.encode()
        with pytest.raises(PayloadValidationFailed, match=r"holds a lone surrogate \(U\+D"):
            decode(raw(record.key, value, list(record.headers)), REGISTRY)


def test_a_payload_with_a_surrogate_pair_is_read_as_the_character_it_spells() -> None:
    record = as_raw(placed())
    value = b'{"order_id": "o-1", "customer_id": "\\ud83d\\ude00", "amount_cents": 5}'
    envelope = decode(raw(record.key, value, list(record.headers)), REGISTRY)
    assert envelope.payload.customer_id == "\U0001f600"  # type: ignore[attr-defined]
