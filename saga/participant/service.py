"""Step services: bind handlers to step contracts, and run them with retries and a store.

A small, complete service (``services/shipping/service.py``)::

    service = Service("shipping", store="postgres")

    @service.step(SHIP)                      # SHIP: the step's contract (its messages)
    async def ship(charged: PaymentCharged, ctx: StepContext) -> OrderShipped:
        if charged.order_id.startswith("nowhere"):
            raise StepFailure("no carrier for this address", error_type="NoCarrier")
        return OrderShipped(order_id=charged.order_id, parcel_id=ctx.idempotency_key[:8])

    @service.compensation(SHIP)
    async def cancel(command: CancelShipment, ctx: StepContext) -> ShipmentCancelled:
        return ShipmentCancelled(order_id=command.order_id, cancelled=...)

Binding checks, when the module is imported, that the contract's step belongs
to this service and that the handler reads the contract's trigger (or
compensation command) and returns its completion (or confirmation).

A handler returns its completion event (or several, or none). Raising
:class:`StepFailure` fails the step at once with its failure event; any other
error is retried per the step's :class:`~saga.resilience.retry.RetryPolicy`,
each attempt bounded by its ``attempt_timeout``, and when retries run out the
failure event carries the last error's type and message. A compensation is
attempted once per command: when it fails, ``saga.CompensationFailed`` goes to
the coordinator, which sends the command again per the saga's compensation
retry policy (one owner for compensation retries) and parks the saga when
attempts run out.

A step whose contract has no compensation cannot be undone: its handler reads the
same trigger, but the service takes it from its commands topic only, where the
coordinator sends it once it has checked that the saga still goes forward. So
it never runs for a saga that is compensating, cancelled or finished, in
choreography too, with the handler unchanged.

``@service.on(Message)`` and ``@service.compensate(Command)`` register a
handler for a message without a contract (an event outside any saga step).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from saga.definition.contract import StepContract
from saga.errors import ConfigurationError, ServiceMisconfigured
from saga.messages.base import Command, Event, Message
from saga.messages.registry import MessageRegistry
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import commands_topic, events_topic, owner_of, topic_for_type
from saga.participant.context import NoDatabase, StepContext
from saga.resilience.circuit import CircuitBreaker
from saga.resilience.retry import NonRetryableError, RetryPolicy

if TYPE_CHECKING:
    from saga.participant.routes import Route, RouteHandler
    from saga.security.vault import Connection

__all__ = ["NoDatabase", "Service", "Step", "StepContext", "StepFailure"]

M = TypeVar("M", bound=Message)
C = TypeVar("C", bound=Command)

HandlerResult = Event | Sequence[Event] | None
StepHandler = Callable[[M, "StepContext"], Awaitable[HandlerResult]]
StoreChoice = Literal["postgres"] | None

#: A compensation command is attempted once; the coordinator owns its retries.
ONE_ATTEMPT = RetryPolicy(maximum_attempts=1)


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


class ContractMismatch(ConfigurationError, TypeError):
    """A handler does not fit the step contract it is bound to; the message says how."""


@dataclass(frozen=True)
class Step:
    """One registered handler and how it is run."""

    message: type[Message]
    handler: Callable[[Any, StepContext], Awaitable[HandlerResult]]
    name: str
    compensation: bool
    retry: RetryPolicy | None
    attempt_timeout: timedelta | None
    uses: tuple[CircuitBreaker, ...]
    fails_with: type[StepFailed] | None
    connection: Connection | None = None
    #: Its trigger comes on the service's commands topic only, sent by the coordinator
    #: once it checked that the saga still goes forward (a step that cannot be undone).
    by_coordinator: bool = False

    @property
    def topic(self) -> str:
        return topic_for_type(self.message.message_type, self.message.kind)


@dataclass
class Service:
    """An independent step service: its name, its steps and their defaults."""

    name: str
    store: StoreChoice = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: How long one attempt of a handler may take (``StepTimeout``, then retried).
    attempt_timeout: timedelta | None = None
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
        """Topics this service consumes, in registration order: a step's trigger topic, or
        the commands topic for a step the coordinator starts. The commands topic is read
        whenever the service has a step: the coordinator sends on it a step that must go
        forward again (after the pivot)."""
        topics = [
            self.commands_topic if step.by_coordinator else step.topic
            for step in self.steps.values()
        ]
        if self.steps:
            topics.append(self.commands_topic)
        return list(dict.fromkeys(topics))

    # --- binding to step contracts --------------------------------------------------

    def step(
        self,
        contract: StepContract,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        attempt_timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
        connection: Connection | None = None,
    ) -> Callable[[StepHandler[M]], StepHandler[M]]:
        """Run the forward step of ``contract``: the handler reads its trigger and returns
        its completion; a failure emits the contract's failure event."""
        self._owns(contract)

        def bind(handler: StepHandler[M]) -> StepHandler[M]:
            reads = _first_parameter(handler)
            trigger = contract.trigger or reads
            where = f"{self.name}: handler {handler.__name__}"
            if trigger is None or (reads is not None and not issubclass(trigger, reads)):
                raise ContractMismatch(
                    f"{where} reads {_name(reads)}, but its step is started by "
                    f"{_name(trigger)}: annotate the first parameter with the trigger"
                )
            _check_returns(where, handler, contract.completion)
            self.on(
                trigger,
                step=name,
                fails_with=contract.failure,
                retry=retry,
                attempt_timeout=attempt_timeout,
                uses=uses,
                connection=connection,
                outputs=(contract.completion,),
            )(cast("StepHandler[Any]", handler))
            if not contract.reversible:
                # Nothing undoes it: it runs only on the coordinator's go, never for a
                # saga that is compensating, cancelled or finished.
                key = trigger.message_type
                self.steps[key] = replace(self.steps[key], by_coordinator=True)
            return handler

        return bind

    def compensation(
        self,
        contract: StepContract,
        *,
        command: type[Command] | None = None,
        name: str | None = None,
        attempt_timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
    ) -> Callable[[StepHandler[C]], StepHandler[C]]:
        """Run the undo of ``contract``'s step: the handler reads its compensation command
        and returns the confirming event. It must be idempotent: undoing what never
        happened (or was undone already) succeeds and says so in its event.

        ``command``: another command of this service that undoes the step the same way
        (the saga's ``on_timeout`` command, sent when the step timed out), bound to the
        same confirmation."""
        self._owns(contract)
        if contract.compensation is None or contract.compensated is None:
            raise ContractMismatch(
                f"{self.name}: the step completed by {contract.completion.__name__} has no"
                " compensation in its contract (an irreversible step has nothing to bind)"
            )
        command = command or contract.compensation
        confirmation = contract.compensated

        def bind(handler: StepHandler[C]) -> StepHandler[C]:
            where = f"{self.name}: compensation {handler.__name__}"
            reads = _first_parameter(handler)
            if reads is not None and not issubclass(command, reads):
                raise ContractMismatch(
                    f"{where} reads {_name(reads)}, but the step's compensation command is "
                    f"{command.__name__}"
                )
            _check_returns(where, handler, confirmation)
            self.compensate(command, step=name, attempt_timeout=attempt_timeout, uses=uses)(
                cast("StepHandler[Any]", handler)
            )
            self._register(confirmation)
            return handler

        return bind

    def _owns(self, contract: StepContract) -> None:
        problems = contract.problems()
        if contract.service != self.name:
            problems.append(
                f"the step completed by {contract.completion.message_type!r} belongs to service"
                f" {contract.service!r}, not {self.name!r}"
            )
        if problems:
            raise ContractMismatch(f"{self.name}: " + "; ".join(problems))

    # --- handlers for single messages -----------------------------------------------

    def on(
        self,
        message: type[M],
        *,
        step: str | None = None,
        fails_with: type[StepFailed] | None = None,
        retry: RetryPolicy | None = None,
        attempt_timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
        connection: Connection | None = None,
        outputs: Sequence[type[Event]] = (),
    ) -> Callable[[StepHandler[M]], StepHandler[M]]:
        """Register a forward step run for each ``message`` (an event or a command).

        ``connection``: the user's connect token the step needs, resolved from
        the vault just before the handler runs (``ctx.connection_token``).
        ``outputs``: events it may return beyond those its return annotation names.
        """
        if connection is not None and connection.handle_field not in message.model_fields:
            raise ServiceMisconfigured(
                f"{message.message_type} has no field {connection.handle_field!r} "
                "for the connection handle"
            )
        owner_field = connection.owner_field if connection is not None else None
        if owner_field is not None and owner_field not in message.model_fields:
            raise ServiceMisconfigured(
                f"{message.message_type} has no field {owner_field!r} naming the connection's owner"
            )

        def register(handler: StepHandler[M]) -> StepHandler[M]:
            self._add(
                Step(
                    message,
                    handler,
                    step or handler.__name__,
                    False,
                    retry,
                    attempt_timeout,
                    tuple(uses),
                    fails_with,
                    connection,
                )
            )
            for model in outputs:
                self._register(model)
            return handler

        return register

    def compensate(
        self,
        command: type[C],
        *,
        step: str | None = None,
        attempt_timeout: timedelta | None = None,
        uses: Sequence[CircuitBreaker] = (),
    ) -> Callable[[StepHandler[C]], StepHandler[C]]:
        """Register the undo of a step, attempted once per command (the coordinator
        retries). It must be idempotent: undoing what never happened (or was undone
        already) succeeds and says so in its event."""
        if owner_of(command.message_type) != self.name:
            raise ServiceMisconfigured(
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
                    ONE_ATTEMPT,
                    attempt_timeout,
                    tuple(uses),
                    None,
                )
            )
            return handler

        return register

    def route(
        self, method: str, path: str, *, role: str | None = None, public: bool = False
    ) -> Callable[[RouteHandler], RouteHandler]:
        """Register an HTTP route, e.g. ``@service.route("POST", "/orders")``.

        Every route needs a bearer token (``ctx.principal`` is the caller); ``role``: the
        role it needs too (``viewer``, ``operator``, ``approver``; None: any
        authenticated caller); ``public=True``: open to anyone, for what must be.
        """
        from saga.participant.routes import Route
        from saga.security.auth import ROLES

        if role is not None and role not in ROLES:
            raise ServiceMisconfigured(
                f"{self.name}: route {method} {path}: role {role!r} is not one of {ROLES}"
            )
        if public and role is not None:
            raise ServiceMisconfigured(f"{self.name}: route {method} {path} is public: no role")

        def register(handler: RouteHandler) -> RouteHandler:
            self.routes.append(Route(method.upper(), path, handler, role, public))
            return handler

        return register

    def policy_for(self, step: Step) -> RetryPolicy:
        return step.retry if step.retry is not None else self.retry

    def timeout_for(self, step: Step) -> timedelta | None:
        """The bound of one attempt of ``step``."""
        return step.attempt_timeout if step.attempt_timeout is not None else self.attempt_timeout

    def _register(self, model: type[Message]) -> None:
        if model.message_type not in self.registry:
            self.registry.register(model)

    def _add(self, step: Step) -> None:
        message_type = step.message.message_type
        if message_type in self.steps:
            raise ServiceMisconfigured(f"{self.name} already handles {message_type!r}")
        if step.fails_with is not None:
            try:  # the SDK builds it by itself when a step fails: make sure it can
                step.fails_with(error_type="Check", error_message="", attempts=1)
            except ValueError as exc:
                raise ContractMismatch(
                    f"{step.fails_with.__name__} must be buildable from error_type, "
                    "error_message and attempts alone (give other fields defaults)"
                ) from exc
        for model in (step.message, step.fails_with, *_returned(step.handler)):
            if model is not None:
                self._register(model)
        self._register(StepFailed)
        self._register(CompensationFailed)
        self.steps[message_type] = step


