"""Runs a :class:`~saga.participant.service.Service` as its own process on Kafka.

Wiring: topics provisioned, the store migrated, a consumer group named after
the service reading the topics of its steps, a :class:`~saga.participant.step_runner.StepRunner`
per delivery, the outbox relay, and the health endpoint. SIGTERM/SIGINT stop
it gracefully (in-flight deliveries finish, offsets are committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from opentelemetry.trace import Span

from saga.definition.saga import SagaMode
from saga.errors import ServiceMisconfigured
from saga.http.app import Endpoint, http_app
from saga.http.server import HttpServer
from saga.kafka.consumer import Consumer
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Publisher, usable_record_bytes
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, RawRecord
from saga.messages.envelope import Envelope
from saga.messages.topics import COORDINATOR_OWNER, events_topic, prefixed
from saga.outbox.relay import OutboxRelay
from saga.outbox.store import PostgresServiceStore
from saga.participant.request_runner import RequestRunner
from saga.participant.routes import HttpRequest, Route
from saga.participant.service import Service
from saga.participant.step_runner import StepRunner
from saga.resilience.circuit import CircuitBreaker
from saga.resilience.faults import Faults
from saga.security.auth import Principal, authenticator
from saga.security.vault import Vault, VaultKeys
from saga.settings import Settings
from saga.shutdown import serve_until_signalled

log = logging.getLogger(__name__)


class ServiceRuntime:
    """``await ServiceRuntime(service, settings).serve()`` runs until SIGTERM/SIGINT."""

    def __init__(self, service: Service, settings: Settings) -> None:
        if not service.steps and not service.routes:
            raise ServiceMisconfigured(f"service {service.name!r} has no steps and no routes")
        self.service = service
        self.settings = settings
        prefix = settings.topic_prefix
        self.topics = [prefixed(prefix, t) for t in consumed_topics(service, settings.mode)]
        self.events_topic = prefixed(prefix, service.events_topic)
        self.commands_topic = prefixed(prefix, service.commands_topic)
        self.publisher = Publisher(settings, client_id=f"{service.name}-producer")
        needs_vault = any(step.connection is not None for step in service.steps.values())
        if needs_vault and service.store != "postgres":
            raise ServiceMisconfigured(
                f"{service.name}: steps with a connection need store='postgres'"
            )
        self.store = (
            PostgresServiceStore(
                settings.database_url.get_secret_value(),
                service.name,
                schema=service.schema,
                components=("service", "vault") if needs_vault else ("service",),
                keep_sent=settings.outbox_retention_hours > 0,
            )
            if service.store == "postgres"
            else None
        )
        self.vault = _vault(service)
        self.relay = (
            OutboxRelay.of(self.store, self.publisher, settings) if self.store is not None else None
        )
        #: A partition's fetched records in shared transactions (``SAGA_DELIVERY_BATCH``).
        self._batched = self.store is not None and settings.delivery_batch > 1
        self.consumer = Consumer(
            settings,
            topics=self.topics,
            # One group per namespace: deployments sharing a cluster never mix.
            group_id=f"{settings.topic_prefix}{service.name}",
            handler=None if self._batched else self._handle,
            batch_handler=self._handle_batch if self._batched else None,
            registry=service.registry,
            publisher=self.publisher,
            client_id=f"{service.name}-consumer",
            accepts=service.steps.__contains__,
            # Its commands topic is read by it alone: a type no step of it handles
            # would be handled by no one, so it is dead-lettered, not skipped.
            answers_for=[self.commands_topic],
            # A step the coordinator starts: its trigger from the commands topic only,
            # even where the event's own topic is read for another step.
            only_from={
                kind: self.commands_topic
                for kind, step in service.steps.items()
                if step.by_coordinator
            },
            # Step errors are handled by the runner; what reaches the consumer is
            # infrastructure (database, broker) and is retried until it recovers.
            handler_attempts=0,
        )
        self.runner = StepRunner(
            service,
            store=self.store,
            emit=self._emit,
            after_commit=self.relay.publish if self.relay is not None else None,
            keep_going=lambda: not self.consumer.stopping,
            events_topic=self.events_topic,
            max_record_bytes=usable_record_bytes(settings),
            faults=Faults(settings.faults),
            connections=self._resolve if self.vault is not None else None,
        )
        self.requests = RequestRunner(
            service,
            store=self.store,
            emit=self._emit,
            after_commit=self.relay.publish if self.relay is not None else None,
            topic_prefix=prefix,
            vault=self.vault,
        )
        self.health = (
            HttpServer(
                http_app(
                    self._report,
                    [self._endpoint(route) for route in service.routes],
                    authenticator(settings),
                    ready=lambda: self._ready,
                    not_ready=f"{service.name} is not ready",
                ),
                host=settings.health_host,
                port=settings.health_port,
            )
            if settings.health_port is not None
            else None
        )
        self._relay_task: asyncio.Task[None] | None = None
        self._ready = False

    async def start(self) -> None:
        service = self.service
        await ensure_topics(self.settings, [*self.topics, self.events_topic, self.commands_topic])
        if self.health is not None:
            await self.health.start()
        await self.publisher.start()
        if self.store is not None and self.relay is not None:
            await self.store.start()
            await self.relay.publish_pending()  # left over from a crash
            self._relay_task = asyncio.create_task(self.relay.run(), name="outbox relay")
        await self.consumer.start()
        self._ready = True
        log.info("service %s consuming %s", service.name, ", ".join(self.topics))

    async def run(self) -> None:
        try:
            await self.consumer.run()
        finally:
            self._ready = False
            await self._close()

    async def serve(self) -> None:
        await serve_until_signalled(
            self.start, self.run, self.stop, grace_s=self.settings.shutdown_grace_ms / 1000
        )

    def stop(self) -> None:
        self._ready = False
        self.consumer.stop()

    async def _handle(self, envelope: Envelope[Message]) -> None:
        await self.runner.handle(envelope)

    async def _handle_batch(
        self, envelopes: list[Envelope[Message]], spans: list[Span], _: list[RawRecord]
    ) -> None:
        size = self.settings.delivery_batch
        deliveries = list(zip(envelopes, spans, strict=True))
        for start in range(0, len(deliveries), size):
            await self.runner.handle_batch(deliveries[start : start + size])

    async def _resolve(self, handle: str, valid_for: timedelta, owner: str | None) -> str:
        assert self.vault is not None
        assert self.store is not None
        return await self.vault.resolve(self.store.pool, handle, valid_for=valid_for, owner=owner)

    async def _emit(self, records: list[tuple[str, EncodedRecord]]) -> None:
        await self.publisher.publish_raw_many(
            [(topic, r.key, r.value, r.headers) for topic, r in records]
        )

    def _endpoint(self, route: Route) -> Endpoint:
        async def answer(request: HttpRequest, principal: Principal) -> tuple[int, Any]:
            return await self.requests.run(route, request, principal)

        return Endpoint(route.method, route.pattern, answer, route.role, route.public)

    def _report(self) -> tuple[bool, dict[str, Any]]:
        breakers = {b.name for step in self.service.steps.values() for b in step.uses}
        # A partition that makes no progress is not ready (SAGA_STALL_AFTER_MS).
        stalled = [stall.to_json() for stall in self.consumer.stalled()]
        return self._ready and not stalled, {
            "service": self.service.name,
            "partitions": len(self.consumer.assignment()) if self._ready else 0,
            "circuits": CircuitBreaker.states(breakers),
            "stalled": stalled,
        }

    async def _close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self._relay_task is not None:
            with contextlib.suppress(Exception):
                await self._relay_task
        with contextlib.suppress(Exception):
            if self.relay is not None:
                await self.relay.publish_pending()
        await self.publisher.stop()
        if self.store is not None:
            await self.store.stop()
        if self.health is not None:
            await self.health.stop()


def _vault(service: Service) -> Vault | None:
    """The vault for the service's connect tokens; keys are required only when a step
    cannot run without a connection."""
    wanted = [step.connection for step in service.steps.values() if step.connection is not None]
    if not wanted:
        return None
    if any(connection.required for connection in wanted) or VaultKeys.configured():
        return Vault(VaultKeys.from_env(), service.refreshers)
    log.info("%s: no vault keys (SAGA_VAULT_KEYS): connection handles will fail", service.name)
    return None


def consumed_topics(service: Service, mode: SagaMode) -> list[str]:
    """Topics the service reads: in orchestration mode only what the coordinator sends
    (its commands topic, and the coordinator's own events), never other services' events."""
    if mode != "orchestration":
        return service.topics
    own = events_topic(COORDINATOR_OWNER)
    return list(dict.fromkeys([service.commands_topic, *(t for t in service.topics if t == own)]))


def run_service(service: Service) -> int:
    """Run ``service`` as a process, with settings from ``SAGA_*``, until SIGTERM/SIGINT;
    its exit code. A service package's ``__main__.py``::

        from saga import run_service
        from myapp.payment import service

        raise SystemExit(run_service(service))
    """
    from saga.shutdown import run_process

    settings = Settings(service_name=service.name, client_id=service.name)

    async def serve() -> None:
        await ServiceRuntime(service, settings).serve()

    return run_process(serve, settings)
