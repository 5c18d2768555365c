"""``saga console``, ``saga bulk`` and ``saga dead-letters list|redrive``.

``saga console`` serves the saga console (:mod:`saga.console`) on
``SAGA_CONSOLE_HOST``:``SAGA_CONSOLE_PORT``. ``saga bulk ACTION`` acts on every saga
a filter finds, as the console's bulk action does: ``--dry-run`` says how many and
which, ``--yes`` acts. ``saga dead-letters`` lists dead letters per topic and
redrives them to their original topic, audited with ``SAGA_OPERATOR`` (or the login).

Exit status: 0 done; 1 refused (nothing matched, a dead letter that cannot go back);
2 bad arguments (no such dead letter).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from saga.cli.actions import operator_name, with_coordinator
from saga.cli.definitions import loaded_definitions
from saga.cli.sagas import age
from saga.console import dead_letters, operations, queries
from saga.console.queries import SagaFilter
from saga.coordinator.apply import Coordinator
from saga.coordinator.timeline import table
from saga.coordinator.timeline import time as shown_time
from saga.settings import Settings


def register(commands: Any) -> None:
    """Add ``console``, ``bulk`` and ``dead-letters`` to the ``saga`` parser."""
    commands.add_parser(
        "console", help="serve the saga console on SAGA_CONSOLE_HOST:SAGA_CONSOLE_PORT"
    ).set_defaults(run=_console)

    bulk = commands.add_parser(
        "bulk", help="retry, skip, resolve or cancel every saga a filter finds"
    )
    bulk.add_argument("action", choices=list(operations.ACTIONS))
    bulk.add_argument("--state", help="running, compensating, parked, ...")
    bulk.add_argument("--type", help="saga type")
    bulk.add_argument("--step", help="the step the sagas are at (skip: the step to skip)")
    bulk.add_argument("--error-type", help="the type of a step's error, e.g. StepTimeout")
    bulk.add_argument("--key", help="a business key: VALUE or FIELD=VALUE")
    bulk.add_argument("--older-than", type=age, help="age, e.g. 90s, 10m, 2h, 1d")
    bulk.add_argument("--reason", help="why (kept in the saga log; required but for retry)")
    how = bulk.add_mutually_exclusive_group(required=True)
    how.add_argument("--dry-run", action="store_true", help="say which sagas, change nothing")
    how.add_argument("--yes", action="store_true", help="act")
    bulk.add_argument(
        "--expect",
        type=int,
        metavar="N",
        help="with --yes: act only if the filter still finds N sagas (what --dry-run said)",
    )
    bulk.set_defaults(run=_bulk)

    letters = commands.add_parser("dead-letters", help="dead letters per topic; redrive them")
    actions = letters.add_subparsers(required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="dead letters with their reasons")
    ls.add_argument("--topic", help="one dead-letter topic (default: all)")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(run=_list_letters)
    again = actions.add_parser("redrive", help="publish dead letters to their original topic")
    again.add_argument("ids", nargs="*", metavar="TOPIC:PARTITION:OFFSET")
    again.add_argument("--topic", help="every dead letter of this topic (with --all)")
    again.add_argument("--error-type", help="with --topic: only those of this error type")
    again.add_argument("--all", action="store_true", help="with --topic: every one of them")
    again.set_defaults(run=_redrive)


def _console(args: argparse.Namespace) -> int:
    from saga.console.app import serve

    settings = Settings()
    definitions = loaded_definitions()
    print(f"saga console on http://{settings.console_host}:{settings.console_port}", flush=True)
    serve(settings, definitions)
    return 0


def _filter(args: argparse.Namespace) -> SagaFilter:
    return SagaFilter(
        state=args.state,
        saga_type=args.type,
        step=args.step,
        error_type=args.error_type,
        key=args.key,
        older_than=args.older_than,
    )


def _bulk(args: argparse.Namespace) -> int:
    wanted = _filter(args)
    try:
        operations.action_name(args.action, args.step)
        operations.check_reason(args.action, args.reason)
    except operations.Refused as refused:
        print(f"saga: error: {refused}", file=sys.stderr)
        return 2
    actor = operator_name()

    async def work(coordinator: Coordinator) -> tuple[list[str], operations.BulkResult | None]:
        fields = queries.search_fields(coordinator.definitions.values())
        async with coordinator.pool.acquire() as connection:
            ids = await queries.matching_ids(connection, wanted, fields)
        if args.dry_run or not ids:
            return ids, None
        return ids, await operations.act_in_bulk(
            coordinator,
            wanted,
            args.action,
            actor=actor,
            step=args.step,
            reason=args.reason,
            expected=args.expect,
        )

    try:
        ids, done = asyncio.run(with_coordinator(work))
    except operations.Refused as refused:
        print(f"saga: error: {refused}", file=sys.stderr)
        return 1
    print(f"{len(ids)} saga(s) match {wanted.describe()}")
    if done is None:
        for saga_id in ids:
            print(f"  {saga_id}")
        if not ids:
            return 1
        if args.dry_run:
            print(f"dry run: nothing changed; --yes to {args.action} them")
        return 0
    for saga_id in done.applied:
        print(f"{args.action}: {saga_id}")
    for saga_id, why in done.refused:
        print(f"refused: {saga_id}: {' '.join(why.split())}")
    print(f"{len(done.applied)} acted on, {len(done.refused)} refused, by {actor}")
    return 0


def _list_letters(args: argparse.Namespace) -> int:
    settings = Settings()
    found = asyncio.run(dead_letters.read_letters(settings, [args.topic] if args.topic else None))
    if args.json:
        out = {
            topic: [
                {
                    "id": x.id,
                    "at": x.at.isoformat() if x.at else None,
                    "error_type": x.error_type,
                    "reason": x.reason,
                    "group": x.group,
                    "from": x.original,
                    "saga_id": x.saga_id,
                }
                for x in letters
            ]
            for topic, letters in found.items()
        }
        print(json.dumps(out, indent=2))
        return 0
    if not found:
        print("no dead-letter topics")
    for topic, letters in found.items():
        print(f"{topic}: {len(letters)}")
        rows = [
            [x.id, shown_time(x.at), x.error_type, x.group, x.original, x.reason[:120]]
            for x in letters
        ]
        if rows:
            print(table(["DEAD LETTER", "AT", "ERROR TYPE", "GROUP", "FROM", "REASON"], rows))
    return 0


def _redrive(args: argparse.Namespace) -> int:
    settings = Settings()
    if bool(args.ids) == bool(args.topic):
        print("saga: error: name dead letters, or --topic T --all", file=sys.stderr)
        return 2
    if args.topic and not args.all:
        print("saga: error: --topic redrives every dead letter of it: add --all", file=sys.stderr)
        return 2
    actor = operator_name()

    async def run() -> list[str]:
        if args.topic:
            found = (await dead_letters.read_letters(settings, [args.topic])).get(args.topic, [])
            chosen = [x for x in found if not args.error_type or x.error_type == args.error_type]
        else:
            chosen = await dead_letters.find_letters(settings, args.ids)

        async def send(coordinator: Coordinator) -> list[str]:
            return await operations.redrive(settings, coordinator.pool, chosen, actor=actor)

        return await with_coordinator(send)

    try:
        done = asyncio.run(run())
    except LookupError as missing:
        print(f"saga: error: {missing.args[0]}", file=sys.stderr)
        return 2
    except ValueError as refused:
        print(f"saga: error: {refused}", file=sys.stderr)
        return 1
    for letter_id in done:
        print(f"redriven: {letter_id}")
    print(f"{len(done)} dead letter(s) redriven by {actor}")
    return 0 if done else 1
