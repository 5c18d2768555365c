"""Runs one delivery through its step: dedupe, retry, timeout, breakers, emit.

The same runner serves the Kafka runtime and the in-memory test kit; only the
store and the way records leave differ.

Outcomes:

* ``completed``: the handler returned; its events are emitted with the attempt
  number that produced them.
* ``failed``: :class:`~saga.participant.service.StepFailure`, a non-retryable error, or
  retries exhausted: the step's failure event is emitted (error type and
  message, attempts) instead.
* ``compensation_failed``: a compensation ran out of retries:
  :class:`~saga.messages.steps.CompensationFailed` is emitted for an operator.
* ``duplicate``: the inbox already holds this message id: nothing runs, nothing
  is emitted again.
* ``ignored``: no step handles this type.
* ``swallowed``: a ``never_answer`` fault (:mod:`saga.resilience.faults`) took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from saga.errors import MessageTooLarge, SagaError
from saga.kafka.dead_letter import describe_error
from saga.kafka.publisher import record_size
from saga.messages.base import Event, Message
from saga.messages.codec import EncodedRecord, encode
from saga.messages.envelope import Envelope
from saga.messages.steps import CompensationFailed, StepFailed
from saga.observability import metrics
from saga.outbox.send_order import Written
from saga.outbox.store import (
    BatchStore,
    Claim,
    Delivery,
    DeliveryBatch,
    DeliveryStore,
)
from saga.participant.service import Service, Step, StepContext, StepFailure
from saga.resilience.circuit import CircuitBreaker, CircuitOpen
from saga.resilience.faults import Faults, Verdict
from saga.resilience.retry import NonRetryableError, RetryPolicy, run_with_retry
from saga.security.redaction import redact
from saga.security.vault import (
    ConnectionRevoked,
    ConnectionUnavailable,
    ProviderRefusedClient,
    VaultError,
)

log = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()

OutcomeKind = Literal[
    "completed", "failed", "compensation_failed", "duplicate", "ignored", "swallowed"
]
#: Publishes records of a service without a store (at-least-once).
Emit = Callable[[list[tuple[str, EncodedRecord]]], Awaitable[None]]
#: Called with the outbox rows written once their transaction committed.
AfterCommit = Callable[[list[Written]], Awaitable[object]]
Sleep = Callable[[float], Awaitable[None]]
#: (handle, valid for) -> the user's access token (see :class:`saga.security.vault.Vault`).
ResolveConnection = Callable[[str, timedelta], Awaitable[str]]

MAX_ERROR_MESSAGE = 500

T = TypeVar("T")
Logger = logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    attempts: int = 0
    emitted: list[Envelope[Message]] = field(default_factory=list)


class StoreUnavailable(SagaError):
    """The service's database failed (not the handler): retry the delivery later."""


class _Duplicate(Exception):
    """The inbox already holds this message: stop, run nothing."""


