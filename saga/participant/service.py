"""Step services: register forward steps and their compensations with decorators.

A small, complete service (``services/shipping/service.py``)::

    service = Service("shipping")

    @service.on(PaymentCharged, fails_with=ShippingFailed)
    async def ship(charged: PaymentCharged, ctx: StepContext) -> OrderShipped:
        if charged.order_id.startswith("nowhere"):
            raise StepFailure("no carrier for this address", error_type="NoCarrier")
        return OrderShipped(order_id=charged.order_id, parcel_id=ctx.idempotency_key[:8])

    @service.compensate(CancelShipment)
    async def cancel(command: CancelShipment, ctx: StepContext) -> ShipmentCancelled:
        return ShipmentCancelled(order_id=command.order_id, cancelled=...)

A handler returns its completion event (or several, or none). Raising
:class:`StepFailure` fails the step at once with its failure event; any other
error is retried per the step's :class:`~saga.resilience.retry.RetryPolicy`, and when
retries run out the failure event carries the last error's type and message.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from saga.messages.base import Command, Event, Message
from saga.messages.envelope import Envelope
from saga.messages.registry import MessageRegistry
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import commands_topic, events_topic, owner_of, topic_for_type
from saga.resilience.circuit import CircuitBreaker
from saga.resilience.retry import NonRetryableError, RetryPolicy

if TYPE_CHECKING:
    from saga.participant.routes import Route, RouteHandler
    from saga.security.vault import Connection

M = TypeVar("M", bound=Message)
C = TypeVar("C", bound=Command)

HandlerResult = Event | Sequence[Event] | None
StepHandler = Callable[[M, "StepContext"], Awaitable[HandlerResult]]
StoreChoice = Literal["postgres"] | None

#: Compensations must eventually succeed: they are retried longer by default.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
)


class StepFailure(NonRetryableError):
    """A business failure: the step fails now, without retries.

    ``raise StepFailure("out of stock", error_type="OutOfStock")`` emits the
    step's failure event with that type and message; ``raise
    StepFailure(event=MyFailure(...))`` emits the given event instead.
    """

    def __init__(
        self, message: str = "", *, error_type: str = "StepFailure", event: Event | None = None
    ) -> None:
        super().__init__(message)
        if event is not None and not isinstance(event, Event):
            raise TypeError(f"StepFailure(event=...) needs an Event, not {type(event).__name__}")
        self.error_type = error_type
        self.event = event


class NoDatabase(NonRetryableError):
    """``ctx.db`` used by a step whose service has no store: a defect, not retried."""


@dataclass(frozen=True)
class StepContext:
    """What a handler knows about the message it handles."""

    envelope: Envelope[Message]
    step: str
    attempt: int
    log: logging.LoggerAdapter[logging.Logger]
    span: Any
    _db: Any = None
    _connection_token: str | None = field(default=None, repr=False)

    @property
    def connection_token(self) -> str:
        """The user's access token for the step's connection (see :mod:`saga.security.vault`)."""
        if self._connection_token is None:
            raise NoDatabase(
                "no connection token: the step declares no connection"
                " (@service.on(..., connection=...)) or the message carried no handle"
            )
        return self._connection_token

    @property
    def db(self) -> Any:
        """The delivery's database connection, inside its transaction (``store="postgres"``).

        Its writes commit together with the inbox row and the outgoing events.
        """
        if self._db is None:
            raise NoDatabase(
                "this delivery has no database: use Service(..., store='postgres'), and in "
                "tests ServiceTestKit(service, database_url=...)"
            )
        return self._db

    @property
    def has_db(self) -> bool:
        return self._db is not None

    @property
    def saga_id(self) -> str:
        return self.envelope.saga_id

    @property
    def saga_type(self) -> str | None:
        return self.envelope.saga_type

    @property
    def message_id(self) -> str:
        return self.envelope.id

    @property
    def causation_id(self) -> str | None:
        """Id of the message that caused the one being handled."""
        return self.envelope.causation_id

    @property
    def idempotency_key(self) -> str:
        """Stable across redeliveries: pass it to downstream calls to make them idempotent."""
        return self.envelope.id


@dataclass(frozen=True)
class Step:
    """One registered handler and how it is run."""

    message: type[Message]
    handler: Callable[[Any, StepContext], Awaitable[HandlerResult]]
    name: str
    compensation: bool
    retry: RetryPolicy | None
    timeout: timedelta | None
    uses: tuple[CircuitBreaker, ...]
    fails_with: type[StepFailed] | None
    connection: Connection | None = None

    @property
    def topic(self) -> str:
        return topic_for_type(self.message.message_type, self.message.kind)


@dataclass
class Service:
    """An independent step service: its name, its steps and their defaults."""

    name: str
    store: StoreChoice = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    timeout: timedelta | None = None
    #: SQL the service's own tables need, run once at start (idempotent statements).
    schema: Sequence[str] = ()
    #: The types it reads and writes, filled as handlers register: their inputs,
    #: declared outputs and failures, and the shared failure events.
    registry: MessageRegistry = field(default_factory=MessageRegistry)
    steps: dict[str, Step] = field(default_factory=dict)
    #: HTTP routes served on the health port (see :mod:`saga.participant.routes`).
    routes: list[Route] = field(default_factory=list)
    #: How each provider's connect tokens are refreshed (see :mod:`saga.security.vault`).
    refreshers: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"/services/{self.name}"

    @property
    def events_topic(self) -> str:
        return events_topic(self.name)

    @property
    def commands_topic(self) -> str:
        return commands_topic(self.name)

    @property
    def topics(self) -> list[str]:
        """Topics this service consumes, in registration order."""
        return list(dict.fromkeys(step.topic for step in self.steps.values()))

    def on(
        self,
        message: type[M],
        *,
        step: str | None = None,
        fails_with: type[StepFailed] | None = None,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
        connection: Connection | None = None,
    ) -> Callable[[StepHandler[M]], StepHandler[M]]:
        """Register a forward step run for each ``message`` (an event or a command).

        ``connection``: the user's connect token the step needs, resolved from
        the vault just before the handler runs (``ctx.connection_token``).
        """
        if connection is not None and connection.handle_field not in message.model_fields:
            raise ValueError(
                f"{message.message_type} has no field {connection.handle_field!r} "
                "for the connection handle"
            )

        def register(handler: StepHandler[M]) -> StepHandler[M]:
            self._add(
                Step(
                    message,
                    handler,
                    step or handler.__name__,
                    False,
                    retry,
                    timeout,
                    tuple(uses),
                    fails_with,
                    connection,
                )
            )
            return handler

        return register

    def compensate(
        self,
        command: type[C],
        *,
        step: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
    ) -> Callable[[StepHandler[C]], StepHandler[C]]:
        """Register the undo of a step. It must be idempotent: undoing what never
        happened (or was undone already) succeeds and says so in its event."""
        if owner_of(command.message_type) != self.name:
            raise ValueError(
                f"{self.name} can only carry out its own commands, not "
                f"{command.message_type!r} (commands travel on <owner>.commands)"
            )

        def register(handler: StepHandler[C]) -> StepHandler[C]:
            self._add(
                Step(
                    command,
                    handler,
                    step or handler.__name__,
                    True,
                    retry,
                    timeout,
                    tuple(uses),
                    None,
                )
            )
            return handler

        return register

    def route(self, method: str, path: str) -> Callable[[RouteHandler], RouteHandler]:
        """Register an HTTP route, e.g. ``@service.route("POST", "/orders")``."""
        from saga.participant.routes import Route

        def register(handler: RouteHandler) -> RouteHandler:
            self.routes.append(Route(method.upper(), path, handler))
            return handler

        return register

    def policy_for(self, step: Step) -> RetryPolicy:
        if step.retry is not None:
            return step.retry
        return self.compensation_retry if step.compensation else self.retry

    def timeout_for(self, step: Step) -> timedelta | None:
        return step.timeout if step.timeout is not None else self.timeout

    def _add(self, step: Step) -> None:
        message_type = step.message.message_type
        if message_type in self.steps:
            raise ValueError(f"{self.name} already handles {message_type!r}")
        if step.fails_with is not None:
            try:  # the SDK builds it by itself when a step fails: make sure it can
                step.fails_with(error_type="Check", error_message="", attempts=1)
            except ValueError as exc:
                raise TypeError(
                    f"{step.fails_with.__name__} must be buildable from error_type, "
                    "error_message and attempts alone (give other fields defaults)"
                ) from exc
        for model in (step.message, step.fails_with, *_returned(step.handler)):
            if model is not None and model.message_type not in self.registry:
                self.registry.register(model)
        for model in (StepFailed, CompensationFailed):
            if model.message_type not in self.registry:
                self.registry.register(model)
        self.steps[message_type] = step


def _returned(handler: Callable[..., Any]) -> list[type[Message]]:
    """The message types a handler's return annotation names (``A``, ``A | B``, ``list[A]``)."""
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError):  # an annotation that cannot be resolved names nothing
        return []
    found: list[type[Message]] = []
    pending: list[Any] = [hints.get("return")]
    while pending:
        hint = pending.pop()
        if isinstance(hint, type) and issubclass(hint, Message):
            found.append(hint)
        else:
            pending.extend(typing.get_args(hint))
    return found
