"""Operator commands: inspect sagas and act on parked ones (``saga list/show/...``).

Every action is appended to the saga log with the operator's name and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from saga.coordinator.apply import COORDINATOR, Coordinator
from saga.coordinator.decide import Incoming, decide
from saga.coordinator.runtime import load_definitions, open_store
from saga.coordinator.state import SagaState
from saga.coordinator.timeline import render_timeline
from saga.coordinator.timeline import table as _table
from saga.coordinator.timeline import time as _time
from saga.definition.saga import SagaDefinition
from saga.kafka.publisher import Publisher
from saga.outbox.relay import OutboxRelay
from saga.outbox.schema import MIGRATIONS, migrate
from saga.outbox.send_order import Written
from saga.settings import Settings

T = TypeVar("T")


def register(commands: Any) -> None:
    """Add the operator commands to the ``saga`` parser."""
    p = commands.add_parser("coordinator", help="run the saga coordinator")
    p.set_defaults(run=_coordinator)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(required=True, metavar="ACTION")
    db_commands.add_parser("migrate", help="apply pending migrations").set_defaults(run=_migrate)

    definition = commands.add_parser("definition", help="saga definitions")
    def_commands = definition.add_subparsers(required=True, metavar="ACTION")
    show_def = def_commands.add_parser("show", help="print a definition and its diagram")
    show_def.add_argument("name")
    show_def.set_defaults(run=_definition_show)
    def_commands.add_parser("list", help="names of loaded definitions").set_defaults(
        run=_definition_list
    )
    diff = def_commands.add_parser(
        "diff", help="what changed between two definitions: NAME@VERSION or module:attribute"
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(run=_definition_diff)

    ls = commands.add_parser("list", help="list sagas")
    ls.add_argument("--state", help="running, completed, compensating, compensated, parked")
    ls.add_argument("--type", help="saga type")
    ls.add_argument("--older-than", help="age, e.g. 90s, 10m, 2h, 1d")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(run=_list)

    for name, run, text in (
        ("show", _show, "a saga's timeline"),
        ("history", _history, "a saga's raw log"),
        ("retry", _retry, "re-issue a parked saga's failed compensations"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("saga_id")
        sub.set_defaults(run=run)
    skip = commands.add_parser("skip", help="mark a step's compensation as not needed")
    skip.add_argument("saga_id")
    skip.add_argument("step")
    skip.add_argument("--reason", required=True)
    skip.set_defaults(run=_skip)
    resolve = commands.add_parser("resolve", help="close a saga by hand")
    resolve.add_argument("saga_id")
    resolve.add_argument("--reason", required=True)
    resolve.set_defaults(run=_resolve)
    vault = commands.add_parser("vault", help="the connect-token vault")
    vault_commands = vault.add_subparsers(required=True, metavar="ACTION")
    vault_commands.add_parser("new-key", help="print a new key for SAGA_VAULT_KEYS").set_defaults(
        run=_vault_new_key
    )
    vault_commands.add_parser(
        "rotate", help="re-encrypt every connection under SAGA_VAULT_KEY_ID"
    ).set_defaults(run=_vault_rotate)
    revoke = vault_commands.add_parser("revoke", help="withdraw a connection for good")
    revoke.add_argument("handle")
    revoke.set_defaults(run=_vault_revoke)
    dry = commands.add_parser("dry-run", help="which compensations would run if STEP failed now")
    dry.add_argument("saga_id")
    dry.add_argument("--fail", required=True, metavar="STEP")
    dry.set_defaults(run=_dry_run)


# --- commands -------------------------------------------------------------------------


def _coordinator(args: argparse.Namespace) -> int:
    from saga.coordinator.runtime import CoordinatorRuntime
    from saga.shutdown import run_process

    settings = Settings(service_name=COORDINATOR)
    definitions = load_definitions(settings.definitions)

    async def serve() -> None:
        await CoordinatorRuntime(definitions, settings).serve()

    return run_process(serve, settings)


def _vault_new_key(args: argparse.Namespace) -> int:
    from saga.security.vault import VaultKeys

    print(VaultKeys.new_key())
    return 0


def _vault_rotate(args: argparse.Namespace) -> int:
    from saga.security.vault import Vault, VaultKeys

    vault = Vault(VaultKeys.from_env())

    async def run() -> tuple[int, list[str]]:
        connection = await _connect()
        try:
            await migrate(connection, "vault")
            async with connection.transaction():
                return await vault.rotate(connection)
        finally:
            await connection.close()

    rotated, unreadable = asyncio.run(run())
    print(f"re-encrypted {rotated} connection(s) under key {vault.keys.current!r}")
    for handle in unreadable:
        print(f"cannot decrypt {handle} with the known keys: left as it is")
    return 1 if unreadable else 0


def _vault_revoke(args: argparse.Namespace) -> int:
    from saga.security.vault import Vault, VaultKeys

    async def run() -> bool:
        connection = await _connect()
        try:
            return await Vault(VaultKeys.from_env()).revoke(connection, args.handle)
        finally:
            await connection.close()

    if asyncio.run(run()):
        print(f"revoked {args.handle}")
        return 0
    print(f"no active connection {args.handle}")
    return 1


def _migrate(args: argparse.Namespace) -> int:
    async def run() -> None:
        connection = await _connect()
        try:
            for component in MIGRATIONS:
                version = await migrate(connection, component)
                print(f"{component}: schema version {version}")
        finally:
            await connection.close()

    asyncio.run(run())
    return 0


def _definition_show(args: argparse.Namespace) -> int:
    try:
        definition = _definition(args.name)
    except LookupError as missing:
        known = ", ".join(sorted({d.name for d in _definitions()}))
        print(f"{missing.args[0]}; known: {known}")
        return 2
    print(definition.describe())
    print()
    print("```mermaid")
    print(definition.mermaid())
    print("```")
    return 0


def _definition_list(args: argparse.Namespace) -> int:
    for definition in _definitions():
        print(f"{definition.name}@{definition.version}\t{definition.description}")
    return 0


def _list(args: argparse.Namespace) -> int:
    async def run() -> list[asyncpg.Record]:
        connection = await _connect()
        try:
            clauses, params = ["true"], []
            if args.state:
                params.append(args.state)
                clauses.append(f"status = ${len(params)}")
            if args.type:
                params.append(args.type)
                clauses.append(f"saga_type = ${len(params)}")
            if args.older_than:
                params.append(_age(args.older_than))
                clauses.append(f"created_at < now() - ${len(params)}::interval")
            params.append(args.limit)
            # Only fixed clause texts with numbered parameters are joined here.
            query = (
                "SELECT saga_id, saga_type, status, created_at, updated_at,"  # noqa: S608
                " state->>'reason' AS reason FROM saga_instances"
                f" WHERE {' AND '.join(clauses)} ORDER BY created_at DESC"
                f" LIMIT ${len(params)}"
            )
            return list(
                await connection.fetch(
                    query,
                    *params,
                )
            )
        finally:
            await connection.close()

    rows = asyncio.run(run())
    print(
        _table(
            ["SAGA", "TYPE", "STATE", "STARTED", "UPDATED", "REASON"],
            [
                [
                    r["saga_id"],
                    r["saga_type"],
                    r["status"],
                    _time(r["created_at"]),
                    _time(r["updated_at"]),
                    r["reason"] or "",
                ]
                for r in rows
            ],
        )
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    state = asyncio.run(_load(args.saga_id))
    if state is None:
        print(f"no saga {args.saga_id!r}")
        return 2
    definition = _version_of(state)
    print(render_timeline(state, [s.name for s in definition.steps] if definition else ()))
    return 0


def _history(args: argparse.Namespace) -> int:
    async def run() -> list[asyncpg.Record]:
        connection = await _connect()
        try:
            return list(
                await connection.fetch(
                    "SELECT at, kind, type, actor, detail FROM saga_log WHERE saga_id = $1"
                    " ORDER BY id",
                    args.saga_id,
                )
            )
        finally:
            await connection.close()

    rows = asyncio.run(run())
    if not rows:
        print(f"no log for saga {args.saga_id!r}")
        return 2
    lines = []
    for r in rows:
        detail = json.loads(r["detail"])
        summary = "; ".join(detail.get("notes", [])) or json.dumps(detail, sort_keys=True)[:160]
        lines.append([_time(r["at"]), r["kind"], r["type"], r["actor"], summary])
    print(_table(["AT", "KIND", "TYPE", "ACTOR", "DETAIL"], lines))
    return 0


def _retry(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, "retry", None)


def _skip(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, f"skip:{args.step}", args.reason)


def _resolve(args: argparse.Namespace) -> int:
    return _operate(args.saga_id, "resolve", args.reason)


def _dry_run(args: argparse.Namespace) -> int:
    state = asyncio.run(_load(args.saga_id))
    if state is None:
        print(f"no saga {args.saga_id!r}")
        return 2
    definition = _version_of(state)
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


# --- helpers --------------------------------------------------------------------------


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
            _definitions(), store, topic_prefix=settings.topic_prefix, mode=settings.mode
        )
        result, written = await work(coordinator)
        if written:
            async with Publisher(settings) as publisher:
                await OutboxRelay(store, publisher).publish(written)
        return result
    finally:
        await store.stop()


def _definition_diff(args: argparse.Namespace) -> int:
    from saga.definition.diff import diff

    try:
        old, new = _definition(args.old), _definition(args.new)
    except LookupError as missing:
        print(f"saga: error: {missing.args[0]}")
        return 2
    changes = diff(old, new)
    print(f"{old.name}@{old.version} -> {new.name}@{new.version}")
    print("\n".join(changes) if changes else "no change")
    return 0


def _definition(ref: str) -> SagaDefinition:
    """``NAME@VERSION`` among the loaded definitions, or ``module:attribute[@NAME]``."""
    if ":" in ref:
        spec, _, name = ref.partition("@")
        found = load_definitions(spec)
        chosen = [d for d in found if not name or d.name == name]
        if len(chosen) != 1:
            raise LookupError(f"{ref}: {len(chosen)} definitions; name one with @NAME")
        return chosen[0]
    name, _, version = ref.partition("@")
    loaded = [d for d in _definitions() if d.name == name]
    if not loaded:
        raise LookupError(f"no saga definition {name!r} loaded (SAGA_DEFINITIONS)")
    if not version:
        return max(loaded, key=lambda d: d.version)
    for definition in loaded:
        if str(definition.version) == version:
            return definition
    versions = ", ".join(str(d.version) for d in loaded)
    raise LookupError(f"{name} has no version {version} (loaded: {versions})")


def _version_of(state: SagaState) -> SagaDefinition | None:
    """The loaded definition a saga runs on (its version, else the latest)."""
    loaded = [d for d in _definitions() if d.name == state.saga_type]
    same = [d for d in loaded if d.version == state.definition_version]
    if same:
        return same[0]
    return max(loaded, key=lambda d: d.version) if loaded else None


def _definitions() -> list[SagaDefinition]:
    return load_definitions(Settings().definitions)


async def _connect() -> asyncpg.Connection:
    return await asyncpg.connect(Settings().database_url.get_secret_value())


async def _load(saga_id: str) -> SagaState | None:
    connection = await _connect()
    try:
        row = await connection.fetchrow(
            "SELECT state, version FROM saga_instances WHERE saga_id = $1", saga_id
        )
    finally:
        await connection.close()
    if row is None:
        return None
    return SagaState.from_json(json.loads(row["state"]), row["version"])


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise SystemExit(f"saga: error: age {text!r}: use e.g. 90s, 10m, 2h, 1d")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
