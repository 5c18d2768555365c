"""``saga retry|skip|resolve|dry-run``: an operator acts on a saga, or sees what would happen.

An action runs the coordinator's own logic on its database, is appended to the
saga log with the operator's name and reason, and what it sends is published
(the coordinator's relay would, too). ``dry-run`` changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from saga.cli.database import load_saga
from saga.cli.definitions import definition_of, loaded_definitions
from saga.coordinator.apply import Coordinator
from saga.coordinator.decide import Incoming, decide
from saga.coordinator.runtime import open_store
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition
from saga.kafka.publisher import Publisher
from saga.outbox.relay import OutboxRelay
from saga.outbox.send_order import Written
from saga.settings import Settings

T = TypeVar("T")


def retry(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, "retry", None)


def skip(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, f"skip:{args.step}", args.reason)


def resolve(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, "resolve", args.reason)


def dry_run(args: argparse.Namespace) -> int:
    state = asyncio.run(load_saga(args.saga_id))
    if state is None:
        print(f"no saga {args.saga_id!r}")
        return 2
    definition = definition_of(state)
    if definition is None:
        print(f"no saga definition {state.saga_type!r} loaded")
        return 2
    if args.fail not in state.steps:
        print(f"saga {state.saga_type!r} has no step {args.fail!r}")
        return 2
    commands = simulate_failure(state, definition, args.fail)
    print(f"if {args.fail} failed now, saga {state.saga_id} would send, in order:")
    for number, (step, command) in enumerate(commands, 1):
        print(f"  {number}. {command} (undo {step})")
    if not commands:
        print("  nothing: no completed step to undo")
    return 0


def simulate_failure(
    state: SagaState, definition: SagaDefinition, step: str
) -> list[tuple[str, str]]:
    """Compensations that would run if ``step`` failed now (confirming each in turn)."""
    now = datetime.now(state.started_at.tzinfo)
    service = definition.step(step).service
    fact = Incoming(
        kind="event",
        message_id="dry-run-0",
        type="saga.StepFailed",
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        at=now,
        service=service,
        step_hint=step,
        payload={"error_type": "DryRun", "error_message": "simulated"},
    )
    current = state
    if current.steps[step].status not in ("pending", "running"):
        current = current.with_step(step, status="running")
    if current.status != "running":
        current = replace(current, status="running")
    sent: list[tuple[str, str]] = []
    for n in range(1, 2 * len(definition.steps) + 2):
        decision = decide(current, fact, definition, now)
        assert decision.state is not None
        current = decision.state
        if not decision.commands:
            break
        command = decision.commands[0]
        sent.append((command.step, command.message_type))
        confirm = definition.step(command.step).compensated_by[0]
        fact = replace(
            fact,
            message_id=f"dry-run-{n}",
            type=confirm.message_type,
            payload={},
            service=definition.step(command.step).service,
            step_hint=None,
        )
    return sent


def operator_name() -> str:
    """Who acts: ``SAGA_OPERATOR``, else the login name (recorded in the saga log)."""
    return os.environ.get("SAGA_OPERATOR") or getpass.getuser()


async def with_coordinator(work: Callable[[Coordinator], Awaitable[tuple[T, list[Written]]]]) -> T:
    """Run ``work`` with the coordinator's logic on its database; publish what it wrote
    to the outbox (the coordinator's relay would, too, if this fails)."""
    settings = Settings()
    store = open_store(settings)
    await store.start()
    try:
        coordinator = Coordinator(
            loaded_definitions(), store, topic_prefix=settings.topic_prefix, mode=settings.mode
        )
        result, written = await work(coordinator)
        if written:
            async with Publisher(settings) as publisher:
                await OutboxRelay(store, publisher).publish(written)
        return result
    finally:
        await store.stop()


def _operate(saga_id: str, action: str, reason: str | None) -> int:
    actor = operator_name()

    async def act(coordinator: Coordinator) -> tuple[tuple[str | None, list[str]], list[Written]]:
        decision, written = await coordinator.operate(saga_id, action, actor=actor, reason=reason)
        if decision is None or decision.state is None:
            return (None, []), written
        return (decision.state.status, decision.notes), written

    status, notes = asyncio.run(with_coordinator(act))
    if status is None:
        print(f"no saga {saga_id!r}")
        return 2
    for note in notes:
        print(note)
    print(f"saga {saga_id}: {status}")
    return 0
