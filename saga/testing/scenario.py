"""Test a saga definition on the coordinator's pure decisions: given, when, then.

A :class:`SagaScenario` feeds one saga's facts to
:func:`~saga.coordinator.decide.decide`, the function the coordinator runs, and
keeps what the coordinator's shell would keep: the saga's state, its pending
timers and a clock. No broker, no database, no waiting: a timeout is a call.

>>> from contracts.inventory import InventoryReserved, ReleaseInventory
>>> from contracts.order_saga import ORDER_SAGA
>>> from contracts.orders import OrderPlaced
>>> from contracts.payment import PaymentFailed
>>> def test_a_declined_payment_releases_the_stock() -> None:
...     scenario = SagaScenario(ORDER_SAGA, saga_id="o-1")
...     scenario.receive(OrderPlaced(order_id="o-1", customer_id="c-1", amount_cents=900))
...     scenario.receive(
...         InventoryReserved(order_id="o-1", sku="sku-1", quantity=1, amount_cents=900)
...     )
...     scenario.receive(PaymentFailed(error_type="CardDeclined"))
...     [release] = scenario.expect_commands(ReleaseInventory)
...     assert release.payload == {"order_id": "o-1"}
...     assert (scenario.status, scenario.step("charge")) == ("compensating", "failed")
>>> test_a_declined_payment_releases_the_stock()

**When.** Events are message objects: ``receive(InventoryReserved(...))``. The
service that sent one is the owner of its type (``inventory``); give
``service=`` for the shared failure events (``saga.StepFailed``,
``saga.CompensationFailed``). Timers fire by name, at once:
``fire("step-timeout:charge")`` moves the clock to the timer's due time;
``advance(timedelta(minutes=1))`` fires everything falling due on the way, in
order. Operators act with :meth:`~SagaScenario.approve`,
:meth:`~SagaScenario.reject`, :meth:`~SagaScenario.retry`,
:meth:`~SagaScenario.skip` and :meth:`~SagaScenario.resolve`.

Timer names are the coordinator's: ``step-timeout:<step>``,
``compensation-timeout:<step>``, ``compensation-retry:<step>``, ``deadline``,
``approval-sla:<step>`` and ``approval-deadline:<step>``.

Only the start event opens the saga, as in the coordinator: an event received
before it is held (``held``; its decision says ``hold``) and decided right
after the start event, in the order received.

**Then.** ``status`` and ``step(name)`` are the saga's and a step's status,
``state`` the whole :class:`~saga.coordinator.state.SagaState`; ``timers`` the
pending timers by name. Everything decided so far is in ``commands``,
``published``, ``tasks``, ``timers_set``, ``timers_cancelled`` and ``notes``.
``expect_commands(...)``, ``expect_published(...)`` and ``expect_tasks(...)``
check what was decided since their previous call, so a test reads one step at
a time; each returns what it matched, to look further (payload, purpose).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from saga.coordinator.decide import (
    CommandToSend,
    Decision,
    EventToPublish,
    Incoming,
    IncomingKind,
    TaskChange,
    Timer,
    decide,
)
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition, SagaMode
from saga.messages.base import Event, Message
from saga.messages.topics import COORDINATOR_OWNER, owner_of

#: Where a scenario's clock starts unless told otherwise.
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class SagaScenario:
    """One saga of ``definition``, driven fact by fact. See the module's docstring."""

    def __init__(
        self,
        definition: SagaDefinition,
        *,
        mode: SagaMode = "choreography",
        saga_id: str = "saga-1",
        start: datetime = DEFAULT_START,
    ) -> None:
        self.definition = definition
        self.mode: SagaMode = mode
        self.saga_id = saga_id
        self._now = start
        self._state: SagaState | None = None
        self._timers: dict[str, datetime] = {}
        self._facts = 0
        #: Every decision, in order; ``last`` is the latest.
        self.decisions: list[Decision] = []
        #: Commands sent (compensations; in orchestration and for alternatives, starts).
        self.commands: list[CommandToSend] = []
        #: Events the coordinator published (joins, approval outcomes, task events).
        self.published: list[EventToPublish] = []
        #: Approval tasks opened, escalated, approved, rejected or cancelled.
        self.tasks: list[TaskChange] = []
        self.timers_set: list[Timer] = []
        self.timers_cancelled: list[str] = []
        #: What the decisions say happened, for the saga log (and a failing test's message).
        self.notes: list[str] = []
        #: Events received before the start event: held, decided right after it.
        self.held: list[Incoming] = []
        self._checked = {"commands": 0, "published": 0, "tasks": 0}

    # --- when ------------------------------------------------------------------------

    def receive(
        self,
        event: Event,
        *,
        service: str | None = None,
        step: str | None = None,
        attempt: int = 1,
    ) -> Decision:
        """The coordinator reads ``event`` of this saga, sent by ``service`` (by default
        the owner of its type), as ``step`` of it at its ``attempt``."""
        owner = owner_of(event.message_type)
        return self._decide(
            "event",
            event.message_type,
            service=service or (owner if owner != COORDINATOR_OWNER else None),
            step_hint=step,
            attempt=attempt,
            payload=event.model_dump(mode="json"),
        )

    def fire(self, timer: str, *, late: bool = False) -> Decision:
        """Fire the pending ``timer`` now: the clock moves on to its due time (other
        timers due before it do not fire). ``late=True`` fires one that is not pending
        (cancelled or fired already), as a timer firing just as it was cancelled."""
        due = self._timers.pop(timer, None)
        if due is None:
            if not late:
                raise AssertionError(
                    f"timer {timer!r} is not pending (pending: {sorted(self._timers)});"
                    " fire(..., late=True) fires it anyway"
                )
            due = self._now
        self._now = max(self._now, due)
        return self._decide("timer", timer, message_id=f"timer:{self.saga_id}:{timer}:{due}")

    def advance(self, by: timedelta) -> list[Decision]:
        """Move the clock on by ``by``; each timer falling due on the way fires at its
        due time, in order (those the firings set too). The decisions, in order."""
        if by < timedelta(0):
            raise ValueError("time does not go back")
        until = self._now + by
        decisions = []
        while self._timers:
            name, due = min(self._timers.items(), key=lambda item: item[1])
            if due > until:
                break
            decisions.append(self.fire(name))
        self._now = until
        return decisions

    def approve(self, step: str, *, by: str, reason: str | None = None) -> Decision:
        """``by`` approves the approval step ``step``."""
        return self._operate(f"approve:{step}", by, reason)

    def reject(self, step: str, *, by: str, reason: str | None = None) -> Decision:
        """``by`` rejects the approval step ``step`` (the saga compensates)."""
        return self._operate(f"reject:{step}", by, reason)

    def retry(self, *, by: str, reason: str | None = None) -> Decision:
        """An operator retries the compensations of a parked saga."""
        return self._operate("retry", by, reason)

    def skip(self, step: str, *, by: str, reason: str | None = None) -> Decision:
        """An operator skips ``step``'s compensation (undone by hand, say)."""
        return self._operate(f"skip:{step}", by, reason)

    def cancel(self, *, by: str, reason: str | None = None) -> Decision:
        """An operator cancels the saga (``saga cancel``)."""
        return self._operate("cancel", by, reason)

    def resolve(self, *, by: str, reason: str | None = None) -> Decision:
        """An operator closes the saga as it is."""
        return self._operate("resolve", by, reason)

    # --- then ------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The scenario's clock: the time of the next fact."""
        return self._now

    @property
    def state(self) -> SagaState:
        """The saga's state; an ``AssertionError`` before anything opened the saga."""
        if self._state is None:
            raise AssertionError(f"no saga {self.saga_id!r} yet: no event opened it")
        return self._state

    @property
    def status(self) -> str:
        """The saga's status (a :data:`~saga.coordinator.state.SagaStatus`).

        Typed ``str``: a checker narrows a property after ``assert scenario.status ==
        "running"`` and would call a later ``== "completed"`` impossible."""
        return self.state.status

    def step(self, name: str) -> str:
        """The status of step ``name`` (a :data:`~saga.coordinator.state.StepStatus`)."""
        return self.state.steps[name].status

    @property
    def timers(self) -> dict[str, datetime]:
        """The pending timers: name -> due time."""
        return dict(self._timers)

    @property
    def last(self) -> Decision:
        """The decision on the latest fact."""
        if not self.decisions:
            raise AssertionError("nothing happened yet")
        return self.decisions[-1]

    def expect_commands(self, *expected: str | type[Message]) -> list[CommandToSend]:
        """Assert that the commands sent since the previous call are ``expected`` (message
        types or classes), in order; none when called without any. Returns them."""
        return self._expect("commands", self.commands, expected, lambda c: c.message_type)

    def expect_published(self, *expected: str | type[Message]) -> list[EventToPublish]:
        """Assert that the events published since the previous call are ``expected``."""
        return self._expect("published", self.published, expected, lambda e: e.message_type)

    def expect_tasks(self, *expected: str) -> list[TaskChange]:
        """Assert that the task changes since the previous call are ``expected``
        (``"opened"``, ``"escalated"``, ``"approved"``, ``"rejected"``, ``"cancelled"``)."""
        return self._expect("tasks", self.tasks, expected, lambda t: t.change)

    # --- the shell -------------------------------------------------------------------

    def _operate(self, action: str, actor: str, reason: str | None) -> Decision:
        return self._decide("operator", action, actor=actor, reason=reason)

    def _decide(
        self,
        kind: IncomingKind,
        type_: str,
        *,
        message_id: str | None = None,
        service: str | None = None,
        step_hint: str | None = None,
        attempt: int = 1,
        payload: dict[str, object] | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Decision:
        self._facts += 1
        incoming = Incoming(
            kind=kind,
            message_id=message_id or f"{self.saga_id}:{self._facts}",
            type=type_,
            saga_id=self.saga_id,
            saga_type=self.definition.name,
            at=self._now,
            service=service,
            step_hint=step_hint,
            attempt=attempt,
            payload=dict(payload or {}),
            actor=actor,
            reason=reason,
        )
        return self._apply(incoming)

    def _apply(self, incoming: Incoming) -> Decision:
        before = self._state
        decision = decide(before, incoming, self.definition, self._now, mode=self.mode)
        # As the coordinator's shell keeps it: a fact that changed nothing is only logged.
        if decision.state is not None and decision.applied:
            self._state = decision.state
        for name in decision.cancel_timers:
            self._timers.pop(name, None)
        for timer in decision.set_timers:
            self._timers[timer.name] = timer.due
        self.decisions.append(decision)
        self.commands += decision.commands
        self.published += decision.events
        self.tasks += decision.tasks
        self.timers_set += decision.set_timers
        self.timers_cancelled += decision.cancel_timers
        self.notes += decision.notes
        if decision.hold:
            self.held.append(incoming)
        elif before is None and self._state is not None:
            # The start event opened the saga: what was held is decided right after it.
            held, self.held = self.held, []
            for event in held:
                self._apply(replace(event, at=self._now))
        return decision

    def _expect(
        self,
        what: str,
        found: list[T],
        expected: Sequence[str | type[Message]],
        name_of: Callable[[T], str],
    ) -> list[T]:
        new = found[self._checked[what] :]
        self._checked[what] = len(found)
        wanted = [e if isinstance(e, str) else e.message_type for e in expected]
        got = [name_of(item) for item in new]
        if got != wanted:
            raise AssertionError(
                f"expected {what} {wanted} since the last check, got {got}\n"
                f"  all {what}: {[name_of(item) for item in found]}\n"
                f"  saga: {self._state.status if self._state else 'not opened'}\n"
                "  notes:\n" + "\n".join(f"    {note}" for note in self.notes)
            )
        return new
