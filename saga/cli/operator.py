"""Operator commands: inspect sagas and act on parked ones (``saga list/show/...``).

Every action is appended to the saga log with the operator's name and reason.

Here the commands are registered, with ``saga coordinator`` and ``saga db``;
they live by group: :mod:`saga.cli.sagas` (list, show, history),
:mod:`saga.cli.actions` (retry, skip, resolve, cancel, dry-run),
:mod:`saga.cli.definitions` (definition list/show/diff),
:mod:`saga.cli.vault` (vault new-key/rotate/revoke), :mod:`saga.cli.purge` (purge)
and :mod:`saga.cli.console` (console, bulk, dead-letters list/redrive).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from saga.cli.actions import (
    WAIT_S,
    cancel,
    dry_run,
    operator_name,
    resolve,
    retry,
    seconds,
    simulate_failure,
    skip,
    with_coordinator,
)
from saga.cli.database import connect
from saga.cli.definitions import diff_definitions, list_definitions, show_definition
from saga.cli.sagas import age, limit, list_sagas, saga_history, show_saga
from saga.cli.vault import new_key, revoke_connection, rotate_keys
from saga.coordinator.apply import COORDINATOR
from saga.coordinator.runtime import load_definitions
from saga.outbox.schema import MIGRATIONS, migrate
from saga.settings import Settings

__all__ = [
    "action_parser",
    "operator_name",
    "register",
    "simulate_failure",
    "with_coordinator",
]


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
    show_def.set_defaults(run=show_definition)
    def_commands.add_parser("list", help="names of loaded definitions").set_defaults(
        run=list_definitions
    )
    diff = def_commands.add_parser(
        "diff", help="what changed between two definitions: NAME@VERSION or module:attribute"
    )
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(run=diff_definitions)

    ls = commands.add_parser("list", help="list sagas")
    ls.add_argument("--state", help="running, completed, compensating, compensated, parked")
    ls.add_argument("--type", help="saga type")
    ls.add_argument("--older-than", type=age, help="age, e.g. 90s, 10m, 2h, 1d")
    ls.add_argument("--limit", type=limit, default=50, help="rows, 1 to 100000 (50)")
    ls.set_defaults(run=list_sagas)

    for name, run, text in (
        ("show", show_saga, "a saga's timeline"),
        ("history", saga_history, "a saga's raw log"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("saga_id")
        sub.set_defaults(run=run)
    retry_parser = action_parser(
        commands, "retry", "re-issue a parked saga's failed compensations", reason=False
    )
    retry_parser.set_defaults(run=retry)
    skip_parser = action_parser(commands, "skip", "mark a step's compensation as not needed")
    skip_parser.add_argument("step")
    skip_parser.set_defaults(run=skip)
    action_parser(commands, "resolve", "close a saga by hand").set_defaults(run=resolve)
    action_parser(
        commands, "cancel", "compensate a running saga (refused once its pivot started)"
    ).set_defaults(run=cancel)
    vault = commands.add_parser("vault", help="the connect-token vault")
    vault_commands = vault.add_subparsers(required=True, metavar="ACTION")
    vault_commands.add_parser("new-key", help="print a new key for SAGA_VAULT_KEYS").set_defaults(
        run=new_key
    )
    vault_commands.add_parser(
        "rotate", help="re-encrypt every connection under SAGA_VAULT_KEY_ID"
    ).set_defaults(run=rotate_keys)
    revoke = vault_commands.add_parser("revoke", help="withdraw a connection for good")
    revoke.add_argument("handle")
    revoke.set_defaults(run=revoke_connection)
    dry = commands.add_parser("dry-run", help="which compensations would run if STEP failed now")
    dry.add_argument("saga_id")
    dry.add_argument("--fail", required=True, metavar="STEP")
    dry.set_defaults(run=dry_run)

    from saga.cli import console as console_cli
    from saga.cli import purge as purge_cli

    console_cli.register(commands)
    purge_cli.register(commands)


def action_parser(
    commands: Any, name: str, text: str, *, reason: bool = True
) -> argparse.ArgumentParser:
    """The parser of an operator action on one saga: its id, ``--reason`` (required
    unless ``reason`` is False) and ``--wait``."""
    sub: argparse.ArgumentParser = commands.add_parser(name, help=text)
    sub.add_argument("saga_id")
    if reason:
        sub.add_argument("--reason", required=True, help="why (kept in the saga log)")
    sub.add_argument(
        "--wait",
        type=seconds,
        default=WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the coordinator to publish what it decided ({WAIT_S:g})",
    )
    return sub


def _coordinator(args: argparse.Namespace) -> int:
    from saga.coordinator.runtime import CoordinatorRuntime
    from saga.shutdown import run_process

    settings = Settings(service_name=COORDINATOR)
    definitions = load_definitions(settings.definitions)

    async def serve() -> None:
        await CoordinatorRuntime(definitions, settings).serve()

    return run_process(serve, settings)


def _migrate(args: argparse.Namespace) -> int:
    async def run() -> None:
        connection = await connect()
        try:
            for component in MIGRATIONS:
                version = await migrate(connection, component)
                print(f"{component}: schema version {version}")
        finally:
            await connection.close()

    asyncio.run(run())
    return 0
