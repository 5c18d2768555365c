"""Where a delivery's database failures are told apart from its step's.

The store's own failures (connect, inbox claim, outbox write, commit) become
:class:`StoreUnavailable`: not the step's failure, the delivery is retried as a
whole once the database is back. Unless the database refuses the record's data
(a saga id too long for the inbox's index, say: see
:mod:`saga.resilience.data_errors`): that is :class:`RecordRefused`, and the
record is dead-lettered at once. A handler that leaves its transaction aborted
gets :class:`AbortedTransaction`, which is the step's and retried per policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from saga.errors import SagaError
from saga.kafka.dead_letter import describe_error
from saga.resilience.data_errors import RecordRefused, record_refused, refuses_data

T = TypeVar("T")

ABORTED = (
    "the handler caught a database error and went on: its transaction is aborted "
    "(use a savepoint, `async with ctx.db.transaction():`, around statements that may fail)"
)


class StoreUnavailable(SagaError):
    """The service's database failed (not the handler): retry the delivery later."""


def store_error(error: Exception) -> StoreUnavailable | RecordRefused:
    """What a failure of the store's own statements is: the database refusing this
    record's data (dead-lettered at once), or else unavailable (retried)."""
    if refuses_data(error):
        return record_refused(error)
    return StoreUnavailable(describe_error(error))


class AbortedTransaction(SagaError):
    """The handler left its database transaction aborted; retried per policy."""


@asynccontextmanager
async def guarded(transaction: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """A store transaction whose own failures become :class:`StoreUnavailable` (or
    :class:`RecordRefused`, see :func:`store_error`).

    Errors of the handler pass through unchanged (and roll back): they are
    the step's. Errors of the store (connect, inbox claim, outbox write,
    commit) are not a reason to fail the step: they go to the consumer,
    which retries the delivery until the database is back.
    """
    try:
        entered = await transaction.__aenter__()
    except Exception as exc:
        raise store_error(exc) from exc
    try:
        yield entered
    except BaseException as exc:
        with contextlib.suppress(Exception):  # the handler's error is the one that counts
            await transaction.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    try:
        await transaction.__aexit__(None, None, None)
    except asyncpg.InFailedSQLTransactionError:
        # The outbox write found the transaction aborted: by the handler, which
        # caught a database error and went on. Its COMMIT would roll back.
        raise AbortedTransaction(ABORTED) from None
    except Exception as exc:
        raise store_error(exc) from exc


async def store_call(call: Awaitable[None]) -> None:
    """A call of the store's, whose failure is :class:`StoreUnavailable` (or
    :class:`RecordRefused`)."""
    try:
        await call
    except Exception as exc:
        raise store_error(exc) from exc


async def check_transaction(connection: Any) -> None:
    # A handler that catches a database error and carries on leaves the
    # transaction aborted; its COMMIT would silently roll everything back.
    try:
        await connection.fetchval("SELECT 1")
    except asyncpg.InFailedSQLTransactionError:
        raise AbortedTransaction(ABORTED) from None
