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
  envelope, or whose handler keeps failing, goes to ``<topic>.dlq`` with the
  reason, its original headers and its topic/partition/offset; the next record
  is handled.
* **Rebalances.** When partitions are revoked, their in-flight records finish,
  their offsets are committed while this member still owns them, and nothing
  is ever committed for them afterwards.
* **Graceful shutdown** on SIGTERM/SIGINT (via :meth:`Consumer.serve`): stop
  fetching, finish in-flight records, commit, leave the group.

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
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    RecordTooLargeError,
)
from opentelemetry.trace import Span, Status, StatusCode

from saga.errors import MessageTooLarge
from saga.kafka.config import client_kwargs
from saga.kafka.dead_letter import DeadLetter, dead_letter, describe_error, shrink
from saga.kafka.publisher import Publisher
from saga.messages import headers as h
from saga.messages.base import Message
from saga.messages.codec import RawRecord, decode, header_map
from saga.messages.envelope import Envelope
from saga.messages.errors import InvalidMessage
from saga.messages.registry import MessageRegistry
from saga.messages.topics import SECURITY_DEAD_LETTERS, dead_letter_topic, prefixed
from saga.observability import metrics, tracing
from saga.resilience.retry import RetryPolicy, run_with_retry
from saga.security.signing import SignatureError, Verifier
from saga.settings import Settings
from saga.shutdown import serve_until_signalled

log = logging.getLogger(__name__)

Handler = Callable[[Envelope[Message]], Awaitable[None]]
#: A partition's batch: the envelopes, and the ``process <topic>`` span of each. It may
#: return the envelopes it refuses, by message id, with the error: they are dead-lettered.
BatchHandler = Callable[
    [list[Envelope[Message]], list[Span]], Awaitable[Mapping[str, Exception] | None]
]

