"""The consumer loop: read records, hand envelopes to a handler, commit when durable.

Guarantees (at-least-once, with order):

* **Order within a partition.** One partition's records are handled one after
  the other; a partition is paused while its batch is being handled, so no
  second batch of it can overtake the first.
* **Bounded concurrency across partitions.** At most ``max_concurrency``
  partitions are handled at once; a slow or retrying partition holds one slot
  and never blocks the others.
* **Commit after durable work.** An offset is committed only after the handler
  returned (its work is durable by contract) or the record was dead-lettered
  and the broker acknowledged the dead letter.
* **Bad input never stalls a partition.** A record that is not a valid
  envelope, whose handler keeps failing, or whose data the database refuses
  (:mod:`saga.resilience.data_errors`: at once, never retried), goes to
  ``<topic>.dlq`` with the reason, its original headers and its
  topic/partition/offset; the next record is handled. In a batch, the records are
  then handled one by one, so that only the refused one is dead-lettered.
* **Rebalances.** When partitions are revoked, their in-flight records finish,
  their offsets are committed while this member still owns them, and nothing
  is ever committed for them afterwards.
* **Graceful shutdown** on SIGTERM/SIGINT (via :meth:`Consumer.serve`): stop
  fetching, finish in-flight records, commit, leave the group.

This module runs the fetch loop and calls the handler; a record is read (or
dead-lettered) in :mod:`saga.kafka.intake`, a partition's records are handled in
order by :mod:`saga.kafka.partitions`, offsets are committed by
:mod:`saga.kafka.commits`, and revoked partitions are handed back by
:mod:`saga.kafka.rebalance`.

>>> async def handle(envelope: Envelope[Message]) -> None:
...     print(envelope.type, envelope.saga_id)
>>> async def main(settings: Settings, registry: MessageRegistry) -> None:
...     consumer = Consumer(settings, topics=["orders.events"], group_id="inventory",
...                         handler=handle, registry=registry)
...     await consumer.serve()  # until SIGTERM / SIGINT
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, RecordTooLargeError
from opentelemetry.trace import Span, Status, StatusCode

from saga.kafka.commits import Commits
from saga.kafka.config import client_kwargs
from saga.kafka.dead_letter import describe_error
from saga.kafka.fetch_wait import FetchWait
from saga.kafka.intake import Intake
from saga.kafka.partitions import Abandoned, PartitionWorker, drain
from saga.kafka.publisher import Publisher
from saga.kafka.rebalance import Rebalance
from saga.kafka.stalls import Stall, StallWatch
from saga.messages.base import Message
from saga.messages.codec import RawRecord
from saga.messages.envelope import Envelope
from saga.messages.registry import MessageRegistry
from saga.messages.topics import SECURITY_DEAD_LETTERS, dead_letter_topic, prefixed
from saga.observability import tracing
from saga.resilience.data_errors import RecordRefused, record_refused, refuses_data
from saga.resilience.retry import RetryPolicy, run_with_retry
from saga.security.signing import Verifier
from saga.settings import Settings
from saga.shutdown import serve_until_signalled

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Message]], Awaitable[None]]
#: A partition's batch: the envelopes, the ``process <topic>`` span of each and the
#: record each was read from. It may return the envelopes it refuses, by message id,
#: with the error: they are dead-lettered.
BatchHandler = Callable[
    [list[Envelope[Message]], list[Span], list[RawRecord]],
    Awaitable[Mapping[str, Exception] | None],
]

_FETCH_HEADROOM = 1_048_576
#: How often partitions are checked for stalls.
_STALL_CHECK_S = 0.5
#: An idle consumer's fetch wait doubles after each this long without work.
_IDLE_STEP_S = 1.0


class Consumer:
    """Consume ``topics`` in consumer group ``group_id`` and call ``handler`` per message."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: Handler | None = None,
        registry: MessageRegistry,
        publisher: Publisher | None = None,
        client_id: str | None = None,
        accepts: Callable[[str], bool] | None = None,
        answers_for: Collection[str] = (),
        only_from: Mapping[str, str] | None = None,
        handler_attempts: int | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        """``accepts(ce_type)`` false: the record is skipped unread (a shared topic
        carries types this consumer does not handle), except on the topics of
        ``answers_for``, where this consumer is the one that would handle it: there
        it is dead-lettered as an unknown type. ``only_from``: types taken from one
        topic only (skipped elsewhere). ``handler_attempts``
        overrides ``settings.handler_max_attempts``; 0 retries without limit.
        ``batch_handler`` instead of ``handler`` receives each partition's fetched
        batch at once (valid envelopes, in order, their spans and records): one call,
        one unit of work."""
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a consumer either handler or batch_handler")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        for topic in topics:
            dead_letter_topic(topic)  # fail now, not on the first bad record
        self._settings = settings
        self._topics = list(topics)
        self._group_id = group_id
        # Refuses records not signed by their topic's owner (``SAGA_REQUIRE_SIGNATURES``).
        verifier = (
            Verifier(settings.all_signing_keys(), topic_prefix=settings.topic_prefix)
            if settings.require_signatures
            else None
        )
        self._handler = handler
        self._batch_handler = batch_handler
        self._handler_attempts = (
            settings.handler_max_attempts if handler_attempts is None else handler_attempts
        )
        self._retry = RetryPolicy(
            initial_interval=timedelta(milliseconds=settings.handler_retry_initial_ms),
            maximum_interval=timedelta(
                milliseconds=max(settings.handler_retry_max_ms, settings.handler_retry_initial_ms)
            ),
            maximum_attempts=self._handler_attempts,
            non_retryable_error_types=(RecordRefused,),
        )
        self._client_id = client_id or f"{settings.client_id}-{group_id}"
        self._own_publisher = publisher is None
        self._publisher = publisher or Publisher(settings, client_id=f"{self._client_id}-dlq")
        self._stopping = asyncio.Event()
        self._intake = Intake(
            group_id=group_id,
            registry=registry,
            accepts=accepts,
            answers_for=answers_for,
            only_from=only_from,
            verifier=verifier,
            security_topic=prefixed(settings.topic_prefix, SECURITY_DEAD_LETTERS),
            publisher=self._publisher,
            stopping=self._stopping.is_set,
        )
        self._kafka = AIOKafkaConsumer(
            **client_kwargs(settings, self._client_id),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            # Headroom over the record limit: a batch slightly over it must still be read.
            max_partition_fetch_bytes=settings.max_message_bytes + _FETCH_HEADROOM,
            fetch_max_bytes=max(settings.max_message_bytes + _FETCH_HEADROOM, 52_428_800),
            max_poll_records=settings.max_poll_records,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            # Revocation waits for in-flight records (drain_timeout_ms, shorter than
            # this); the broker must not evict us meanwhile.
            rebalance_timeout_ms=settings.max_poll_interval_ms,
        )
        self._fetch_wait = FetchWait(
            base_ms=settings.fetch_max_wait_ms,
            idle_ms=settings.fetch_idle_max_wait_ms,
            step_s=_IDLE_STEP_S,
        )
        self._fetch_wait_ms = settings.fetch_max_wait_ms
        self._stalls = StallWatch(group_id, settings.stall_after_ms / 1000)
        self._stalls_checked = 0.0
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._workers: dict[TopicPartition, PartitionWorker] = {}
        self._commits = Commits(
            self._kafka,
            interval_s=settings.commit_interval_ms / 1000,
            timeout_s=settings.commit_timeout_ms / 1000,
        )

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the dead-letter publisher and join the group."""
        if self._own_publisher:
            await self._publisher.start()
        listener = Rebalance(
            self._workers, self._commits, drain_timeout_s=self._settings.drain_timeout_ms / 1000
        )
        self._kafka.subscribe(self._topics, listener=listener)
        await self._kafka.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now (empty before joining the group)."""
        assigned: set[TopicPartition] = self._kafka.assignment()
        return assigned

    def stalled(self) -> list[Stall]:
        """Partitions with records waiting whose position has not moved for
        ``SAGA_STALL_AFTER_MS`` (see :mod:`saga.kafka.stalls`)."""
        return self._stalls.stalled

    def stop(self) -> None:
        """Ask :meth:`run` to finish in-flight work, commit and return. Signal-safe."""
        self._stopping.set()

    async def run(self) -> None:
        """Fetch and dispatch until :meth:`stop`; then drain, commit and leave the group."""
        try:
            while not self._stopping.is_set():
                try:
                    batches = await self._kafka.getmany(
                        timeout_ms=100, max_records=self._settings.max_poll_records
                    )
                except RecordTooLargeError as exc:
                    self._unreadable(exc)
                    continue
                except KafkaError as exc:
                    if not getattr(exc, "retriable", False):
                        raise
                    log.warning("fetch failed (%s); retrying", describe_error(exc))
                    await asyncio.sleep(0.5)
                    continue
                self._adapt_fetch_wait(busy=bool(batches))
                for tp, records in batches.items():
                    self._dispatch(tp, records)
                if self._commits.due:
                    await self._commits.commit(self._workers.values())
                self._watch_stalls()
        finally:
            await self._close()

    async def serve(self) -> None:
        """``start`` + ``run``, stopping gracefully on SIGTERM or SIGINT."""
        await serve_until_signalled(
            self.start, self.run, self.stop, grace_s=self._settings.shutdown_grace_ms / 1000
        )

    async def _close(self) -> None:
        workers = list(self._workers.values())
        try:
            await drain(workers, self._settings.drain_timeout_ms / 1000)
            await self._commits.commit(workers)
        finally:
            for w in workers:
                w.cancel()
            self._workers.clear()
            await self._kafka.stop()  # leaves the group
            if self._own_publisher:
                await self._publisher.stop()

    def _adapt_fetch_wait(self, *, busy: bool) -> None:
        """Lengthen the wait of the next fetches while idle, shorten it with the first
        record (:mod:`saga.kafka.fetch_wait`). Set before the next await, so the fetch
        that follows a record already waits the short time."""
        if not self._fetch_wait.adapts:
            return
        busy = busy or any(w.waiting for w in self._workers.values())
        wait_ms = self._fetch_wait.update(busy=busy, now=time.monotonic())
        if wait_ms != self._fetch_wait_ms:
            self._fetch_wait_ms = wait_ms
            set_fetch_wait(self._kafka, wait_ms)

    def _watch_stalls(self) -> None:
        now = time.monotonic()
        if now - self._stalls_checked < _STALL_CHECK_S:
            return
        self._stalls_checked = now
        self._stalls.check(
            (tp.topic, tp.partition, w.position, w.waiting) for tp, w in self._workers.items()
        )

    # --- dispatch ---------------------------------------------------------------

    def _worker(self, tp: TopicPartition) -> PartitionWorker:
        worker = self._workers.get(tp)
        if worker is None:
            worker = self._workers[tp] = PartitionWorker(
                tp,
                backlog_limit=self._settings.max_poll_records,
                batched=self._batch_handler is not None,
                handle=self._handle_records,
                slots=self._slots,
                pause=self._pause,
                resume=self._resume,
            )
        return worker

    def _dispatch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        worker = self._worker(tp)
        worker.feed(records)
        if worker.backlogged:
            self._pause(worker)

    def _unreadable(self, exc: RecordTooLargeError) -> None:
        # aiokafka steps past a record it cannot fetch; stepping on would lose it.
        # Go back to it and hold this partition (only) until the limit is raised.
        _, tp, offset, fetch_size = exc.args
        log.critical(
            "record %s@%d is larger than the fetch size %d and cannot be read; partition "
            "held. Raise SAGA_MAX_MESSAGE_BYTES (and the broker's limit) to read it.",
            tp,
            offset,
            fetch_size,
        )
        self._kafka.seek(tp, offset)
        worker = self._worker(tp)
        worker.stalled = True
        self._pause(worker)

    def _pause(self, worker: PartitionWorker) -> None:
        # Pausing drops what was fetched ahead; the position stays at the last
        # record handed out, so nothing is skipped.
        if self._workers.get(worker.tp) is worker and not worker.paused:
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                self._kafka.pause(worker.tp)
                worker.paused = True

    def _resume(self, worker: PartitionWorker) -> None:
        if self._workers.get(worker.tp) is worker and worker.paused and not worker.stalled:
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                self._kafka.resume(worker.tp)
                worker.paused = False

    # --- handling ---------------------------------------------------------------

    async def _handle_records(self, records: list[ConsumerRecord]) -> None:
        if self._batch_handler is not None:
            await self._handle_batch(records)
        else:
            await self._handle(records[0])

    async def _handle(self, record: ConsumerRecord) -> None:
        taken_ns = time.time_ns()
        read, raw = await self._intake.read(record)
        if read is None:
            return
        decoded_ns = time.time_ns()
        with tracing.processing(raw, read, self._group_id, taken_ns) as span:
            tracing.mark(tracing.DECODED, span, decoded_ns)
            envelope = tracing.within(span, read)
            try:
                await self._call(lambda: self._handler_of(envelope), envelope.type)
            except RecordRefused as exc:
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                await self._intake.dead_letter(raw, str(exc), exc.error_type)
            except Exception as exc:
                if self._stopping.is_set():
                    # Shutting down mid-retry: leave it uncommitted, to be retried after restart.
                    raise Abandoned(describe_error(exc)) from exc
                reason = (
                    f"handler failed after {self._handler_attempts} attempt(s): "
                    f"{describe_error(exc)}"
                )
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                await self._intake.dead_letter(raw, reason, type(exc).__name__)

    async def _handle_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """One call of the batch handler for the valid envelopes among ``records``."""
        assert self._batch_handler is not None
        taken_ns = time.time_ns()
        read = [await self._intake.read(record) for record in records]
        valid = [(envelope, raw) for envelope, raw in read if envelope is not None]
        if valid:
            await self._handle_valid(valid, (taken_ns, time.time_ns()))

    async def _handle_valid(
        self,
        valid: Sequence[tuple[Envelope[Message], RawRecord]],
        read_ns: tuple[int, int] | None = None,
    ) -> None:
        """``read_ns``: when the batch was taken up and when it was decoded (wall clock)."""
        assert self._batch_handler is not None
        taken_ns, decoded_ns = read_ns or (None, None)
        spans = [tracing.start_process_span(raw, e, self._group_id, taken_ns) for e, raw in valid]
        if decoded_ns is not None:
            tracing.mark_all(spans, [(tracing.DECODED, decoded_ns)])
        envelopes = [tracing.within(span, e) for span, (e, _) in zip(spans, valid, strict=True)]
        handler = self._batch_handler
        refused: Mapping[str, Exception] = {}

        async def handle() -> None:
            nonlocal refused
            refused = await handler(envelopes, spans, [raw for _, raw in valid]) or {}

        try:
            await self._call(handle, f"batch of {len(envelopes)}")
        except RecordRefused as exc:
            tracing.end_spans(spans, exc)
            if len(valid) > 1:
                # The batch rolled back: the others are good, handled one by one.
                log.warning(
                    "the database refuses a record of a batch of %d (%s); one by one",
                    len(valid),
                    exc,
                )
                for one in valid:
                    await self._handle_valid([one])
                return
            await self._intake.dead_letter(valid[0][1], str(exc), exc.error_type)
            return
        except Exception as exc:
            tracing.end_spans(spans, exc)
            if self._stopping.is_set():
                raise Abandoned(describe_error(exc)) from exc
            reason = (
                f"batch handler failed after {self._handler_attempts} attempt(s): "
                f"{describe_error(exc)}"
            )
            for _, raw in valid:
                await self._intake.dead_letter(raw, reason, type(exc).__name__)
            return
        except BaseException as exc:
            tracing.end_spans(spans, exc)
            raise
        for (envelope, raw), span in zip(valid, spans, strict=True):
            error = refused.get(envelope.id)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                await self._intake.dead_letter(raw, describe_error(error), type(error).__name__)
        tracing.end_spans(spans)

    def _handler_of(self, envelope: Envelope[Message]) -> Awaitable[None]:
        assert self._handler is not None
        return self._handler(envelope)

    async def _call(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        async def attempt(number: int) -> None:
            try:
                await work()
            except RecordRefused:
                raise
            except Exception as exc:
                if refuses_data(exc):
                    raise record_refused(exc) from exc  # the record's problem: not retried
                raise

        def retrying(number: int, error: BaseException, delay: timedelta) -> None:
            log.warning(
                "handling %s failed, attempt %d: %s; retrying in %.1fs",
                what,
                number,
                describe_error(error),
                delay.total_seconds(),
            )

        # Stopping abandons the record (uncommitted, so redelivered) instead of retrying.
        await run_with_retry(
            self._retry,
            attempt,
            keep_going=lambda: not self._stopping.is_set(),
            before_sleep=retrying,
        )


def set_fetch_wait(kafka: AIOKafkaConsumer, wait_ms: int) -> bool:
    """Make the next fetch requests of ``kafka`` wait up to ``wait_ms``; whether it could.

    aiokafka builds each fetch request from its fetcher's ``_fetch_max_wait_ms``
    (0.11 to 0.14; a unit test checks it still does). Before ``start`` there is no
    fetcher, and nothing changes."""
    fetcher = getattr(kafka, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_max_wait_ms = wait_ms
    return True
