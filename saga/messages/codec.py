"""Envelope <-> Kafka record (CloudEvents binary content mode).

:func:`encode` is total for a valid envelope. :func:`decode` is a pure function
of the record's bytes: it returns an :class:`~saga.messages.envelope.Envelope` or
raises an :class:`~saga.messages.errors.InvalidMessage` whose ``reason`` says what
is wrong, so the transport can dead-letter it and move on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.messages.errors import (
    InvalidHeader,
    InvalidMessage,
    MissingHeader,
    NotJson,
    PayloadValidationFailed,
)
from saga.messages.registry import MessageRegistry

Headers = Sequence[tuple[str, bytes | None]]

# ASCII digits only (str.isdigit accepts "²"), and short enough for int().
_POSITIVE_INT = re.compile(r"[1-9][0-9]{0,8}")
# C0 and C1 control characters and DEL: never part of an id, a type, a time or a
# trace context; a NUL among them is what PostgreSQL refuses to store.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# JSON escapes that may decode to what no database stores: a NUL, a UTF-16 surrogate
# (a valid pair decodes to one character; a lone half stays a surrogate).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: The headers that become the envelope's fields: each is checked for control characters.
_ENVELOPE_HEADERS = (
    h.ID,
    h.SOURCE,
    h.SPECVERSION,
    h.TYPE,
    h.TIME,
    h.CONTENT_TYPE,
    h.SUBJECT,
    h.SAGA_ID,
    h.SAGA_TYPE,
    h.SAGA_STEP,
    h.CAUSATION_ID,
    h.ATTEMPT,
    h.SCHEMA_VERSION,
    h.TRACEPARENT,
    h.TRACESTATE,
)


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """What goes to Kafka for one envelope."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record as read from Kafka, before it is trusted."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int | None = None


def encode(envelope: Envelope[Message]) -> EncodedRecord:
    """Serialise ``envelope`` to a key, a JSON value and CloudEvents headers."""
    pairs: list[tuple[str, str | None]] = [
        (h.ID, envelope.id),
        (h.SOURCE, envelope.source),
        (h.SPECVERSION, h.SPECVERSION_VALUE),
        (h.TYPE, envelope.type),
        (h.TIME, envelope.time.isoformat()),
        (h.CONTENT_TYPE, h.JSON_CONTENT_TYPE),
        (h.SUBJECT, envelope.subject),
        (h.SAGA_ID, envelope.saga_id),
        (h.SAGA_TYPE, envelope.saga_type),
        (h.SAGA_STEP, envelope.step),
        (h.CAUSATION_ID, envelope.causation_id),
        (h.ATTEMPT, str(envelope.attempt)),
        (h.SCHEMA_VERSION, str(envelope.schema_version)),
        (h.TRACEPARENT, envelope.traceparent),
        (h.TRACESTATE, envelope.tracestate),
    ]
    return EncodedRecord(
        key=envelope.saga_id.encode(),
        value=envelope.payload.model_dump_json().encode(),
        headers=[(name, value.encode()) for name, value in pairs if value is not None],
    )


def header_map(headers: Headers) -> dict[str, bytes | None]:
    """Headers as a dict; for a repeated name the first occurrence wins."""
    found: dict[str, bytes | None] = {}
    for name, value in headers:
        found.setdefault(name, value)
    return found


def decode(record: RawRecord, registry: MessageRegistry) -> Envelope[Message]:
    """Read ``record`` as an envelope with the current payload model.

    Raises :class:`~saga.messages.errors.InvalidMessage` (a subclass naming the
    problem) for a record that is not a valid message.
    """
    found = _text_headers(record.headers)
    for name in _ENVELOPE_HEADERS:
        bad = _CONTROL.search(found.get(name, ""))
        if bad is not None:
            raise InvalidHeader(name, f"holds a control character (U+{ord(bad.group()):04X})")
    for name in h.REQUIRED:
        if not found.get(name):
            raise MissingHeader(name)
    if found[h.SPECVERSION] != h.SPECVERSION_VALUE:
        raise InvalidHeader(h.SPECVERSION, f"expected {h.SPECVERSION_VALUE!r}")
    content_type = found.get(h.CONTENT_TYPE)
    if content_type is not None and content_type.split(";")[0].strip() != h.JSON_CONTENT_TYPE:
        raise InvalidHeader(h.CONTENT_TYPE, f"expected {h.JSON_CONTENT_TYPE!r}")
    saga_id = found[h.SAGA_ID]
    if record.key is None or record.key != saga_id.encode():
        raise InvalidMessage(f"record key must equal {h.SAGA_ID} ({saga_id!r})")

    data = _json(record.value)
    version = _positive_int(found, h.SCHEMA_VERSION)
    payload = registry.load(found[h.TYPE], version, data)
    return Envelope(
        payload=payload,
        saga_id=saga_id,
        source=found[h.SOURCE],
        id=found[h.ID],
        time=_time(found[h.TIME]),
        saga_type=found.get(h.SAGA_TYPE),
        step=found.get(h.SAGA_STEP),
        causation_id=found.get(h.CAUSATION_ID),
        attempt=_positive_int(found, h.ATTEMPT) if h.ATTEMPT in found else 1,
        subject=found.get(h.SUBJECT),
        traceparent=found.get(h.TRACEPARENT),
        tracestate=found.get(h.TRACESTATE),
    )


def _text_headers(headers: Headers) -> dict[str, str]:
    text: dict[str, str] = {}
    for name, value in header_map(headers).items():
        try:
            text[name] = value.decode() if value is not None else ""
        except UnicodeDecodeError:
            raise InvalidHeader(name, "not UTF-8") from None
    return text


def _json(value: bytes | None) -> Any:
    if value is None:
        raise NotJson("record value is empty (null), expected a JSON payload")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise NotJson("record value is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotJson(f"record value is not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise NotJson("record value is JSON nested too deeply to read") from None
    if _UNSTORABLE_ESCAPE.search(text):
        # Valid JSON and maybe a valid payload, but no database can store it: refused
        # here, once, rather than by every transaction that would try.
        problem = unstorable(data)
        if problem is not None:
            raise PayloadValidationFailed(f"a string of the payload holds {problem}")
    return data


def unstorable(data: Any) -> str | None:
    """What no PostgreSQL text can hold, in any string of ``data``: a NUL, or a lone
    surrogate (half of a UTF-16 pair, which UTF-8 cannot encode)."""
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a NUL character (U+0000)"
            bad = _SURROGATE.search(item)
            if bad is not None:
                return f"a lone surrogate (U+{ord(bad.group()):04X}), which is not text"
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _positive_int(found: dict[str, str], name: str) -> int:
    raw = found[name]
    if not _POSITIVE_INT.fullmatch(raw):
        raise InvalidHeader(name, f"expected a positive integer, got {raw[:40]!r}")
    return int(raw)


def _time(raw: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidHeader(h.TIME, f"not an RFC 3339 timestamp: {raw[:40]!r}") from None
    if parsed.tzinfo is None:
        raise InvalidHeader(h.TIME, "timestamp has no UTC offset")
    return parsed