def _name(model: type[Message] | None) -> str:
    return model.__name__ if model is not None else "nothing (no annotation)"


def _hints(handler: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(handler)
    except (NameError, TypeError):  # an annotation that cannot be resolved names nothing
        return {}


def _first_parameter(handler: Callable[..., Any]) -> type[Message] | None:
    """The message type a handler's first parameter is annotated with, if any (through
    ``functools.wraps`` decorators; a bound method's ``self`` is not a parameter)."""
    try:
        parameters = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a callable whose signature cannot be read
        return None
    if not parameters:
        return None
    hint = _hints(inspect.unwrap(handler)).get(parameters[0].name)
    return hint if isinstance(hint, type) and issubclass(hint, Message) else None


def _returned(handler: Callable[..., Any]) -> list[type[Message]]:
    """The message types a handler's return annotation names (``A``, ``A | B``, ``list[A]``)."""
    found: list[type[Message]] = []
    pending: list[Any] = [_hints(inspect.unwrap(handler)).get("return")]
    while pending:
        hint = pending.pop()
        if isinstance(hint, type) and issubclass(hint, Message):
            found.append(hint)
        else:
            pending.extend(typing.get_args(hint))
    return found


def _check_returns(where: str, handler: Callable[..., Any], expected: type[Event]) -> None:
    """A handler bound to a contract returns its event; an unannotated one is trusted."""
    returned = _returned(handler)
    # ``-> Event`` (a base of the expected event) says nothing against it; a failure event
    # returned is the step failing on purpose.
    strays = [m for m in returned if not issubclass(expected, m) and not issubclass(m, StepFailed)]
    if strays:
        raise ContractMismatch(
            f"{where} returns {', '.join(m.__name__ for m in strays)}, but its contract says "
            f"{expected.__name__}"
        )
