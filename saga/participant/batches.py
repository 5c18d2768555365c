"""Where a partition's deliveries share transactions (``SAGA_DELIVERY_BATCH``).

Every delivery gets its first attempt in a shared transaction, and their events
are published together after the commit. A delivery whose first attempt fails
and may be retried ends the transaction before it: it is retried alone, with its
backoff, and the ones after it start a new transaction. Steps with a connection,
a fault verdict other than failing, and a batch of one run alone too.

Savepoints: a delivery whose handler fails must be undone alone, which takes a
savepoint per delivery, a round trip each. While handlers succeed, batches run
without them (:class:`Carefulness`); when one fails, that transaction is rolled
back whole and run again with savepoints, and so are the batches of the next
:data:`CAREFUL_FOR_S`. A handler whose transaction rolled back may run again
(as after a crash or a failed commit); a message already handled never does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Span

from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.observability import tracing
from saga.outbox.send_order import Written
from saga.outbox.store import BatchStore, Claim, DeliveryBatch, UndoNeedsSavepoints
from saga.participant.outcomes import Outcome, describe_step, reported
from saga.participant.service import Service, Step
from saga.participant.transactions import AbortedTransaction, guarded
from saga.resilience.faults import Verdict

#: After a handler failed in a batch, how long batches take a savepoint per delivery.
CAREFUL_FOR_S = 30.0


@dataclass
class Carefulness:
    """Whether the next batch takes a savepoint per delivery: only for a while
    (``careful_for_s``) after a handler failed in one (``clock``: monotonic seconds)."""

    careful_for_s: float = CAREFUL_FOR_S
    clock: Callable[[], float] = time.monotonic
    _until: float = field(default=float("-inf"), repr=False)

    @property
    def careful(self) -> bool:
        return self.clock() < self._until

    def failed(self) -> None:
        """A handler failed in a batch without savepoints."""
        self._until = self.clock() + self.careful_for_s


@dataclass(frozen=True)
class Alone:
    """A delivery of a batch that runs by itself: its fault verdict, and the error of
    its first attempt when that was made in the batch."""

    verdict: Verdict
    error: Exception | None


class FirstAttempt(Protocol):
    """One delivery's first attempt within ``batch``: its outcome, or ``(None, error)``
    when it failed and is to be retried alone."""

    async def __call__(
        self,
        batch: DeliveryBatch,
        step: Step,
        envelope: Envelope[Message],
        span: Span,
        verdict: Verdict,
        *,
        last: bool,
        failed: Exception | None = None,
    ) -> tuple[Outcome | None, Exception | None]: ...


class Batches:
    """Runs deliveries of ``service`` in shared transactions, with the runner's parts:
    ``verdict`` (what ``SAGA_FAULTS`` does to a delivery), ``first_attempt`` (in a
    batch), ``alone`` (a delivery by itself, retries included), ``duplicate`` (the
    outcome of one the inbox already holds) and ``publish`` (after the commit)."""

    def __init__(
        self,
        service: Service,
        *,
        verdict: Callable[[Step | None, Envelope[Message]], Awaitable[Verdict]],
        first_attempt: FirstAttempt,
        alone: Callable[[Envelope[Message], Span, Alone], Awaitable[Outcome]],
        duplicate: Callable[[Envelope[Message]], Outcome],
        publish: Callable[[Sequence[Envelope[Message]], list[Written]], Awaitable[None]],
    ) -> None:
        self._service = service
        self._verdict = verdict
        self._first_attempt = first_attempt
        self._alone = alone
        self._duplicate = duplicate
        self._publish = publish
        self._slot = asyncio.Lock()
        self.carefulness = Carefulness()

    async def handle(
        self, store: BatchStore, deliveries: Sequence[tuple[Envelope[Message], Span]]
    ) -> list[Outcome]:
        """Handle ``deliveries`` in order, as many as can be in one transaction each time;
        their outcomes, in order."""
        outcomes = []
        pending = list(deliveries)
        verdicts: dict[str, Verdict] = {}  # a fault's delay is slept once per delivery
        while pending:
            done, alone = await self._first_attempts(store, pending, verdicts)
            outcomes.extend(done)
            pending = pending[len(done) :]
            if alone is not None:
                envelope, span = pending.pop(0)
                with trace.use_span(span, end_on_exit=False):
                    outcomes.append(await self._alone(envelope, span, alone))
        return outcomes

    async def _first_attempts(
        self,
        store: BatchStore,
        deliveries: Sequence[tuple[Envelope[Message], Span]],
        known: dict[str, Verdict],
    ) -> tuple[list[Outcome], Alone | None]:
        """One transaction over a prefix of ``deliveries``: their outcomes, and how the
        delivery after them runs alone (``None`` when none is left). ``known``: fault
        verdicts already taken, by message id."""
        verdicts: list[Verdict] = []
        alone: Alone | None = None
        for envelope, _ in deliveries:
            step = self._service.steps.get(envelope.type)
            if envelope.id not in known:
                known[envelope.id] = await self._verdict(step, envelope)
            verdict = known[envelope.id]
            if step is None or _needs_token(step, envelope) or verdict == "never_answer":
                alone = Alone(verdict, None)
                break
            verdicts.append(verdict)
        if len(verdicts) == 1 and alone is None:
            return [], Alone(verdicts[0], None)  # one alone needs no savepoint
        if not verdicts:
            return [], alone
        runs = deliveries[: len(verdicts)]
        careful = self.carefulness.careful
        try:
            done, batch, retried = await self._transaction(store, runs, verdicts, careful)
        except (UndoNeedsSavepoints, AbortedTransaction) as exc:
            if careful:
                raise
            # Rolled back whole: run again, each delivery within a savepoint; the one
            # that failed is not tried again (its first attempt failed).
            self.carefulness.failed()
            failed = {}
            if isinstance(exc, UndoNeedsSavepoints) and exc.error is not None:
                failed[exc.message_id] = exc.error
            done, batch, retried = await self._transaction(store, runs, verdicts, True, failed)
        marks = [(tracing.WRITTEN, batch.written_ns)] if batch.written_ns else []
        tracing.mark_all([span for span, _ in done], [*marks, (tracing.COMMITTED, time.time_ns())])
        await self._publish([], batch.written)
        return [reported(span, outcome) for span, outcome in done], retried or alone

    async def _transaction(
        self,
        store: BatchStore,
        runs: Sequence[tuple[Envelope[Message], Span]],
        verdicts: Sequence[Verdict],
        savepoints: bool,
        failed: Mapping[str, Exception] | None = None,
    ) -> tuple[list[tuple[Span, Outcome]], DeliveryBatch, Alone | None]:
        """One transaction over ``runs``: the outcomes of those it got to (reported
        once it committed), the batch, and how the one it stopped at runs alone.
        ``failed``: first attempts made already, which failed so (by message id)."""
        done: list[tuple[Span, Outcome]] = []
        alone: Alone | None = None
        claims = [Claim(e.id, e.type, e.saga_id) for e, _ in runs]
        # One batch transaction at a time in this process: handlers hold their row
        # locks until the batch commits, and two batches taking the same rows in
        # different orders would deadlock.
        async with self._slot, guarded(store.batch(claims, savepoints=savepoints)) as batch:
            tracing.mark_all([span for _, span in runs], [(tracing.CLAIMED, time.time_ns())])
            first = set(batch.claimed)
            for index, (envelope, span) in enumerate(runs):
                if envelope.id not in first:
                    done.append((span, self._duplicate(envelope)))
                    continue
                first.discard(envelope.id)
                step = self._service.steps[envelope.type]
                describe_step(span, step, envelope)
                with trace.use_span(span, end_on_exit=False):
                    outcome, error = await self._first_attempt(
                        batch,
                        step,
                        envelope,
                        span,
                        verdicts[index],
                        last=index == len(runs) - 1,
                        failed=(failed or {}).get(envelope.id),
                    )
                if outcome is None:
                    # Retried alone; what follows it waits for it, as the partition's order
                    # says. Their inbox claims (not those handled here) are handed back.
                    batch.give_back([envelope.id, *first])
                    alone = Alone(verdicts[index], error)
                    break
                done.append((span, outcome))
        return done, batch, alone


def _needs_token(step: Step, envelope: Envelope[Message]) -> bool:
    """The step resolves a connection token for this message (see :mod:`saga.security.vault`)."""
    if step.connection is None:
        return False
    return step.connection.required or bool(
        getattr(envelope.payload, step.connection.handle_field, None)
    )
