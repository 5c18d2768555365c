"""The coordinator process: consume every events topic, decide, publish, fire timers.

``saga coordinator`` runs it. Several instances share the work through the
consumer group (a partition is a shard) and per-saga locks in PostgreSQL, so
two instances never decide on the same saga at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from opentelemetry.trace import Span

from saga.coordinator import tasks
from saga.coordinator.apply import COORDINATOR, LIFECYCLE_TOPIC, Coordinator, DecisionError
from saga.coordinator.retention import SagaRetention, prune_sagas
from saga.definition.saga import SagaDefinition
from saga.errors import ConfigurationError, import_named
from saga.http.app import Endpoint, http_app
from saga.http.server import HttpServer
from saga.kafka.consumer import Consumer
from saga.kafka.dead_letter import DeadLetter, describe_error
from saga.kafka.dead_letter import send as send_dead_letter
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.codec import RawRecord
from saga.messages.envelope import Envelope
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import COORDINATOR_OWNER
from saga.observability import tracing
from saga.outbox.relay import OutboxRelay
from saga.outbox.send_order import Written
from saga.outbox.store import PostgresServiceStore
from saga.participant.routes import HttpRequest
from saga.security.auth import Principal, authenticator
from saga.settings import Settings
from saga.shutdown import serve_until_signalled

log = logging.getLogger(__name__)


def load_definitions(spec: str) -> list[SagaDefinition]:
    """``module:attribute`` -> definitions (the attribute may be a function).

    Raises :class:`~saga.errors.ConfigurationError`, in one line naming the setting,
    when ``spec`` is empty or names nothing importable.
    """
    if not spec:
        raise ConfigurationError(
            "SAGA_DEFINITIONS is not set: name the module:attribute of your saga"
            " definitions, e.g. SAGA_DEFINITIONS=myapp.sagas:SAGAS"
        )
    module_name, _, attribute = spec.partition(":")
    module = import_named(module_name, "SAGA_DEFINITIONS")
    found: Any = getattr(module, attribute or "SAGAS", None)
    if found is None:
        raise ConfigurationError(
            f"SAGA_DEFINITIONS={spec}: module {module_name} has no attribute"
            f" {attribute or 'SAGAS'!r}"
        )
    if callable(found):
        found = found()
    definitions = [found] if isinstance(found, SagaDefinition) else list(found)
    return [d.validate() for d in definitions]


def open_store(settings: Settings) -> PostgresServiceStore:
    """The coordinator's database: saga tables plus its outbox."""
    return PostgresServiceStore(
        settings.database_url.get_secret_value(),
        COORDINATOR,
        components=("coordinator",),
        keep_sent=settings.outbox_retention_hours > 0,
    )