class StepRunner:
    """Handles envelopes for ``service``."""

    def __init__(
        self,
        service: Service,
        *,
        store: DeliveryStore | None,
        emit: Emit,
        after_commit: AfterCommit | None = None,
        sleep: Sleep = asyncio.sleep,
        keep_going: Callable[[], bool] = lambda: True,
        events_topic: str | None = None,
        max_record_bytes: int | None = None,
        faults: Faults | None = None,
        connections: ResolveConnection | None = None,
    ) -> None:
        self.service = service
        self._connections = connections
        self._faults = faults or Faults()
        self._max_record_bytes = max_record_bytes
        self.events_topic = events_topic or service.events_topic
        self._store = store
        self._emit = emit
        self._after_commit = after_commit
        self._sleep = sleep
        self._keep_going = keep_going
        self._batch_slot = asyncio.Lock()

    async def handle(self, envelope: Envelope[Message]) -> Outcome:
        step = self.service.steps.get(envelope.type)
        if step is None:
            return Outcome("ignored")
        # The consumer's ``process <topic>`` span, when there is one.
        span = trace.get_current_span()
        _describe_step(span, step, envelope)
        return _reported(span, await self._run(step, envelope, span))

    async def handle_batch(
        self, deliveries: Sequence[tuple[Envelope[Message], Span]]
    ) -> list[Outcome]:
        """Handle deliveries in order, as many as can be in one transaction each time.

        Every delivery gets its first attempt in a shared transaction (its own
        savepoint), and their events are published together after the commit.
        A delivery whose first attempt fails and may be retried ends the
        transaction before it: it is retried alone, with its backoff, and the
        ones after it start a new transaction. Steps with a connection, a fault
        verdict other than failing, and a batch of one run alone (as
        :meth:`handle` runs them). Outcomes are those of :meth:`handle`, in order.
        """
        if self._store is None or not isinstance(self._store, BatchStore):
            outcomes = []
            for envelope, span in deliveries:
                with trace.use_span(span, end_on_exit=False):
                    outcomes.append(await self.handle(envelope))
            return outcomes
        outcomes = []
        pending = list(deliveries)
        verdicts: dict[str, Verdict] = {}  # a fault's delay is slept once per delivery
        while pending:
            done, alone = await self._first_attempts(self._store, pending, verdicts)
            outcomes.extend(done)
            pending = pending[len(done) :]
            if alone is not None:
                envelope, span = pending.pop(0)
                with trace.use_span(span, end_on_exit=False):
                    outcomes.append(await self._alone(envelope, span, alone))
        return outcomes

    async def _alone(self, envelope: Envelope[Message], span: Span, alone: _Alone) -> Outcome:
        step = self.service.steps.get(envelope.type)
        if step is None:
            return Outcome("ignored")
        _describe_step(span, step, envelope)
        outcome = await self._run(step, envelope, span, alone.verdict, first_failed=alone.error)
        return _reported(span, outcome)

    async def _first_attempts(
        self,
        store: BatchStore,
        deliveries: Sequence[tuple[Envelope[Message], Span]],
        known: dict[str, Verdict],
    ) -> tuple[list[Outcome], _Alone | None]:
        """One transaction over a prefix of ``deliveries``: their outcomes, and how the
        delivery after them runs alone (``None`` when none is left). ``known``: fault
        verdicts already taken, by message id."""
        verdicts: list[Verdict] = []
        alone: _Alone | None = None
        for envelope, _ in deliveries:
            step = self.service.steps.get(envelope.type)
            if envelope.id not in known:
                known[envelope.id] = await self._verdict(step, envelope)
            verdict = known[envelope.id]
            if step is None or _needs_token(step, envelope) or verdict == "never_answer":
                alone = _Alone(verdict, None)
                break
            verdicts.append(verdict)
        if len(verdicts) == 1 and alone is None:
            return [], _Alone(verdicts[0], None)  # one alone needs no savepoint
        if not verdicts:
            return [], alone
        runs = deliveries[: len(verdicts)]
        outcomes: list[Outcome] = []
        claims = [Claim(e.id, e.type, e.saga_id) for e, _ in runs]
        # One batch transaction at a time in this process: handlers hold their row
        # locks until the batch commits, and two batches taking the same rows in
        # different orders would deadlock.
        async with self._batch_slot, _guarded(store.batch(claims)) as batch:
            first = set(batch.claimed)
            for index, (envelope, span) in enumerate(runs):
                if envelope.id not in first:
                    outcomes.append(_reported(span, self._duplicate(envelope)))
                    continue
                first.discard(envelope.id)
                step = self.service.steps[envelope.type]
                _describe_step(span, step, envelope)
                with trace.use_span(span, end_on_exit=False):
                    outcome, error = await self._in_batch(
                        batch, step, envelope, span, verdicts[index], last=index == len(runs) - 1
                    )
                if outcome is None:
                    # Retried alone; what follows it waits for it, as the partition's order
                    # says. Their inbox claims (not those handled here) are handed back.
                    batch.give_back([envelope.id, *first])
                    alone = _Alone(verdicts[index], error)
                    break
                outcomes.append(_reported(span, outcome))
        await self._publish([], batch.written)
        return outcomes, alone

    async def _in_batch(
        self,
        batch: DeliveryBatch,
        step: Step,
        envelope: Envelope[Message],
        span: Span,
        verdict: Verdict,
        *,
        last: bool,
    ) -> tuple[Outcome | None, Exception | None]:
        """The first attempt of one delivery within ``batch``: its outcome, or
        ``(None, error)`` when it failed and is to be retried alone."""
        logger = self._logger(step, envelope)
        await _store_call(batch.begin())
        try:
            if verdict == "fail":
                raise _injected()
            ctx = StepContext(envelope, step.name, 1, logger, span, batch.connection, None)
            result = await _call(step, self.service.timeout_for(step), envelope.payload, ctx)
            emitted = [self._caused(envelope, event, step, 1) for event in _events(result)]
            records = [self._encode(out) for out in emitted]
            try:
                await batch.end(last)
            except asyncpg.InFailedSQLTransactionError:
                raise AbortedTransaction(_ABORTED) from None
        except StoreUnavailable:
            raise
        except Exception as exc:
            await _store_call(batch.undo())
            if not self._keep_going() and not isinstance(exc, StepFailure):
                raise  # shutting down: the batch rolls back and is read again
            policy = self._policy(step)
            if policy.is_retryable(exc) and not policy.gives_up_after(1):
                return None, exc
            kind, out = self._failure(step, envelope, exc, 1, logger)
            batch.record(envelope.id, kind)
            batch.emit(self.events_topic, encode(out))
            return Outcome(kind, 1, [out]), None
        for record in records:
            batch.emit(self.events_topic, record)
        return Outcome("completed", 1, emitted), None

    async def _run(
        self,
        step: Step,
        envelope: Envelope[Message],
        span: Any,
        verdict: Verdict | None = None,
        *,
        first_failed: Exception | None = None,
    ) -> Outcome:
        policy = self._policy(step)
        timeout = self.service.timeout_for(step)
        logger = self._logger(step, envelope)
        last_attempt = 0 if first_failed is None else 1
        if verdict is None:
            verdict = await self._verdict(step, envelope)
        if verdict == "never_answer":
            return await self._swallow(envelope, logger)

        async def attempt(number: int) -> tuple[list[Envelope[Message]], list[Written]]:
            nonlocal last_attempt
            last_attempt = number
            span.set_attribute("saga.attempt", number)
            # Before the delivery's transaction: the vault takes a connection of its own.
            token = await self._connection_token(step, envelope, timeout)
            async with self._delivery(envelope, "completed", number) as delivery:
                if delivery.duplicate:
                    raise _Duplicate
                if verdict == "fail":
                    raise _injected()
                ctx = StepContext(
                    envelope, step.name, number, logger, span, delivery.connection, token
                )
                result = await _call(step, timeout, envelope.payload, ctx)
                emitted = [self._caused(envelope, event, step, number) for event in _events(result)]
                for out in emitted:
                    delivery.emit(self.events_topic, self._encode(out))
                if delivery.connection is not None and not delivery.outgoing:
                    # With outgoing records, the outbox write finds out (see _guarded).
                    await _check_transaction(delivery.connection)
            return emitted, delivery.written

        try:
            emitted, written = await run_with_retry(
                policy,
                attempt,
                keep_going=self._keep_going,
                before_sleep=self._retrying(step, logger),
                sleep=self._sleep,
                first_failed=first_failed,
            )
        except _Duplicate:
            return self._duplicate(envelope, last_attempt)
        except StoreUnavailable:
            raise  # not the step's failure: the delivery is retried as a whole
        except Exception as exc:
            if not self._keep_going() and not isinstance(exc, StepFailure):
                raise  # shutting down mid-retry: leave the record for redelivery
            return await self._fail(step, envelope, exc, last_attempt, logger)
        await self._publish(emitted, written)
        return Outcome("completed", last_attempt, emitted)

    def _policy(self, step: Step) -> RetryPolicy:
        # Neither is the step's failure: both end the attempts at once.
        policy = self.service.policy_for(step)
        return dataclasses.replace(
            policy,
            non_retryable_error_types=(
                *policy.non_retryable_error_types,
                _Duplicate,
                StoreUnavailable,
            ),
        )

    async def _verdict(self, step: Step | None, envelope: Envelope[Message]) -> Verdict:
        """What ``SAGA_FAULTS`` does to this delivery (after its delay, if any)."""
        if step is None or not self._faults:
            return "run"
        payload = envelope.payload.model_dump(mode="json")
        return await self._faults.apply(step.name, envelope.id, payload)

    def _duplicate(self, envelope: Envelope[Message], attempts: int = 0) -> Outcome:
        log.info("duplicate delivery of %s: already handled", envelope.id)
        return Outcome("duplicate", attempts)

    def _logger(self, step: Step, envelope: Envelope[Message]) -> Logger:
        return logging.LoggerAdapter(
            logging.getLogger(f"saga.participant.service.{self.service.name}"),
            {"saga_id": envelope.saga_id, "step": step.name},
        )

    def _retrying(
        self, step: Step, logger: Logger
    ) -> Callable[[int, BaseException, timedelta], None]:
        def retrying(number: int, error: BaseException, delay: timedelta) -> None:
            metrics.step_retries.add(1, {"service": self.service.name, "saga.step": step.name})
            logger.warning(
                "attempt %d failed (%s); retrying in %.2fs",
                number,
                describe_error(error),
                delay.total_seconds(),
            )

        return retrying

    async def _swallow(self, envelope: Envelope[Message], logger: Logger) -> Outcome:
        """A ``never_answer`` fault: take the delivery, emit nothing, ever."""
        logger.warning("fault injected: %s is taken and never answered", envelope.id)
        async with self._delivery(envelope, "swallowed", 0) as delivery:
            if delivery.duplicate:
                return Outcome("duplicate")
        return Outcome("swallowed")

    def _failure(
        self,
        step: Step,
        envelope: Envelope[Message],
        error: BaseException,
        attempts: int,
        logger: Logger,
    ) -> tuple[OutcomeKind, Envelope[Message]]:
        """The step's final failure: its outcome kind and the failure event to emit."""
        kind: OutcomeKind = "compensation_failed" if step.compensation else "failed"
        logger.warning(
            "step %s %s after %d attempt(s): %s", step.name, kind, attempts, describe_error(error)
        )
        return kind, self._caused(envelope, _failure_event(step, error, attempts), step, attempts)

    async def _fail(
        self,
        step: Step,
        envelope: Envelope[Message],
        error: BaseException,
        attempts: int,
        logger: Logger,
    ) -> Outcome:
        kind, out = self._failure(step, envelope, error, attempts, logger)
        async with self._delivery(envelope, kind, attempts) as delivery:
            if delivery.duplicate:
                return Outcome("duplicate", attempts)
            delivery.emit(self.events_topic, encode(out))
        await self._publish([out], delivery.written)
        return Outcome(kind, attempts, [out])

    async def _connection_token(
        self, step: Step, envelope: Envelope[Message], valid_for: timedelta | None
    ) -> str | None:
        """The user's token the step declared, valid for the whole step (refreshed if not)."""
        if step.connection is None:
            return None
        handle = getattr(envelope.payload, step.connection.handle_field, None)
        if not isinstance(handle, str) or not handle:
            if not step.connection.required:
                return None
            raise ConnectionRevoked(f"no connection handle in {step.connection.handle_field!r}")
        if self._connections is None:
            raise ConnectionRevoked(
                f"step {step.name} got a connection handle but this process has no vault keys"
                " (SAGA_VAULT_KEYS)"
            )
        try:
            return await self._connections(handle, valid_for or timedelta(seconds=60))
        except (ConnectionRevoked, ProviderRefusedClient, ConnectionUnavailable, VaultError):
            raise  # about the connection: the step's outcome
        except Exception as exc:  # the vault's database: not the step's failure
            raise StoreUnavailable(f"vault unavailable: {describe_error(exc)}") from exc

    def _encode(self, out: Envelope[Message]) -> EncodedRecord:
        record = encode(out)
        if self._max_record_bytes is not None:
            size = record_size(record.key, record.value, record.headers)
            if size > self._max_record_bytes:
                raise EventTooLarge(
                    str(MessageTooLarge(self.events_topic, out.type, size, self._max_record_bytes))
                )
        return record

    def _caused(
        self, incoming: Envelope[Message], event: Event, step: Step, attempt: int
    ) -> Envelope[Message]:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        out = incoming.caused(event, source=self.service.source, step=step.name)
        return out.replace(
            attempt=attempt,
            traceparent=carrier.get("traceparent", out.traceparent),
            tracestate=carrier.get("tracestate", out.tracestate),
        )

    @asynccontextmanager
    async def _delivery(
        self, envelope: Envelope[Message], outcome: str, attempts: int
    ) -> AsyncIterator[Delivery]:
        """The store's transaction (see :func:`_guarded`)."""
        if self._store is None:
            yield Delivery(duplicate=False)
            return
        transaction = self._store.delivery(
            envelope.id, envelope.type, envelope.saga_id, outcome, attempts
        )
        async with _guarded(transaction) as delivery:
            yield delivery

    async def _publish(self, emitted: Sequence[Envelope[Message]], written: list[Written]) -> None:
        if self._store is None:
            await self._emit([(self.events_topic, encode(e)) for e in emitted])
        elif written and self._after_commit is not None:
            try:
                await self._after_commit(written)
            except Exception as exc:
                # Committed in the outbox: the relay publishes it later.
                log.warning(
                    "publish after commit failed (%s); relay will retry", describe_error(exc)
                )


