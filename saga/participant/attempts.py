"""One attempt at a step: its connection token, circuit breakers and time limit;
and the retry policy and retry log around the attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from saga.errors import SagaError
from saga.kafka.dead_letter import describe_error
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.observability import metrics
from saga.participant.context import StepContext
from saga.participant.service import Service, Step, StepFailure
from saga.participant.transactions import StoreUnavailable
from saga.resilience.circuit import CircuitBreaker, CircuitOpen
from saga.resilience.data_errors import RecordRefused, printable, refused_by
from saga.resilience.retry import RetryPolicy
from saga.security.vault import (
    ConnectionRevoked,
    ConnectionUnavailable,
    ProviderRefusedClient,
    VaultError,
)

#: (handle, valid for) -> the user's access token (see :class:`saga.security.vault.Vault`).
#: (handle, valid for, owner the connection must belong to or None) -> access token.
ResolveConnection = Callable[[str, timedelta, str | None], Awaitable[str]]
Logger = logging.LoggerAdapter[logging.Logger]


class StepTimeout(SagaError, TimeoutError):
    """An attempt ran longer than the step's timeout; retried per policy."""


class Duplicate(Exception):
    """The inbox already holds this message: stop, run nothing."""


def attempt_policy(service: Service, step: Step) -> RetryPolicy:
    """The step's retry policy, ended at once by a duplicate, a store failure or the
    store refusing the record: none is the step's failure."""
    policy = service.policy_for(step)
    return dataclasses.replace(
        policy,
        non_retryable_error_types=(
            *policy.non_retryable_error_types,
            Duplicate,
            StoreUnavailable,
            RecordRefused,
        ),
    )


def retrying(
    service: str, step: Step, logger: Logger
) -> Callable[[int, BaseException, timedelta], None]:
    """Counts and logs a failed attempt that is retried."""

    def log_retry(number: int, error: BaseException, delay: timedelta) -> None:
        metrics.step_retries.add(1, {"service": service, "saga.step": step.name})
        logger.warning(
            "attempt %d failed (%s); retrying in %.2fs",
            number,
            describe_error(error),
            delay.total_seconds(),
        )

    return log_retry


def injected() -> StepFailure:
    """The failure a ``fail`` fault (:mod:`saga.resilience.faults`) puts in place of the handler."""
    return StepFailure("failure injected by SAGA_FAULTS", error_type="InjectedFault")


async def connection_token(
    step: Step,
    envelope: Envelope[Message],
    valid_for: timedelta | None,
    connections: ResolveConnection | None,
) -> str | None:
    """The user's token the step declared, valid for the whole step (refreshed if not)."""
    if step.connection is None:
        return None
    handle = getattr(envelope.payload, step.connection.handle_field, None)
    if not isinstance(handle, str) or not handle:
        if not step.connection.required:
            return None
        raise ConnectionRevoked(f"no connection handle in {step.connection.handle_field!r}")
    if connections is None:
        raise ConnectionRevoked(
            f"step {step.name} got a connection handle but this process has no vault keys"
            " (SAGA_VAULT_KEYS)"
        )
    owner: str | None = None
    if step.connection.owner_field is not None:
        owner = getattr(envelope.payload, step.connection.owner_field, None)
        if not isinstance(owner, str) or not owner:
            raise ConnectionRevoked(
                f"no owner in {step.connection.owner_field!r} to check the connection against"
            )
    try:
        return await connections(handle, valid_for or timedelta(seconds=60), owner)
    except (ConnectionRevoked, ProviderRefusedClient, ConnectionUnavailable, VaultError):
        raise  # about the connection: the step's outcome
    except Exception as exc:  # the vault's database: not the step's failure
        raise StoreUnavailable(f"vault unavailable: {describe_error(exc)}") from exc


async def call(step: Step, limit: timedelta | None, payload: Message, ctx: StepContext) -> Any:
    """The handler, behind the step's circuit breakers and within its time limit."""
    granted: list[CircuitBreaker] = []
    try:
        for breaker in step.uses:
            breaker.check()  # fails fast while open: retried later per policy
            granted.append(breaker)
    except CircuitOpen:
        _release(granted)
        raise
    try:
        result = await _within(limit, step.handler(payload, ctx))
    except StepFailure:
        _record(granted, None)  # a business refusal: the dependency worked
        raise
    except Exception as exc:
        refused = refused_by(exc)
        if refused is not None:
            _record(granted, None)  # the database answered: it refuses the data
            raise data_refused(refused) from exc
        _record(granted, exc)
        if ctx.has_db and ctx.db.is_closed():
            raise StoreUnavailable(f"database connection lost: {describe_error(exc)}") from exc
        raise
    except BaseException:
        _release(granted)  # cancelled: no outcome to report
        raise
    _record(granted, None)
    return result


def data_refused(error: BaseException) -> StepFailure:
    """The handler's own write was refused by the database for its data (a number out
    of its column's range, say): trying again would be refused again, so the step fails
    at once and its failure event names the database's error."""
    return StepFailure(
        f"the database refused the step's data: {printable(describe_error(error))}",
        error_type=type(error).__name__,
    )


async def _within(limit: timedelta | None, work: Awaitable[Any]) -> Any:
    if limit is None:
        return await work
    seconds = limit.total_seconds()
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise StepTimeout(f"step exceeded its timeout of {seconds:g}s") from None


def _record(breakers: Sequence[CircuitBreaker], error: BaseException | None) -> None:
    for breaker in breakers:
        breaker.record(error)


def _release(breakers: Sequence[CircuitBreaker]) -> None:
    for breaker in breakers:
        breaker.release()
