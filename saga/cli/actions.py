"""``saga retry|skip|resolve|cancel|dry-run``: an operator acts on a saga, or sees the effect.

An action runs the coordinator's own logic on its database in one transaction: the
saga's new state, the saga-log entries with the operator's name and reason, and what
the decision sends (compensation commands, the ``saga.SagaFinished`` announcement) as
rows of the coordinator's outbox. The command publishes nothing itself: the running
coordinator's outbox relay does, signed with the coordinator's key, so an operator
needs access to the coordinator's database and no signing key. ``dry-run`` changes
nothing.

Exit status: 0 when the action was taken; 1 when the coordinator's logic refused it
(nothing to do, the saga finished already), with the reason on one line; 2 when the
arguments name no saga or no step of it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from saga.cli.database import load_saga
from saga.cli.definitions import definition_of, loaded_definitions
from saga.coordinator.apply import Coordinator
from saga.coordinator.decide import Incoming, decide
from saga.coordinator.runtime import open_store
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition
from saga.outbox.send_order import Written
from saga.settings import Settings

T = TypeVar("T")


#: How long an action waits, by default, to see the coordinator publish what it decided.
WAIT_S = 5.0


def retry(args: argparse.Namespace) -> int:
    return operate_command(args.saga_id, "retry", None, wait_s=args.wait)


def skip(args: argparse.Namespace) -> int:
    return operate_command(
        args.saga_id, f"skip:{args.step}", args.reason, step=args.step, wait_s=args.wait
    )


def resolve(args: argparse.Namespace) -> int:
    return operate_command(args.saga_id, "resolve", args.reason, wait_s=args.wait)


def cancel(args: argparse.Namespace) -> int:
    return operate_command(args.saga_id, "cancel", args.reason, wait_s=args.wait)


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


async def with_coordinator(work: Callable[[Coordinator], Awaitable[T]]) -> T:
    """Run ``work`` with the coordinator's logic on its database.

    What ``work`` writes to the coordinator's outbox is not published here: the running
    coordinator's relay publishes it, signed with the coordinator's key
    (:func:`wait_published` tells whether it did)."""
    settings = Settings()
    store = open_store(settings)
    await store.start()
    try:
        coordinator = Coordinator(
            loaded_definitions(), store, topic_prefix=settings.topic_prefix, mode=settings.mode
        )
        return await work(coordinator)
    finally:
        await store.stop()


async def wait_published(pool: Any, written: Sequence[Written], wait_s: float) -> int:
    """Wait up to ``wait_s`` for the coordinator to publish ``written``; how many are
    still unsent (0: all went out)."""
    ids = [row.id for row in written]
    deadline = time.monotonic() + wait_s
    while True:
        unsent: int = await pool.fetchval(
            "SELECT count(*) FROM saga_outbox WHERE id = ANY($1::bigint[])"
            " AND sent_at IS NULL AND parked_reason IS NULL",
            ids,
        )
        if not unsent or time.monotonic() >= deadline:
            return unsent
        await asyncio.sleep(0.1)


def publication(written: int, unsent: int) -> str | None:
    """One line on what became of the messages an action queued (``None``: none)."""
    if not written:
        return None
    if not unsent:
        return f"{written} message(s) published by the coordinator"
    return (
        f"queued: {unsent} of {written} message(s) wait in the coordinator's outbox;"
        " the coordinator publishes them, signed, as soon as it runs"
    )


@dataclass(frozen=True)
class Acted:
    """What an operator action on a saga came to."""

    saga_id: str
    #: The saga's status afterwards; ``None``: there is no such saga.
    status: str | None = None
    #: False when the coordinator's logic refused the action (it changed nothing).
    applied: bool = False
    #: What happened, or why nothing did (as in the saga log).
    notes: tuple[str, ...] = ()
    #: The saga's steps (to tell an unknown step from a refused action).
    steps: tuple[str, ...] = ()
    #: Outbox rows the action wrote, and how many the coordinator had not yet published.
    written: int = 0
    unsent: int = 0


async def act(
    coordinator: Coordinator,
    saga_id: str,
    action: str,
    *,
    actor: str,
    reason: str | None,
    wait_s: float = WAIT_S,
) -> Acted:
    """Run an operator ``action`` (``retry``, ``skip:<step>``, ``resolve``, ...) on
    ``saga_id`` through the coordinator's logic; wait up to ``wait_s`` for what it
    sends to be published by the running coordinator."""
    decision, written = await coordinator.operate(saga_id, action, actor=actor, reason=reason)
    if decision is None or decision.state is None:
        return Acted(saga_id)
    unsent = await wait_published(coordinator.pool, written, wait_s) if written else 0
    return Acted(
        saga_id,
        decision.state.status,
        decision.applied,
        tuple(decision.notes),
        tuple(decision.state.steps),
        len(written),
        unsent,
    )


def report(acted: Acted, *, step: str | None = None) -> int:
    """Print what an action came to; its exit status (0 taken, 1 refused, 2 no such
    saga or step). A refusal is one line on stderr."""
    if acted.status is None:
        print(f"saga: error: no saga {acted.saga_id!r}", file=sys.stderr)
        return 2
    if not acted.applied:
        why = "; ".join(acted.notes) or f"nothing to do, saga is {acted.status}"
        print(f"saga: error: {_one_line(why)}", file=sys.stderr)
        return 2 if step is not None and step not in acted.steps else 1
    for note in acted.notes:
        print(note)
    print(f"saga {acted.saga_id}: {acted.status}")
    line = publication(acted.written, acted.unsent)
    if line:
        print(line)
    return 0


def operate_command(
    saga_id: str,
    action: str,
    reason: str | None,
    *,
    step: str | None = None,
    wait_s: float = WAIT_S,
) -> int:
    """A ``saga <action>`` command: act as :func:`operator_name`, report, exit status."""
    actor = operator_name()
    acted = asyncio.run(
        with_coordinator(
            lambda coordinator: act(
                coordinator, saga_id, action, actor=actor, reason=reason, wait_s=wait_s
            )
        )
    )
    return report(acted, step=step)


def seconds(text: str) -> float:
    """How long to wait: 0 to 300 seconds (an ``argparse`` type)."""
    if not re.fullmatch(r"\d{1,3}(\.\d{1,3})?", text.strip()) or float(text) > 300:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0 to 300")
    return float(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())
