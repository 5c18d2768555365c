"""Runs one delivery through its step: dedupe, retry, timeout, breakers, emit.

The same runner serves the Kafka runtime and the in-memory test kit; only the
store and the way records leave differ.

Outcomes:

* ``completed``: the handler returned; its events are emitted with the attempt
  number that produced them.
* ``failed``: :class:`~saga.participant.service.StepFailure`, a non-retryable error, or
  retries exhausted: the step's failure event is emitted (error type and
  message, attempts) instead.
* ``compensation_failed``: a compensation failed (it is attempted once per command):
  :class:`~saga.messages.steps.CompensationFailed` is emitted, and the coordinator
  sends the command again per the saga's compensation retry policy, or parks the saga.
* ``duplicate``: the inbox already holds this message id: nothing runs, nothing
  is emitted again.
* ``ignored``: no step handles this type.
* ``swallowed``: a ``never_answer`` fault (:mod:`saga.resilience.faults`) took it.

This module holds a delivery's transactions and its retry loop. One attempt's
breakers, time limit and connection token are in :mod:`saga.participant.attempts`;
outcomes and the events a delivery emits in :mod:`saga.participant.outcomes`; the
store's failures told apart from the step's in :mod:`saga.participant.transactions`;
a partition's deliveries in shared transactions in :mod:`saga.participant.batches`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Span

from saga.errors import MessageTooLarge
from saga.kafka.dead_letter import describe_error
from saga.kafka.publisher import record_size
from saga.messages.base import Event, Message
from saga.messages.codec import EncodedRecord, encode
from saga.messages.envelope import Envelope
from saga.observability import tracing
from saga.outbox.send_order import Written
from saga.outbox.store import (
    BatchStore,
    Delivery,
    DeliveryBatch,
    DeliveryStore,
    UndoNeedsSavepoints,
)
from saga.participant.attempts import (
    Duplicate,
    Logger,
    ResolveConnection,
    StepTimeout,
    attempt_policy,
    call,
    connection_token,
    injected,
    retrying,
)
from saga.participant.batches import Alone, Batches
from saga.participant.context import StepContext
from saga.participant.outcomes import (
    MAX_ERROR_MESSAGE,
    EventTooLarge,
    InvalidHandlerResult,
    Outcome,
    OutcomeKind,
    caused,
    describe_step,
    events,
    failure_event,
    reported,
)
from saga.participant.service import Service, Step, StepFailure
from saga.participant.transactions import (
    ABORTED,
    AbortedTransaction,
    StoreUnavailable,
    check_transaction,
    guarded,
    store_call,
)
from saga.resilience.data_errors import RecordRefused
from saga.resilience.faults import Faults, Verdict
from saga.resilience.retry import run_with_retry

__all__ = [
    "MAX_ERROR_MESSAGE",
    "AbortedTransaction",
    "AfterCommit",
    "Emit",
    "EventTooLarge",
    "InvalidHandlerResult",
    "Outcome",
    "OutcomeKind",
    "ResolveConnection",
    "Sleep",
    "StepRunner",
    "StepTimeout",
    "StoreUnavailable",
]

log = logging.getLogger(__name__)

#: Publishes records of a service without a store (at-least-once).
Emit = Callable[[list[tuple[str, EncodedRecord]]], Awaitable[None]]
#: Called with the outbox rows written once their transaction committed.
AfterCommit = Callable[[list[Written]], Awaitable[object]]
Sleep = Callable[[float], Awaitable[None]]


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
        self._batches = Batches(
            service,
            verdict=self._verdict,
            first_attempt=self._in_batch,
            alone=self._alone,
            duplicate=self._duplicate,
            publish=self._publish,
        )

    async def handle(self, envelope: Envelope[Message]) -> Outcome:
        step = self.service.steps.get(envelope.type)
        if step is None:
            return Outcome("ignored")
        # The consumer's ``process <topic>`` span, when there is one.
        span = trace.get_current_span()
        describe_step(span, step, envelope)
        return reported(span, await self._run(step, envelope, span))

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
        See :mod:`saga.participant.batches`.
        """
        if self._store is None or not isinstance(self._store, BatchStore):
            outcomes = []
            for envelope, span in deliveries:
                with trace.use_span(span, end_on_exit=False):
                    outcomes.append(await self.handle(envelope))
            return outcomes
        return await self._batches.handle(self._store, deliveries)

    async def _alone(self, envelope: Envelope[Message], span: Span, alone: Alone) -> Outcome:
        step = self.service.steps.get(envelope.type)
        if step is None:
            return Outcome("ignored")
        describe_step(span, step, envelope)
        outcome = await self._run(step, envelope, span, alone.verdict, first_failed=alone.error)
        return reported(span, outcome)

    async def _in_batch(
        self,
        batch: DeliveryBatch,
        step: Step,
        envelope: Envelope[Message],
        span: Span,
        verdict: Verdict,
        *,
        last: bool,
        failed: Exception | None = None,
    ) -> tuple[Outcome | None, Exception | None]:
        """The first attempt of one delivery within ``batch``: its outcome, or
        ``(None, error)`` when it failed and is to be retried alone. ``failed``: the
        attempt was made already, in a batch rolled back since, and failed so."""
        logger = self._logger(step, envelope)
        await store_call(batch.begin())
        try:
            if failed is not None:
                raise failed
            if verdict == "fail":
                raise injected()
            ctx = StepContext(envelope, step.name, 1, logger, span, batch.connection, None)
            result = await call(step, self.service.timeout_for(step), envelope.payload, ctx)
            tracing.mark(tracing.HANDLED, span)
            emitted = [self._caused(envelope, e, step, 1) for e in self._events(result)]
            records = [self._encode(out) for out in emitted]
            try:
                await batch.end(last)
            except asyncpg.InFailedSQLTransactionError:
                raise AbortedTransaction(ABORTED) from None
        except (StoreUnavailable, RecordRefused):
            raise
        except Exception as exc:
            if not batch.savepoints:  # the batch runs again, with savepoints
                aborted = isinstance(exc, asyncpg.InFailedSQLTransactionError | AbortedTransaction)
                raise UndoNeedsSavepoints(envelope.id, None if aborted else exc) from exc
            await store_call(batch.undo())
            if not self._keep_going() and not isinstance(exc, StepFailure):
                raise  # shutting down: the batch rolls back and is read again
            policy = attempt_policy(self.service, step)
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
        policy = attempt_policy(self.service, step)
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
            token = await connection_token(step, envelope, timeout, self._connections)
            async with self._delivery(envelope, "completed", number) as delivery:
                if delivery.duplicate:
                    raise Duplicate
                tracing.mark(tracing.CLAIMED, span)
                if verdict == "fail":
                    raise injected()
                ctx = StepContext(
                    envelope, step.name, number, logger, span, delivery.connection, token
                )
                result = await call(step, timeout, envelope.payload, ctx)
                tracing.mark(tracing.HANDLED, span)
                emitted = [self._caused(envelope, e, step, number) for e in self._events(result)]
                for out in emitted:
                    delivery.emit(self.events_topic, self._encode(out))
                if delivery.connection is not None and not delivery.outgoing:
                    # With outgoing records, the outbox write finds out (see guarded).
                    await check_transaction(delivery.connection)
            tracing.mark_all(
                [span], [(tracing.WRITTEN, delivery.written_ns)] if delivery.written_ns else []
            )
            tracing.mark(tracing.COMMITTED, span)
            return emitted, delivery.written

        try:
            emitted, written = await run_with_retry(
                policy,
                attempt,
                keep_going=self._keep_going,
                before_sleep=retrying(self.service.name, step, logger),
                sleep=self._sleep,
                first_failed=first_failed,
            )
        except Duplicate:
            return self._duplicate(envelope, last_attempt)
        except (StoreUnavailable, RecordRefused):
            raise  # not the step's failure: retried as a whole, or dead-lettered
        except Exception as exc:
            if not self._keep_going() and not isinstance(exc, StepFailure):
                raise  # shutting down mid-retry: leave the record for redelivery
            return await self._fail(step, envelope, exc, last_attempt, logger)
        await self._publish(emitted, written)
        return Outcome("completed", last_attempt, emitted)

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
            logging.getLogger(f"saga.service.{self.service.name}"),
            {"saga_id": envelope.saga_id, "step": step.name},
        )

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
        return kind, self._caused(envelope, failure_event(step, error, attempts), step, attempts)

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

    def _encode(self, out: Envelope[Message]) -> EncodedRecord:
        record = encode(out)
        if self._max_record_bytes is not None:
            size = record_size(record.key, record.value, record.headers)
            if size > self._max_record_bytes:
                raise EventTooLarge(
                    str(MessageTooLarge(self.events_topic, out.type, size, self._max_record_bytes))
                )
        return record

    def _events(self, result: object) -> list[Event]:
        """The events a handler returned; their types join the service's registry, which
        names what the service reads and writes (an event its annotations did not name)."""
        found = events(result)
        for event in found:
            if event.message_type not in self.service.registry:
                self.service.registry.register(type(event))
        return found

    def _caused(
        self, incoming: Envelope[Message], event: Event, step: Step, attempt: int
    ) -> Envelope[Message]:
        return caused(incoming, event, source=self.service.source, step=step, attempt=attempt)

    @asynccontextmanager
    async def _delivery(
        self, envelope: Envelope[Message], outcome: str, attempts: int
    ) -> AsyncIterator[Delivery]:
        """The store's transaction (see :func:`~saga.participant.transactions.guarded`)."""
        if self._store is None:
            yield Delivery(duplicate=False)
            return
        transaction = self._store.delivery(
            envelope.id, envelope.type, envelope.saga_id, outcome, attempts
        )
        async with guarded(transaction) as delivery:
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
