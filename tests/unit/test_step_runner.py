"""Step semantics through the user-facing test kit (in memory, no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import pytest

from contracts.inventory import InventoryReserved
from contracts.orders import OrderPlaced
from contracts.payment import PaymentCharged, PaymentFailed, PaymentRefunded, RefundPayment
from saga.messages.envelope import Envelope
from saga.messages.steps import CompensationFailed, StepFailed
from saga.outbox.store import Delivery
from saga.participant.service import Service, StepContext, StepFailure
from saga.participant.step_runner import StepRunner, StoreUnavailable
from saga.resilience.circuit import CircuitBreaker, CircuitOpen
from saga.resilience.retry import RetryPolicy
from saga.testing import ServiceTestKit

RESERVED = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=500)


def payment(**kwargs: object) -> Service:
    return Service("payment", retry=RetryPolicy(maximum_attempts=4, jitter=0), **kwargs)  # type: ignore[arg-type]


async def test_completion_event_is_emitted_in_the_same_saga_caused_by_the_trigger() -> None:
    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        assert (ctx.saga_id, ctx.step, ctx.attempt) == ("o-1", "charge", 1)
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1", saga_type="order")
    assert outcome.kind == "completed"
    [event] = kit.emitted()
    assert event.payload == PaymentCharged(order_id="o-1", amount_cents=500, charge_id="c")
    assert event.saga_id == "o-1"
    assert event.saga_type == "order"
    assert event.step == "charge"
    assert event.source == "/services/payment"
    assert event.causation_id == outcome.emitted[0].causation_id
    assert kit.transport.topics["payment.events"]


async def test_transient_error_twice_then_success_emits_one_event_with_attempt_three() -> None:
    service = payment()
    attempts: list[int] = []

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("bank unreachable")
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("completed", 3)
    assert attempts == [1, 2, 3]
    [event] = kit.emitted()
    assert event.attempt == 3
    assert kit.delays == [1.0, 2.0], "backoff per policy (jitter 0)"


async def test_exhausted_retries_emit_the_failure_event_with_the_last_error() -> None:
    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        raise ConnectionError(f"bank unreachable (try {ctx.attempt})\n  at line 12")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("failed", 4)
    [event] = kit.emitted()
    assert event.payload == PaymentFailed(
        error_type="ConnectionError",
        error_message="bank unreachable (try 4) at line 12",
        attempts=4,
    )
    assert event.attempt == 4


async def test_non_retryable_error_fails_at_once() -> None:
    service = payment()
    calls = 0

    @service.on(
        InventoryReserved,
        fails_with=PaymentFailed,
        retry=RetryPolicy(non_retryable_error_types=(PermissionError,)),
    )
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        nonlocal calls
        calls += 1
        raise PermissionError("card blocked")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts, calls) == ("failed", 1, 1)
    assert kit.emitted()[0].payload == PaymentFailed(
        error_type="PermissionError", error_message="card blocked", attempts=1
    )


async def test_step_failure_is_a_business_failure_with_its_own_type() -> None:
    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        raise StepFailure("limit exceeded", error_type="CardDeclined")

    kit = ServiceTestKit(service)
    assert (await kit.send(RESERVED, saga_id="o-1")).kind == "failed"
    assert kit.emitted()[0].payload == PaymentFailed(
        error_type="CardDeclined", error_message="limit exceeded", attempts=1
    )


async def test_a_step_without_a_declared_failure_event_emits_the_generic_one() -> None:
    service = payment()

    @service.on(InventoryReserved)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
        raise StepFailure("nope")

    kit = ServiceTestKit(service)
    await kit.send(RESERVED, saga_id="o-1")
    assert isinstance(kit.emitted()[0].payload, StepFailed)


async def test_handler_exceeding_its_timeout_is_retried_then_failed() -> None:
    service = payment()
    calls = 0

    @service.on(
        InventoryReserved,
        fails_with=PaymentFailed,
        attempt_timeout=timedelta(milliseconds=20),
        retry=RetryPolicy(maximum_attempts=2),
    )
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1)
        raise AssertionError("unreachable")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, calls) == ("failed", 2)
    assert kit.emitted()[0].payload == PaymentFailed(
        error_type="StepTimeout", error_message="step exceeded its timeout of 0.02s", attempts=2
    )


async def test_same_message_twice_with_an_inbox_runs_once_and_emits_once() -> None:
    service = payment(store="postgres")
    effects: list[str] = []

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        effects.append(ctx.message_id)
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    kit = ServiceTestKit(service)  # in-memory inbox, as the PostgreSQL store would do
    first = await kit.send(RESERVED, saga_id="o-1")
    again = await kit.deliver(kit.transport.read("inventory.events", service)[0])
    assert (first.kind, again.kind) == ("completed", "duplicate")
    assert len(effects) == 1
    assert len(kit.emitted()) == 1


async def test_declared_circuit_opens_fails_fast_and_closes_after_a_probe() -> None:
    clock = [0.0]
    bank = CircuitBreaker(
        "bank-test",
        failure_threshold=2,
        reset_timeout=timedelta(seconds=30),
        clock=lambda: clock[0],
    )
    service = payment()
    calls: list[int] = []
    healthy = False

    @service.on(
        InventoryReserved,
        fails_with=PaymentFailed,
        uses=[bank],
        retry=RetryPolicy(maximum_attempts=3),
    )
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        calls.append(ctx.attempt)
        if not healthy:
            raise ConnectionError("bank down")
        return PaymentCharged(order_id=reserved.order_id, amount_cents=500, charge_id="c")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    # Two real calls open the circuit; the third attempt fails fast without a call.
    assert calls == [1, 2]
    assert outcome.kind == "failed"
    assert kit.emitted()[0].payload.error_type == "CircuitOpen"  # type: ignore[attr-defined]
    with pytest.raises(CircuitOpen):
        bank.check()

    healthy = True
    clock[0] += 30  # reset timeout passed: half-open, one probe allowed
    outcome = await kit.send(RESERVED, saga_id="o-2")
    assert outcome.kind == "completed"
    assert calls == [1, 2, 1]
    assert bank.state.value == "closed"


async def test_compensating_what_never_happened_succeeds_and_says_so() -> None:
    service = payment()
    charged: set[str] = set()

    @service.compensate(RefundPayment)
    async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
        done = command.order_id in charged
        charged.discard(command.order_id)
        return PaymentRefunded(order_id=command.order_id, refunded=done)

    kit = ServiceTestKit(service)
    outcome = await kit.send(RefundPayment(order_id="never-charged"), saga_id="never-charged")
    assert outcome.kind == "completed"
    assert kit.emitted()[0].payload == PaymentRefunded(order_id="never-charged", refunded=False)
    assert kit.transport.topics["payment.commands"], "commands arrive on the owner's topic"


async def test_a_failing_compensation_is_attempted_once_and_announced_for_the_coordinator() -> None:
    service = payment()

    @service.compensate(RefundPayment)
    async def refund(command: RefundPayment, ctx: StepContext) -> PaymentRefunded:
        raise ConnectionError("bank down")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RefundPayment(order_id="o-1"), saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("compensation_failed", 1), "it retries"
    assert kit.emitted()[0].payload == CompensationFailed(
        command_type="payment.RefundPayment",
        error_type="ConnectionError",
        error_message="bank down",
        attempts=1,
    )


async def test_a_message_no_step_handles_is_ignored() -> None:
    service = payment()

    @service.compensate(RefundPayment)
    async def refund(command: RefundPayment, ctx: StepContext) -> None:
        return None

    outcome = await ServiceTestKit(service).send(
        OrderPlaced(order_id="o", customer_id="c", amount_cents=1), saga_id="o"
    )
    assert outcome.kind == "ignored"


def test_a_service_only_carries_out_its_own_commands() -> None:
    with pytest.raises(ValueError, match="can only carry out its own commands"):
        Service("inventory").compensate(RefundPayment)


def test_one_handler_per_message_type() -> None:
    service = payment()

    @service.on(InventoryReserved)
    async def one(reserved: InventoryReserved, ctx: StepContext) -> None:
        return None

    with pytest.raises(ValueError, match="already handles"):
        service.on(InventoryReserved)(one)


async def test_a_database_outage_is_not_a_step_failure_and_emits_nothing() -> None:
    class DownStore:
        @asynccontextmanager
        async def delivery(
            self, message_id: str, message_type: str, saga_id: str, outcome: str, attempts: int
        ) -> AsyncIterator[Delivery]:
            if message_id:  # always: the database refuses every connection
                raise ConnectionRefusedError("database is down")
            yield Delivery(duplicate=False)

    service = payment()
    calls = 0

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
        nonlocal calls
        calls += 1

    emitted: list[object] = []

    async def emit(records: list[object]) -> None:
        emitted.extend(records)

    runner = StepRunner(service, store=DownStore(), emit=emit)  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable, match="database is down"):
        await runner.handle(Envelope(payload=RESERVED, saga_id="o-1", source="/t"))
    assert calls == 0
    assert emitted == []


async def test_returning_something_other_than_events_is_a_defect_and_not_retried() -> None:
    service = payment()
    calls = 0

    @service.on(InventoryReserved, fails_with=PaymentFailed)  # type: ignore[arg-type]
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> RefundPayment:
        nonlocal calls
        calls += 1
        return RefundPayment(order_id="o-1")  # a command: not for a handler to emit

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, calls) == ("failed", 1)
    failure = kit.emitted()[0].payload
    assert isinstance(failure, PaymentFailed)
    assert failure.error_type == "InvalidHandlerResult"
    assert [e.type for e in kit.emitted()] == ["payment.PaymentFailed"]


async def test_ctx_db_without_a_store_says_what_to_do() -> None:
    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
        await ctx.db.execute("SELECT 1")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    failure = kit.emitted()[0].payload
    assert isinstance(failure, PaymentFailed)
    assert failure.error_type == "NoDatabase"
    assert "store='postgres'" in failure.error_message


async def test_an_event_over_the_size_limit_fails_the_step_instead_of_blocking_the_outbox() -> None:
    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        return PaymentCharged(order_id="o-1", amount_cents=1, charge_id="x" * 5000)

    kit = ServiceTestKit(service)
    kit.runner._max_record_bytes = 2048
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts) == ("failed", 1)
    failure = kit.emitted()[0].payload
    assert isinstance(failure, PaymentFailed)
    assert failure.error_type == "EventTooLarge"


def test_a_failure_event_the_sdk_cannot_build_is_refused_at_registration() -> None:
    from typing import ClassVar

    class NeedsMore(StepFailed):
        message_type: ClassVar[str] = "payment.NeedsMore"
        order_id: str

    service = payment()
    with pytest.raises(TypeError, match="must be buildable from error_type"):

        @service.on(InventoryReserved, fails_with=NeedsMore)
        async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
            return None


async def test_the_kit_reads_back_an_event_the_handler_did_not_annotate() -> None:
    service = payment()

    @service.on(InventoryReserved)
    async def charge(reserved: InventoryReserved, ctx: StepContext):  # type: ignore[no-untyped-def]
        return PaymentCharged(order_id=reserved.order_id, amount_cents=1, charge_id="c")

    kit = ServiceTestKit(service)
    reserved = InventoryReserved(order_id="o-1", sku="s", quantity=1, amount_cents=1)
    assert (await kit.send(reserved, saga_id="o-1")).kind == "completed"
    assert [e.type for e in kit.emitted()] == ["payment.PaymentCharged"]


async def test_a_write_the_database_refuses_for_its_data_fails_the_step_at_once() -> None:
    import asyncpg

    service = payment()
    calls = 0

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> PaymentCharged:
        nonlocal calls
        calls += 1
        raise asyncpg.NumericValueOutOfRangeError("integer out of range")

    kit = ServiceTestKit(service)
    outcome = await kit.send(RESERVED, saga_id="o-1")
    assert (outcome.kind, outcome.attempts, calls) == ("failed", 1, 1), "never retried"
    assert kit.emitted()[0].payload == PaymentFailed(
        error_type="NumericValueOutOfRangeError",
        error_message="the database refused the step's data: "
        "NumericValueOutOfRangeError: integer out of range",
        attempts=1,
    )


async def test_a_record_the_store_refuses_for_its_data_is_refused_not_retried() -> None:
    import asyncpg

    from saga.resilience.data_errors import RecordRefused

    class RefusingStore:
        @asynccontextmanager
        async def delivery(
            self, message_id: str, message_type: str, saga_id: str, outcome: str, attempts: int
        ) -> AsyncIterator[Delivery]:
            if message_id:  # always: the inbox's index cannot hold this id
                raise asyncpg.ProgramLimitExceededError("index row size 8016 exceeds maximum")
            yield Delivery(duplicate=False)

    service = payment()

    @service.on(InventoryReserved, fails_with=PaymentFailed)
    async def charge(reserved: InventoryReserved, ctx: StepContext) -> None:
        raise AssertionError("not run")

    async def emit(records: list[object]) -> None:
        raise AssertionError("nothing is emitted")

    runner = StepRunner(service, store=RefusingStore(), emit=emit)  # type: ignore[arg-type]
    with pytest.raises(RecordRefused, match="the database refuses this record's data") as refused:
        await runner.handle(Envelope(payload=RESERVED, saga_id="o-1", source="/t"))
    assert refused.value.error_type == "ProgramLimitExceededError"
