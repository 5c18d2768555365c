"""Run sagas end to end in one process: the coordinator's decisions and the services'
own handlers, over in-memory topics, with no broker.

>>> from contracts.order_saga import ORDER_SAGA
>>> from contracts.orders import OrderPlaced
>>> from services.inventory.service import service as inventory
>>> from services.notification.service import service as notification
>>> from services.payment.service import service as payment
>>> from services.shipping.service import service as shipping
>>> async def test_an_order_completes(database_url: str) -> None:
...     services = [inventory, payment, shipping, notification]
...     async with InMemorySagaSystem(
...         ORDER_SAGA, services, database_url=database_url
...     ) as system:
...         order = OrderPlaced(order_id="o-1", customer_id="c-1", amount_cents=900)
...         await system.start_saga(order, saga_id="o-1")
...         await system.run_until_quiet()
...         assert system.state("o-1").status == "completed"

Each service runs in a :class:`~saga.testing.ServiceTestKit`: the same
:class:`~saga.participant.step_runner.StepRunner` as in production, with its
retries, inbox and outbox. Every record a service or the coordinator publishes
goes on one :class:`~saga.testing.InMemoryTransport` and is delivered, in the
order it was published, to whoever reads its topic as the real processes would:
the services whose steps take its type (in orchestration mode, only their
commands and the coordinator's events), and the coordinator, which runs
:func:`~saga.coordinator.decide.decide` on sagas kept in memory and publishes
its commands, events and ``saga.SagaFinished`` outcomes.

Services whose handlers use ``ctx.db`` need PostgreSQL: with ``database_url``
each service with a store gets its real PostgreSQL store (its inbox, outbox and
tables), as ``ServiceTestKit(service, database_url=...)`` does; open the system
with ``async with`` then. Services without a store need nothing; without
``database_url``, a service with a store gets an in-memory inbox and outbox,
and a handler that uses ``ctx.db`` fails its step (``NoDatabase``).

Time stands still unless told: timers are kept with their due times, and
``await system.advance(timedelta(seconds=31))`` (or ``fire_due(now=...)``)
fires each timer falling due, at its due time, and runs until quiet after each.
As in the coordinator, only a saga's start event opens it: an event read before
it is held and decided right after it, or, once ``orphan_hold`` (5 minutes) has
passed without it, given up as an orphan (:meth:`~InMemorySagaSystem.orphans`).
:meth:`~InMemorySagaSystem.start_saga`, :meth:`~InMemorySagaSystem.publish`
and :meth:`~InMemorySagaSystem.operate` put messages on the topics;
:meth:`~InMemorySagaSystem.run_until_quiet` delivers them and all they cause.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from saga.coordinator import intake
from saga.coordinator.decide import (
    Decision,
    Incoming,
    TaskChange,
)
from saga.coordinator.orphans import ORPHAN_HOLD
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition, SagaMode
from saga.errors import ServiceMisconfigured
from saga.messages.base import Message
from saga.messages.codec import EncodedRecord, RawRecord, decode, encode
from saga.messages.envelope import Envelope
from saga.messages.errors import UnknownMessageType
from saga.messages.lifecycle import SagaFinished
from saga.messages.registry import MessageRegistry
from saga.messages.topics import (
    owner_of,
    topic_for_type,
)
from saga.participant.runtime import consumed_topics
from saga.participant.service import Service
from saga.testing.coordinator import COORDINATOR_SOURCE, InMemoryCoordinator
from saga.testing.service_kit import ServiceTestKit
from saga.testing.transport import InMemoryTransport


class _Topics(InMemoryTransport):
    """The transport, telling the system of each record published."""

    def __init__(self, system: InMemorySagaSystem) -> None:
        super().__init__()
        self._system = system

    def publish(self, topic: str, record: EncodedRecord) -> None:
        super().publish(topic, record)
        self._system._published(topic, record)


class InMemorySagaSystem:
    """Sagas of ``definitions`` and their ``services`` in one process. See the module's
    docstring."""

    def __init__(
        self,
        definitions: SagaDefinition | Sequence[SagaDefinition],
        services: Sequence[Service] = (),
        *,
        mode: SagaMode = "choreography",
        database_url: str | None = None,
        start: datetime | None = None,
        orphan_hold: timedelta = ORPHAN_HOLD,
    ) -> None:
        if isinstance(definitions, SagaDefinition):
            definitions = [definitions]
        self.mode: SagaMode = mode
        self._now = start or datetime.now(UTC)
        self._coordinator = InMemoryCoordinator(
            definitions,
            mode=mode,
            publish=self._from_coordinator,
            clock=lambda: self._now,
            orphan_hold=orphan_hold,
        )
        #: Every type published in the system: what the coordinator reads and writes,
        #: its outcome announcements, and (below) what the services read and write.
        self._registry = MessageRegistry([*self._coordinator.registry, SagaFinished])
        self.transport: InMemoryTransport = _Topics(self)
        self._database_url = database_url
        self._kits: dict[str, ServiceTestKit] = {}
        self._readers: dict[str, list[ServiceTestKit]] = {}
        for service in services:
            if service.name in self._kits:
                raise ValueError(f"service {service.name!r} is given twice")
            kit = ServiceTestKit(
                service,
                database_url=database_url if service.store is not None else None,
                transport=self.transport,
            )
            self._kits[service.name] = kit
            for topic in consumed_topics(service, mode):
                self._readers.setdefault(topic, []).append(kit)
            for model in service.registry:
                self._registry.register(model)
        _check_started_by_coordinator(definitions, services)
        self._started = database_url is None
        self._stores = AsyncExitStack()

        self._pending: deque[tuple[str, EncodedRecord, Envelope[Message]]] = deque()
        self._messages: list[Envelope[Message]] = []

    async def __aenter__(self) -> InMemorySagaSystem:
        async with AsyncExitStack() as stores:
            for kit in self._kits.values():
                await stores.enter_async_context(kit)
            self._stores = stores.pop_all()  # started, all of them: kept open
        self._started = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stores.aclose()
        self._started = self._database_url is None

    # --- putting messages on the topics ------------------------------------------------

    async def start_saga(
        self,
        event: Message,
        *,
        saga_id: str,
        saga_type: str | None = None,
        source: str | None = None,
    ) -> Envelope[Message]:
        """Publish ``event``, the start event of a saga, as its owning service would."""
        starting = [
            d
            for d in self._coordinator.loaded.latest.values()
            if d.starts_with.message_type == event.message_type
        ]
        if saga_type is None:
            if len(starting) != 1:
                names = ", ".join(sorted(d.name for d in starting)) or "no saga"
                raise ValueError(f"{event.message_type} starts {names}: name the saga_type")
            saga_type = starting[0].name
        elif saga_type not in {d.name for d in starting}:
            raise ValueError(f"saga {saga_type!r} is not started by {event.message_type}")
        return await self.publish(event, saga_id=saga_id, saga_type=saga_type, source=source)

    async def publish(
        self,
        message: Message,
        *,
        saga_id: str,
        saga_type: str | None = None,
        source: str | None = None,
        step: str | None = None,
    ) -> Envelope[Message]:
        """Publish ``message`` on its topic: an event as its owner would (``source`` by
        default ``/services/<owner>``), a command as the coordinator would."""
        self._require_started()
        self._registry.register(type(message))
        envelope: Envelope[Message] = Envelope(
            payload=message,
            saga_id=saga_id,
            saga_type=saga_type,
            source=source
            or (
                f"/services/{owner_of(message.message_type)}"
                if message.kind == "event"
                else COORDINATOR_SOURCE
            ),
            step=step,
        )
        self.transport.publish(topic_for_type(envelope.type, message.kind), encode(envelope))
        return envelope

    async def operate(
        self, saga_id: str, action: str, *, actor: str, reason: str | None = None
    ) -> Decision:
        """An operator's ``retry``, ``skip:<step>``, ``resolve``, ``approve:<step>``,
        ``reject:<step>``, ``cancel`` on saga ``saga_id``."""
        state = self.state(saga_id)
        incoming = Incoming(
            kind="operator",
            message_id=f"operator:{saga_id}:{len(self._coordinator.decisions)}",
            type=action,
            saga_id=saga_id,
            saga_type=state.saga_type,
            at=self._now,
            actor=actor,
            reason=reason,
        )
        return self._coordinator.decide(incoming, self._coordinator.definition_of(state))

    # --- delivering them -----------------------------------------------------------------

    async def run_until_quiet(self, *, limit: int = 10_000) -> int:
        """Deliver every record published, and those they cause, until none is left;
        how many were delivered. More than ``limit`` is taken for a loop: an error."""
        self._require_started()
        delivered = 0
        while self._pending:
            delivered += 1
            if delivered > limit:
                raise RuntimeError(
                    f"still not quiet after {limit} messages: a loop? the latest: "
                    f"{[e.type for e in self._messages[-10:]]}"
                )
            topic, record, envelope = self._pending.popleft()
            if topic in self._coordinator.topics:
                self._coordinator.read(envelope)
            for kit in self._readers.get(topic, ()):
                step = kit.service.steps.get(envelope.type)
                if step is None:
                    continue
                if step.by_coordinator and topic != kit.service.commands_topic:
                    continue  # as the runtime: its trigger from the commands topic only
                await kit._consume(topic, record)
        return delivered

    async def fire_due(self, now: datetime | None = None) -> int:
        """Move the clock to ``now`` (by default: where it is) and fire every timer due by
        then, each at its due time and in order, running until quiet after each; how many
        fired. Timers the firings set fire too if they fall due by ``now``."""
        until = max(self._now, now or self._now)
        fired = 0
        await self.run_until_quiet()
        while self._coordinator.timers:
            (saga_id, name), due = min(self._coordinator.timers.items(), key=lambda item: item[1])
            if due > until:
                break
            del self._coordinator.timers[(saga_id, name)]
            self._now = max(self._now, due)
            state = self._coordinator.states.get(saga_id)
            if state is None:
                continue
            incoming = intake.from_timer(saga_id, state.saga_type, name, due, self._now)
            self._coordinator.decide(incoming, self._coordinator.definition_of(state))
            fired += 1
            await self.run_until_quiet()
        self._now = until
        self._coordinator.expire_held(until)
        return fired

    async def advance(self, by: timedelta) -> int:
        """Move the clock on by ``by``, firing the timers falling due on the way (see
        :meth:`fire_due`); how many fired."""
        if by < timedelta(0):
            raise ValueError("time does not go back")
        return await self.fire_due(self._now + by)

    # --- what happened -----------------------------------------------------------------

    @property
    def decisions(self) -> list[tuple[Incoming, Decision]]:
        """Every fact the coordinator decided on, with its decision, in order."""
        return self._coordinator.decisions

    @property
    def now(self) -> datetime:
        """The coordinator's clock."""
        return self._now

    def state(self, saga_id: str) -> SagaState:
        """The state of saga ``saga_id`` as the coordinator keeps it."""
        try:
            return self._coordinator.states[saga_id]
        except KeyError:
            raise KeyError(
                f"no saga {saga_id!r} (known: {sorted(self._coordinator.states)})"
            ) from None

    def timers(self, saga_id: str) -> dict[str, datetime]:
        """The pending timers of saga ``saga_id``: name -> due time."""
        return {
            name: due for (saga, name), due in self._coordinator.timers.items() if saga == saga_id
        }

    def tasks(self, saga_id: str) -> list[TaskChange]:
        """What happened to the approval tasks of saga ``saga_id``, in order."""
        return list(self._coordinator.tasks.get(saga_id, ()))

    def messages(self, saga_id: str | None = None) -> list[Envelope[Message]]:
        """Every message published (of saga ``saga_id``), in order."""
        return [e for e in self._messages if saga_id is None or e.saga_id == saga_id]

    def orphans(self) -> list[Envelope[Message]]:
        """Events the coordinator read for a saga never started: held ``orphan_hold``
        for the start event (it may come later, from another topic), then given up
        (the real coordinator dead-letters them as ``OrphanEvent``)."""
        return list(self._coordinator.orphans)

    def kit(self, service: str) -> ServiceTestKit:
        """The kit running ``service``: its runner, its store (``kit.emitted()``)."""
        return self._kits[service]

    def _from_coordinator(self, topic: str, record: EncodedRecord) -> None:
        self.transport.publish(topic, record)

    # --- the topics ----------------------------------------------------------------------

    def _published(self, topic: str, record: EncodedRecord) -> None:
        raw = RawRecord(topic, 0, 0, record.key, record.value, record.headers)
        try:
            envelope = decode(raw, self._registry)
        except UnknownMessageType:  # returned by a handler whose annotations did not name it
            for kit in self._kits.values():
                for model in kit.service.registry:
                    if model.message_type not in self._registry:
                        self._registry.register(model)
            envelope = decode(raw, self._registry)
        self._messages.append(envelope)
        self._pending.append((topic, record, envelope))

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError(
                "services with a database are started by `async with InMemorySagaSystem(...)`"
            )


def _check_started_by_coordinator(
    definitions: Sequence[SagaDefinition], services: Sequence[Service]
) -> None:
    """A step that cannot be undone runs on the coordinator's command only: a service
    that binds its trigger otherwise (``service.on``) would run it twice, once for the
    event and once for the command, and for sagas that no longer go forward."""
    by_name = {service.name: service for service in services}
    for definition in definitions:
        for step in definition.steps:
            service = by_name.get(step.service)
            if service is None or not step.started_by_coordinator:
                continue
            for trigger in step.started_by:
                bound = service.steps.get(trigger.message_type)
                if bound is not None and not bound.by_coordinator:
                    raise ServiceMisconfigured(
                        f"{service.name}: step {step.name!r} of saga {definition.name!r}"
                        f" cannot be undone, but its handler {bound.name!r} is bound with"
                        f" service.on({trigger.__name__}): bind it with"
                        " service.step(<its contract>) so that it runs on the coordinator's"
                        " command only"
                    )
