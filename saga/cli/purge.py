"""``saga purge --older-than AGE``: delete finished sagas now, as the coordinator's
retention does on its own (:mod:`saga.coordinator.retention`).

``--dry-run`` says how many sagas of which status would go; ``--yes`` deletes them,
in batches, with their log, timers and tasks, and records who did it in
``saga_audit``. ``--status`` (repeatable) narrows it to some of the finished
statuses: completed, compensated, resolved. Running, compensating and parked sagas
are never purged.

Exit status: 0 done (also when no saga was old enough); 1 refused (neither
``--dry-run`` nor ``--yes``); 2 bad arguments (a status that is not a finished one).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import Any

from saga.cli.actions import operator_name
from saga.cli.database import connect
from saga.cli.sagas import age
from saga.console.queries import audit
from saga.coordinator.retention import not_finished, prunable, prune_sagas
from saga.coordinator.state import FINISHED


def register(commands: Any) -> None:
    """Add ``purge`` to the ``saga`` parser."""
    purge = commands.add_parser(
        "purge", help="delete finished sagas older than AGE (--dry-run counts them)"
    )
    purge.add_argument(
        "--older-than",
        type=age,
        required=True,
        metavar="AGE",
        help="finished this long ago: 90s, 10m, 2h, 7d",
    )
    purge.add_argument(
        "--status",
        action="append",
        metavar="STATUS",
        help=f"only these ({', '.join(sorted(FINISHED))}); repeatable; default: all of them",
    )
    how = purge.add_mutually_exclusive_group()
    how.add_argument("--dry-run", action="store_true", help="count them, delete nothing")
    how.add_argument("--yes", action="store_true", help="delete them")
    purge.set_defaults(run=_purge)


def age_text(older: timedelta) -> str:
    """``timedelta(days=7)`` as ``7d``: an age as the command takes it."""
    seconds = int(older.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _counts(found: dict[str, int]) -> str:
    total = sum(found.values())
    each = ", ".join(f"{n} {status}" for status, n in found.items() if n)
    return f"{total} saga(s)" + (f" ({each})" if each else "")


def _purge(args: argparse.Namespace) -> int:
    statuses = sorted(set(args.status or FINISHED))
    wrong = not_finished(statuses)
    if wrong:
        print(
            f"saga: error: {', '.join(wrong)}: not a finished saga's status; only"
            f" {', '.join(sorted(FINISHED))} sagas are purged",
            file=sys.stderr,
        )
        return 2
    if not (args.dry_run or args.yes):
        print(
            "saga: error: purge deletes sagas for good: --dry-run to count them, --yes to"
            " delete them",
            file=sys.stderr,
        )
        return 1
    older: timedelta = args.older_than
    older_than = dict.fromkeys(statuses, older)
    shown = age_text(older)
    actor = operator_name()

    async def run() -> dict[str, int]:
        connection = await connect()
        try:
            if args.dry_run:
                return await prunable(connection, older_than)
            # Each batch commits on its own: an interrupted purge keeps what it did.
            purged = await prune_sagas(connection, older_than)
            await audit(
                connection,
                actor,
                "purge",
                f"sagas {', '.join(statuses)} finished more than {shown} ago",
                {"older_than": shown, "statuses": statuses, "purged": purged},
            )
            return purged
        finally:
            await connection.close()

    found = asyncio.run(run())
    where = f"{', '.join(statuses)}, finished more than {shown} ago"
    if args.dry_run:
        print(f"{_counts(found)} to purge: {where}")
        print("dry run: nothing deleted; --yes to delete them")
    else:
        print(f"purged {_counts(found)}: {where}, by {actor}")
    return 0