@dataclass(frozen=True)
class _Alone:
    """A delivery of a batch that runs by itself: its fault verdict, and the error of
    its first attempt when that was made in the batch."""

    verdict: Verdict
    error: Exception | None


def _needs_token(step: Step, envelope: Envelope[Message]) -> bool:
    """The step resolves a connection token for this message (see :mod:`saga.security.vault`)."""
    if step.connection is None:
        return False
    return step.connection.required or bool(
        getattr(envelope.payload, step.connection.handle_field, None)
    )


def _describe_step(span: Span, step: Step, envelope: Envelope[Message]) -> None:
    span.set_attribute("saga.step", step.name)
    if step.compensation and envelope.step:
        span.set_attribute("saga.compensates", envelope.step)


def _reported(span: Span, outcome: Outcome) -> Outcome:
    span.set_attribute("saga.outcome", outcome.kind)
    span.set_attribute("saga.attempt", outcome.attempts)
    if outcome.kind in ("failed", "compensation_failed"):
        span.set_status(Status(StatusCode.ERROR, f"step {outcome.kind}"))
    return outcome


def _injected() -> StepFailure:
    return StepFailure("failure injected by SAGA_FAULTS", error_type="InjectedFault")


@asynccontextmanager
async def _guarded(transaction: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """A store transaction whose own failures become :class:`StoreUnavailable`.

    Errors of the handler pass through unchanged (and roll back): they are
    the step's. Errors of the store (connect, inbox claim, outbox write,
    commit) are not a reason to fail the step: they go to the consumer,
    which retries the delivery until the database is back.
    """
    try:
        entered = await transaction.__aenter__()
    except Exception as exc:
        raise StoreUnavailable(describe_error(exc)) from exc
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
        raise AbortedTransaction(_ABORTED) from None
    except Exception as exc:
        raise StoreUnavailable(describe_error(exc)) from exc


async def _store_call(call: Awaitable[None]) -> None:
    try:
        await call
    except Exception as exc:
        raise StoreUnavailable(describe_error(exc)) from exc


def _events(result: object) -> list[Event]:
    if result is None:
        return []
    events = [result] if isinstance(result, Message) else result
    if not isinstance(events, list | tuple) or not all(isinstance(e, Event) for e in events):
        raise InvalidHandlerResult(
            f"handler returned {type(result).__name__}; expected an Event, a list of "
            "Events, or None (commands are sent by the coordinator, not returned)"
        )
    return list(events)


async def _within(limit: timedelta | None, work: Awaitable[Any]) -> Any:
    if limit is None:
        return await work
    seconds = limit.total_seconds()
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise StepTimeout(f"step exceeded its timeout of {seconds:g}s") from None


class StepTimeout(SagaError, TimeoutError):
    """An attempt ran longer than the step's timeout; retried per policy."""


async def _call(step: Step, limit: timedelta | None, payload: Message, ctx: StepContext) -> Any:
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
        _record(granted, exc)
        if ctx.has_db and ctx.db.is_closed():
            raise StoreUnavailable(f"database connection lost: {describe_error(exc)}") from exc
        raise
    except BaseException:
        _release(granted)  # cancelled: no outcome to report
        raise
    _record(granted, None)
    return result


def _record(breakers: Sequence[CircuitBreaker], error: BaseException | None) -> None:
    for breaker in breakers:
        breaker.record(error)


def _release(breakers: Sequence[CircuitBreaker]) -> None:
    for breaker in breakers:
        breaker.release()


async def _check_transaction(connection: Any) -> None:
    # A handler that catches a database error and carries on leaves the
    # transaction aborted; its COMMIT would silently roll everything back.
    try:
        await connection.fetchval("SELECT 1")
    except asyncpg.InFailedSQLTransactionError:
        raise AbortedTransaction(_ABORTED) from None


_ABORTED = (
    "the handler caught a database error and went on: its transaction is aborted "
    "(use a savepoint, `async with ctx.db.transaction():`, around statements that may fail)"
)


class AbortedTransaction(SagaError):
    """The handler left its database transaction aborted; retried per policy."""


class InvalidHandlerResult(NonRetryableError):
    """A handler returned something other than events: a defect, not retried."""


class EventTooLarge(NonRetryableError):
    """An event the handler returned exceeds the record size limit; not retried."""


def _failure_event(step: Step, error: BaseException, attempts: int) -> Event:
    if isinstance(error, StepFailure) and error.event is not None:
        return error.event
    error_type = error.error_type if isinstance(error, StepFailure) else type(error).__name__
    message = redact(" ".join(str(error).split()))[:MAX_ERROR_MESSAGE]
    if step.compensation:
        return CompensationFailed(
            command_type=step.message.message_type,
            error_type=error_type,
            error_message=message,
            attempts=attempts,
        )
    model = step.fails_with or StepFailed
    return model(error_type=error_type, error_message=message, attempts=attempts)
