"""Secrets in error text never reach failure events or dead letters."""

from __future__ import annotations

import pytest

from saga.kafka.dead_letter import describe_error
from saga.security.redaction import redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("invalid input for query argument $1: '4111 1111 1111 1111'", "4111"),
        ("card=4111111111111111 declined", "4111111111111111"),
        ("connection to postgresql://saga:s3cret@db:5432/saga refused", "s3cret"),
        ('login failed: password="hunter2"', "hunter2"),
        ("GET https://api/x?api_key=AKIA123&q=1 failed", "AKIA123"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc", "eyJhbGciOiJIUzI1NiJ9"),
        ("token: abc.def.ghi expired", "abc.def.ghi"),
    ],
)
def test_secret_shapes_are_redacted(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert "[redacted]" in cleaned


def test_ordinary_text_is_kept() -> None:
    text = "order o-12345 out of stock (3 left, 5 wanted)"
    assert redact(text) == text


def test_described_errors_are_redacted() -> None:
    assert (
        describe_error(ValueError("bad card=4111111111111111")) == "ValueError: bad card=[redacted]"
    )