_FETCH_HEADROOM = 1_048_576


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
        handler_attempts: int | None = None,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        """``accepts(ce_type)`` false: the record is skipped unread (a shared topic
        carries types this consumer does not handle). ``handler_attempts``
        overrides ``settings.handler_max_attempts``; 0 retries without limit.
        ``batch_handler`` instead of ``handler`` receives each partition's fetched
        batch at once (valid envelopes, in order, and their spans): one call, one
        unit of work."""
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a consumer either handler or batch_handler")
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        for topic in topics:
            dead_letter_topic(topic)  # fail now, not on the first bad record
        self._settings = settings
        self._topics = list(topics)
        self._group_id = group_id
        #: Refuses records not signed by their topic's owner (``SAGA_REQUIRE_SIGNATURES``).
        self._verifier = (
            Verifier(settings.all_signing_keys(), topic_prefix=settings.topic_prefix)
            if settings.require_signatures
            else None
        )
        self._security_topic = prefixed(settings.topic_prefix, SECURITY_DEAD_LETTERS)
        self._handler = handler
        self._batch_handler = batch_handler
        self._registry = registry
        self._accepts = accepts
        self._handler_attempts = (
            settings.handler_max_attempts if handler_attempts is None else handler_attempts
        )
        self._retry = RetryPolicy(
            initial_interval=timedelta(milliseconds=settings.handler_retry_initial_ms),
            maximum_interval=timedelta(
                milliseconds=max(settings.handler_retry_max_ms, settings.handler_retry_initial_ms)
            ),
            maximum_attempts=self._handler_attempts,
        )
        self._client_id = client_id or f"{settings.client_id}-{group_id}"
        self._own_publisher = publisher is None
        self._publisher = publisher or Publisher(settings, client_id=f"{self._client_id}-dlq")
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
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._workers: dict[TopicPartition, _PartitionWorker] = {}
        self._stopping = asyncio.Event()
        self._last_commit = time.monotonic()
        # One commit at a time: a revocation's commit waits for (or outlives) a
        # periodic one, so no older offset can land after the partition moved on.
        self._commit_lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the dead-letter publisher and join the group."""
        if self._own_publisher:
            await self._publisher.start()
        self._kafka.subscribe(self._topics, listener=_Rebalance(self))
        await self._kafka.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def assignment(self) -> set[TopicPartition]:
        """Partitions this member owns now (empty before joining the group)."""
        assigned: set[TopicPartition] = self._kafka.assignment()
        return assigned

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
                for tp, records in batches.items():
                    self._dispatch(tp, records)
                if time.monotonic() - self._last_commit >= self._settings.commit_interval_ms / 1000:
                    await self._commit(self._workers.values())
        finally:
            await self._close()

    async def serve(self) -> None:
        """``start`` + ``run``, stopping gracefully on SIGTERM or SIGINT."""
        await serve_until_signalled(
            self.start, self.run, self.stop, grace_s=self._settings.shutdown_grace_ms / 1000
        )

    # --- dispatch ---------------------------------------------------------------

    def _dispatch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        worker = self._workers.get(tp)
        if worker is None:
            worker = self._workers[tp] = _PartitionWorker(
                self, tp, backlog_limit=self._settings.max_poll_records
            )
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
        worker = self._workers.get(tp)
        if worker is None:
            worker = self._workers[tp] = _PartitionWorker(
                self, tp, backlog_limit=self._settings.max_poll_records
            )
        worker.stalled = True
        self._pause(worker)

    def _pause(self, worker: _PartitionWorker) -> None:
        # Pausing drops what was fetched ahead; the position stays at the last
        # record handed out, so nothing is skipped.
        if self._workers.get(worker.tp) is worker and not worker.paused:
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                self._kafka.pause(worker.tp)
                worker.paused = True

    def _resume(self, worker: _PartitionWorker) -> None:
        if self._workers.get(worker.tp) is worker and worker.paused and not worker.stalled:
            with contextlib.suppress(IllegalStateError):  # no longer assigned
                self._kafka.resume(worker.tp)
                worker.paused = False

    async def _handle(self, record: ConsumerRecord) -> None:
        read, raw = await self._read(record)
        if read is None:
            return
        with tracing.processing(raw, read, self._group_id) as span:
            envelope = tracing.within(span, read)
            try:
                await self._call(lambda: self._handler_of(envelope), envelope.type)
            except Exception as exc:
                if self._stopping.is_set():
                    # Shutting down mid-retry: leave it uncommitted, to be retried after restart.
                    raise _Abandoned(describe_error(exc)) from exc
                reason = (
                    f"handler failed after {self._handler_attempts} attempt(s): "
                    f"{describe_error(exc)}"
                )
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                await self._dead_letter(raw, reason, type(exc).__name__)

    async def _handle_batch(self, records: Sequence[ConsumerRecord]) -> None:
        """One call of the batch handler for the valid envelopes among ``records``."""
        assert self._batch_handler is not None
        read = [await self._read(record) for record in records]
        valid = [(envelope, raw) for envelope, raw in read if envelope is not None]
        if not valid:
            return
        spans = [tracing.start_process_span(raw, e, self._group_id) for e, raw in valid]
        envelopes = [tracing.within(span, e) for span, (e, _) in zip(spans, valid, strict=True)]
        handler = self._batch_handler
        refused: Mapping[str, Exception] = {}

        async def handle() -> None:
            nonlocal refused
            refused = await handler(envelopes, spans) or {}

        try:
            await self._call(handle, f"batch of {len(envelopes)}")
        except Exception as exc:
            tracing.end_spans(spans, exc)
            if self._stopping.is_set():
                raise _Abandoned(describe_error(exc)) from exc
            reason = (
                f"batch handler failed after {self._handler_attempts} attempt(s): "
                f"{describe_error(exc)}"
            )
            for _, raw in valid:
                await self._dead_letter(raw, reason, type(exc).__name__)
            return
        except BaseException as exc:
            tracing.end_spans(spans, exc)
            raise
        for (envelope, raw), span in zip(valid, spans, strict=True):
            error = refused.get(envelope.id)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, "dead-lettered"))
                await self._dead_letter(raw, describe_error(error), type(error).__name__)
        tracing.end_spans(spans)

    def _handler_of(self, envelope: Envelope[Message]) -> Awaitable[None]:
        assert self._handler is not None
        return self._handler(envelope)

    async def _read(self, record: ConsumerRecord) -> tuple[Envelope[Message] | None, RawRecord]:
        """The record as an envelope; ``None`` if skipped or dead-lettered."""
        raw = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            timestamp_ms=record.timestamp,
        )
        if self._accepts is not None:
            message_type = header_map(raw.headers).get(h.TYPE)
            if message_type and not self._accepts(message_type.decode(errors="replace")):
                return None, raw
        if self._verifier is not None:
            try:
                self._verifier.check(
                    raw.topic, raw.partition, raw.offset, raw.key, raw.value, raw.headers
                )
            except SignatureError as refused:
                await self._refuse(raw, refused)
                return None, raw
        try:
            return decode(raw, self._registry), raw
        except InvalidMessage as exc:
            await self._dead_letter(raw, exc.reason, type(exc).__name__)
        except Exception as exc:  # e.g. a faulty upcaster: still this record's problem
            await self._dead_letter(
                raw, f"record could not be read: {describe_error(exc)}", type(exc).__name__
            )
        return None, raw

    async def _call(self, work: Callable[[], Awaitable[None]], what: str) -> None:
        async def attempt(number: int) -> None:
            await work()

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

    async def _refuse(self, raw: RawRecord, refused: SignatureError) -> None:
        """A record that failed its signature check: to the security dead letters."""
        reason = str(refused)
        letter = dead_letter(raw, reason=reason, error_type="SignatureError", group=self._group_id)
        letter = dataclasses.replace(letter, topic=self._security_topic)
        metrics.security_rejected.add(
            1, {"messaging.destination.name": raw.topic, "error.type": refused.kind}
        )
        log.warning(
            "refusing %s[%d]@%d (%s) to %s",
            raw.topic,
            raw.partition,
            raw.offset,
            reason,
            letter.topic,
        )
        await self._send_dead_letter(letter)

    async def _dead_letter(self, raw: RawRecord, reason: str, error_type: str) -> None:
        letter = dead_letter(raw, reason=reason, error_type=error_type, group=self._group_id)
        metrics.dead_letters.add(
            1, {"messaging.destination.name": raw.topic, "error.type": error_type}
        )
        log.warning(
            "dead-lettering %s[%d]@%d to %s: %s",
            raw.topic,
            raw.partition,
            raw.offset,
            letter.topic,
            letter.reason,
        )
        await self._send_dead_letter(letter)

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        # The offset must not be committed before the dead letter is durable:
        # keep trying (this partition only) until it is, or until shutdown.
        delay = 0.1
        while True:
            try:
                await self._publisher.publish_raw(
                    letter.topic, key=letter.key, value=letter.value, headers=letter.headers
                )
                return
            except MessageTooLarge as exc:
                smaller = shrink(letter, exc.size)
                if smaller is None:
                    raise
                log.warning("dead letter to %s too large: %s", letter.topic, smaller.reason)
                letter = smaller
            except Exception as exc:
                if self._stopping.is_set():
                    raise _Abandoned(describe_error(exc)) from exc
                log.error(
                    "dead letter to %s failed (%s); retrying", letter.topic, describe_error(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- commits ----------------------------------------------------------------

    async def _commit(self, workers: Iterable[_PartitionWorker]) -> None:
        """Commit what ``workers`` handled. One commit at a time, and what is due is
        read under the lock: a revocation's commit and a periodic one never
        interleave, and a revoked worker (gone from ``self._workers``, whose live
        view the periodic commit passes) is never committed late."""
        self._last_commit = time.monotonic()
        async with self._commit_lock:
            due = [w for w in workers if w.handled is not None and w.handled != w.committed]
            if not due:
                return
            offsets = {w.tp: w.handled for w in due}
            try:
                await asyncio.wait_for(
                    self._kafka.commit(offsets), self._settings.commit_timeout_ms / 1000
                )
            except TimeoutError:
                log.warning("commit of %s timed out; offsets stay due", offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (rebalance); the new owner resumes from the last commit.
                log.warning("commit of %s skipped: %s", offsets, describe_error(exc))
                return
            except KafkaError as exc:
                # Coordinator moving or unreachable: the offsets stay due and are tried again.
                log.warning("commit of %s failed, will retry: %s", offsets, describe_error(exc))
                return
            for w in due:
                w.committed = offsets[w.tp]

    async def _revoke(self, revoked: Iterable[TopicPartition]) -> None:
        workers = [w for tp in revoked if (w := self._workers.pop(tp, None)) is not None]
        await _drain(workers, self._settings.drain_timeout_ms / 1000)
        # Still the owner until this callback returns: commit what was handled.
        await self._commit(workers)
        for w in workers:
            w.cancel()

    async def _close(self) -> None:
        workers = list(self._workers.values())
        try:
            await _drain(workers, self._settings.drain_timeout_ms / 1000)
            await self._commit(workers)
        finally:
            for w in workers:
                w.cancel()
            self._workers.clear()
            await self._kafka.stop()  # leaves the group
            if self._own_publisher:
                await self._publisher.stop()


async def _drain(workers: Sequence[_PartitionWorker], timeout_s: float) -> None:
    for w in workers:
        w.finish_current_only()
    tasks = [w.task for w in workers if w.task is not None and not w.task.done()]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("%d partition(s) still busy after %ss", len(pending), timeout_s)


class _PartitionWorker:
    """Handles one partition's records in order and tracks how far it got.

    Records are queued as they are fetched; the partition is paused only when
    its backlog reaches ``backlog_limit`` (so fetching runs ahead of handling)
    and resumed once half of that is worked off.
    """

    def __init__(self, consumer: Consumer, tp: TopicPartition, backlog_limit: int) -> None:
        self.consumer = consumer
        self.tp = tp
        self.backlog_limit = backlog_limit
        self.task: asyncio.Task[None] | None = None
        #: Next offset to read: everything below it is handled (durably).
        self.handled: int | None = None
        self.committed: int | None = None
        self.paused = False
        #: Set on a defect: nothing after the failed record may be handled.
        self.stalled = False
        self._queue: deque[ConsumerRecord] = deque()

    @property
    def backlogged(self) -> bool:
        return len(self._queue) >= self.backlog_limit

    def feed(self, records: list[ConsumerRecord]) -> None:
        if self.stalled:
            return
        self._queue.extend(records)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name=f"partition {self.tp}")

    def finish_current_only(self) -> None:
        """Drop records not yet started; they stay uncommitted and are read again."""
        self._queue.clear()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        batched = self.consumer._batch_handler is not None
        while self._queue:
            if batched:
                take = min(len(self._queue), self.backlog_limit)
                records = [self._queue.popleft() for _ in range(take)]
            else:
                records = [self._queue.popleft()]
            first, last = records[0], records[-1]
            try:
                async with self.consumer._slots:
                    if batched:
                        await self.consumer._handle_batch(records)
                    else:
                        await self.consumer._handle(first)
            except _Abandoned as exc:
                # Shutting down: the offset stays uncommitted, the record is read again.
                log.warning("record %s@%d left for redelivery: %s", self.tp, first.offset, exc)
                self._queue.clear()
                return
            except Exception:
                # A defect, not bad input. Skipping would lose the record, so this
                # partition stays paused (others go on) until the process restarts.
                log.critical(
                    "partition %s stalled at offset %d", self.tp, first.offset, exc_info=True
                )
                self.stalled = True
                self._queue.clear()
                self.consumer._pause(self)
                return
            self.handled = last.offset + 1
            if self.paused and len(self._queue) <= self.backlog_limit // 2:
                self.consumer._resume(self)


class _Abandoned(Exception):
    """A record given up on shutdown, left uncommitted so that it is read again."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._consumer._revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        log.info("assigned %s", sorted(assigned))
