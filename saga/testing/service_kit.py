"""Test a step service without a broker: same handlers, same runner, in memory.

>>> from contracts.orders import OrderPlaced
>>> async def test_reserve() -> None:                      # doctest: +SKIP
...     kit = ServiceTestKit(service)
...     outcome = await kit.send(OrderPlaced(order_id="o-1", customer_id="c", amount_cents=5),
...                              saga_id="o-1")
...     assert outcome.kind == "completed"
...     assert [e.type for e in kit.emitted()] == ["inventory.InventoryReserved"]

Retry delays are skipped (the attempts still happen), so a policy with long
backoffs tests in milliseconds. With ``inbox=True`` (the default for services
with a store) a message id is handled once, as the PostgreSQL inbox would.
Handlers that use ``ctx.db`` need a real database: pass ``database_url`` to
run the PostgreSQL store itself. Kits given one ``transport`` share its topics
(that is how :class:`~saga.testing.system.InMemorySagaSystem` wires services).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from opentelemetry import trace

from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, RawRecord, decode, encode
from saga.messages.envelope import Envelope
from saga.messages.registry import MessageRegistry
from saga.messages.topics import topic_for_type
from saga.outbox.send_order import Written
from saga.outbox.store import Delivery, DeliveryStore, PostgresServiceStore
from saga.participant.service import Service
from saga.participant.step_runner import Outcome, StepRunner
from saga.resilience.faults import Faults
from saga.security.vault import Vault
from saga.testing.transport import InMemoryTransport


class _MemoryStore:
    """The inbox/outbox contract of the PostgreSQL store, in memory."""

    def __init__(self, transport: InMemoryTransport) -> None:
        self._transport = transport
        self.inbox: dict[str, str] = {}
        self._outbox: dict[int, tuple[str, EncodedRecord]] = {}
        self._ids = itertools.count(1)

    @asynccontextmanager
    async def delivery(
        self, message_id: str, message_type: str, saga_id: str, outcome: str, attempts: int
    ) -> AsyncIterator[Delivery]:
        delivery = Delivery(duplicate=message_id in self.inbox)
        yield delivery  # an exception here leaves nothing behind: a rollback
        if not delivery.duplicate:
            self.inbox[message_id] = outcome
            for topic, record in delivery.outgoing:
                row = next(self._ids)
                self._outbox[row] = (topic, record)
                delivery.written.append(Written(row, topic, record))

    async def publish(self, written: list[Written]) -> None:
        for row in written:
            self._transport.publish(*self._outbox.pop(row.id))


class ServiceTestKit:
    """Runs ``service``'s handlers against an :class:`InMemoryTransport`."""

    def __init__(
        self,
        service: Service,
        *,
        inbox: bool | None = None,
        database_url: str | None = None,
        skip_retry_delays: bool = True,
        faults: Faults | None = None,
        vault: Vault | None = None,
        transport: InMemoryTransport | None = None,
    ) -> None:
        self.service = service
        self.transport = transport if transport is not None else InMemoryTransport()
        self.delays: list[float] = []
        self._postgres: PostgresServiceStore | None = None
        store: DeliveryStore | None = None
        after_commit: Any = None
        if database_url is not None:
            self._postgres = PostgresServiceStore(
                database_url,
                service.name,
                schema=service.schema,
                components=("service", "vault") if vault is not None else ("service",),
            )
            store = self._postgres
            after_commit = self._publish_outbox
        elif inbox if inbox is not None else service.store is not None:
            memory = _MemoryStore(self.transport)
            store, after_commit = memory, memory.publish
        self._skip = skip_retry_delays
        self.runner = StepRunner(
            service,
            store=store,
            emit=self._emit,
            after_commit=after_commit,
            sleep=self._sleep,
            faults=faults,
            connections=self._resolve if vault is not None else None,
        )
        self.vault = vault

    async def _resolve(self, handle: str, valid_for: timedelta, owner: str | None) -> str:
        if self.vault is None or self._postgres is None:
            raise ValueError("connections need ServiceTestKit(..., database_url=..., vault=...)")
        return await self.vault.resolve(
            self._postgres.pool, handle, valid_for=valid_for, owner=owner
        )

    async def __aenter__(self) -> ServiceTestKit:
        if self._postgres is not None:
            await self._postgres.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._postgres is not None:
            await self._postgres.stop()

    async def send(
        self,
        message: Message,
        *,
        saga_id: str,
        saga_type: str | None = None,
        source: str = "/tests",
    ) -> Outcome:
        """Publish ``message`` on its topic as another service would, and handle it."""
        envelope: Envelope[Message] = Envelope(
            payload=message, saga_id=saga_id, saga_type=saga_type, source=source
        )
        return await self.deliver(envelope)

    async def deliver(self, envelope: Envelope[Message]) -> Outcome:
        """Handle ``envelope`` (again, to test redelivery) through the real codec."""
        return await self.runner.handle(self._through_codec(envelope))

    async def deliver_batch(self, envelopes: Sequence[Envelope[Message]]) -> list[Outcome]:
        """Handle ``envelopes`` as the runtime handles a partition's fetched batch:
        first attempts share a transaction (``SAGA_DELIVERY_BATCH``); outcomes in order."""
        span = trace.get_current_span()
        return await self.runner.handle_batch([(self._through_codec(e), span) for e in envelopes])

    async def _consume(self, topic: str, record: EncodedRecord) -> Outcome:
        """Handle a record already on ``topic`` of the transport, as the consumer would."""
        return await self.runner.handle(self._read(topic, record, self.service.registry))

    def _through_codec(self, envelope: Envelope[Message]) -> Envelope[Message]:
        topic = topic_for_type(envelope.type, envelope.payload.kind)
        record = encode(envelope)
        self.transport.publish(topic, record)
        registry = self.service.registry
        if envelope.type not in registry:  # the consumer skips it unread; the runner ignores it
            registry = MessageRegistry([type(envelope.payload)])
        return self._read(topic, record, registry)

    @staticmethod
    def _read(topic: str, record: EncodedRecord, registry: MessageRegistry) -> Envelope[Message]:
        return decode(RawRecord(topic, 0, 0, record.key, record.value, record.headers), registry)

    def emitted(self) -> list[Envelope[Message]]:
        """Everything the service published on its events topic, in order."""
        return self.transport.read(self.service.events_topic, self.service)

    async def _emit(self, records: list[tuple[str, EncodedRecord]]) -> None:
        for topic, record in records:
            self.transport.publish(topic, record)

    async def _publish_outbox(self, written: list[Written]) -> None:
        # What the outbox holds, not what was handed to it: a test sees the rows' contents.
        assert self._postgres is not None
        ids = [row.id for row in written]
        async with self._postgres.pool.acquire() as connection, connection.transaction():
            rows = await self._postgres.unsent(connection, ids, len(ids))
            for row in rows:
                self.transport.publish(
                    row.topic,
                    EncodedRecord(
                        row.key or b"", row.value or b"", [(n, v or b"") for n, v in row.headers]
                    ),
                )
            await self._postgres.mark_sent(connection, [row.id for row in rows])

    async def _sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if not self._skip:
            await asyncio.sleep(seconds)
