"""A database refusing a record's data is told apart from a database that is unavailable."""

from __future__ import annotations

import asyncpg
import pytest

from saga.participant.transactions import StoreUnavailable, store_error
from saga.resilience.data_errors import RecordRefused, record_refused, refuses_data


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        asyncpg.NumericValueOutOfRangeError("integer out of range"),
        asyncpg.InvalidTextRepresentationError('invalid input syntax for type integer: "abc"'),
        asyncpg.StringDataRightTruncationError("value too long for type character varying(3)"),
        asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence"),
        asyncpg.DataError("invalid input for query argument $1: 'c\ud800' (surrogates)"),
        asyncpg.ProgramLimitExceededError("index row size 8016 exceeds btree maximum 2704"),
        UnicodeEncodeError("utf-8", "c\ud800", 1, 2, "surrogates not allowed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_database_refusing_the_data_is_the_records_problem(error: Exception) -> None:
    assert refuses_data(error)
    refused = record_refused(error)
    assert refused.error_type == type(error).__name__
    assert str(refused).startswith("the database refuses this record's data: ")
    str(refused).encode()  # a lone surrogate quoted in the error is escaped: fit for a header


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ConnectionRefusedError("database is down"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_that_is_unavailable_is_retried_not_refused(error: Exception) -> None:
    assert not refuses_data(error)
    assert isinstance(store_error(error), StoreUnavailable)


def test_a_refusal_is_found_through_the_errors_raised_from_it() -> None:
    outer = RuntimeError("write failed")
    outer.__cause__ = asyncpg.NumericValueOutOfRangeError("integer out of range")
    assert refuses_data(outer)
    refused = store_error(outer)
    assert isinstance(refused, RecordRefused)
    assert refused.error_type == "NumericValueOutOfRangeError"
    assert "integer out of range" in str(refused)