class CoordinatorRuntime:
    def __init__(self, definitions: Sequence[SagaDefinition], settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        self.coordinator = Coordinator(
            definitions,
            self.store,
            topic_prefix=settings.topic_prefix,
            mode=settings.mode,
            cached_sagas=settings.coordinator_cached_sagas,
            orphan_hold=timedelta(milliseconds=settings.orphan_hold_ms),
        )
        self.publisher = Publisher(settings, client_id=f"{settings.client_id}-coordinator")
        self.relay = OutboxRelay.of(self.store, self.publisher, settings)
        # Every version's: a running saga keeps the version it started with.
        known = {
            t
            for by_version in self.coordinator.loaded.versions.values()
            for d in by_version.values()
            for t in d.message_types()
        }
        known |= {StepFailed.message_type, CompensationFailed.message_type}
        self.group_id = f"{settings.topic_prefix}saga-coordinator"
        self.consumer = Consumer(
            settings,
            topics=self.coordinator.topics(),
            group_id=self.group_id,
            batch_handler=self._apply,
            registry=self.coordinator.registry,
            publisher=self.publisher,
            client_id=f"{settings.client_id}-coordinator",
            accepts=known.__contains__,
            # It reads every saga events topic: a type no loaded saga reacts to is
            # handled by no saga, and dead-lettered here (events outside sagas belong
            # on topics of their own).
            answers_for=self.coordinator.topics(),
            # The database unavailable: retry until it is back. Refusing a record's
            # data: dead-lettered at once (saga.resilience.data_errors).
            handler_attempts=0,
        )
        self.health = (
            HttpServer(
                http_app(
                    self._report,
                    self._endpoints(),  # /tasks: approval steps
                    authenticator(settings),
                    ready=lambda: self._ready,
                    not_ready="the coordinator is not ready",
                ),
                host=settings.health_host,
                port=settings.health_port,
            )
            if settings.health_port is not None
            else None
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False

    async def start(self) -> None:
        await ensure_topics(self.settings, self.coordinator.topics())
        commands = {
            f"{self.settings.topic_prefix}{s}.commands"
            for d in self.coordinator.definitions.values()
            for s in d.services
            if s != COORDINATOR_OWNER
        }
        commands.add(f"{self.settings.topic_prefix}{LIFECYCLE_TOPIC}")
        await ensure_topics(self.settings, sorted(commands))
        if self.health is not None:
            await self.health.start()
        await self.publisher.start()
        await self.store.start()
        await self.relay.publish_pending()  # left over from a crash
        self._tasks = [
            asyncio.create_task(self.relay.run(), name="outbox relay"),
            asyncio.create_task(self._timers(), name="timers"),
            asyncio.create_task(self._orphans(), name="orphans"),
        ]
        retention = SagaRetention.of(self.settings)
        if retention is not None:
            self._tasks.append(asyncio.create_task(self._prune(retention), name="retention"))
        await self.consumer.start()
        self._ready = True
        log.info("coordinator consuming %s", ", ".join(self.coordinator.topics()))

    async def run(self) -> None:
        try:
            await self.consumer.run()
        finally:
            self._ready = False
            self.relay.stop()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await self.relay.publish_pending()
            await self.publisher.stop()
            await self.store.stop()
            if self.health is not None:
                await self.health.stop()

    async def serve(self) -> None:
        await serve_until_signalled(
            self.start,
            self.run,
            self.consumer.stop,
            grace_s=self.settings.shutdown_grace_ms / 1000,
        )

    async def _apply(
        self, envelopes: list[Envelope[Message]], spans: list[Span], records: list[RawRecord]
    ) -> dict[str, DecisionError]:
        applied = await self.coordinator.apply_events(envelopes, records)
        tracing.mark_all(spans, applied.marks)
        await self._publish(applied.written)
        return applied.refused  # dead-lettered by the consumer

    async def _publish(self, written: list[Written]) -> None:
        try:
            await self.relay.publish(written)
        except Exception as exc:
            # Committed in the outbox: the relay loop sends it.
            log.warning("publishing commands failed (%s); relay will retry", describe_error(exc))

    async def _timers(self) -> None:
        interval = self.settings.timer_interval_ms / 1000
        while True:
            try:
                fired, written = await self.coordinator.fire_due_timers()
                await self._publish(written)
                if fired:
                    continue  # more may be due
            except Exception as exc:
                log.warning("timer pass failed (%s); retrying", describe_error(exc))
            await asyncio.sleep(interval)

    async def _orphans(self) -> None:
        """Dead-letter the events held for a start event that never came."""
        interval = self.settings.timer_interval_ms / 1000
        while True:
            try:
                sent = await self.coordinator.dead_letter_orphans(
                    self._send_dead_letter, group=self.group_id
                )
                if sent:
                    continue  # more may be due
            except Exception as exc:
                log.warning("orphan pass failed (%s); retrying", describe_error(exc))
            await asyncio.sleep(interval)

    async def _prune(self, retention: SagaRetention) -> None:
        """Delete the finished sagas past their retention, every ``retention.every``."""
        while True:
            try:
                pruned = await prune_sagas(self.store.pool, retention.by_status())
                if any(pruned.values()):
                    log.info(
                        "pruned %d finished saga(s) past retention (%s)",
                        sum(pruned.values()),
                        ", ".join(f"{n} {status}" for status, n in pruned.items() if n),
                    )
            except Exception as exc:
                log.warning("pruning finished sagas failed (%s)", describe_error(exc))
            await asyncio.sleep(retention.every.total_seconds())

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        """Returns once the broker has ``letter`` (shrunk if it is over the size limit)."""
        await send_dead_letter(self.publisher, letter)

    def _endpoints(self) -> list[Endpoint]:
        async def listing(request: HttpRequest, principal: Principal) -> tuple[int, Any]:
            return await tasks.listing(self.coordinator, request)

        def deciding(approve: bool) -> Endpoint:
            async def decide(request: HttpRequest, principal: Principal) -> tuple[int, Any]:
                status, answer, written = await tasks.decide(
                    self.coordinator, request, principal, approve=approve
                )
                await self._publish(written)
                return status, answer

            action = "approve" if approve else "reject"
            return Endpoint("POST", f"/tasks/{{task_id:path}}/{action}", decide, "approver")

        return [Endpoint("GET", "/tasks", listing, "viewer"), deciding(True), deciding(False)]

    def _report(self) -> tuple[bool, dict[str, Any]]:
        # A partition that makes no progress is not ready (SAGA_STALL_AFTER_MS).
        stalled = [stall.to_json() for stall in self.consumer.stalled()]
        return self._ready and not stalled, {
            "service": COORDINATOR,
            "sagas": sorted(self.coordinator.definitions),
            "partitions": len(self.consumer.assignment()) if self._ready else 0,
            "stalled": stalled,
        }
