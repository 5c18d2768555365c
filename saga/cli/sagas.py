"""``saga list|show|history``: what sagas there are and what happened to one."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from datetime import timedelta

import asyncpg

from saga.cli.database import connect, load_saga
from saga.cli.definitions import definition_of
from saga.coordinator.timeline import render_timeline
from saga.coordinator.timeline import table as _table
from saga.coordinator.timeline import time as _time


def list_sagas(args: argparse.Namespace) -> int:
    async def run() -> list[asyncpg.Record]:
        connection = await connect()
        try:
            clauses, params = ["true"], []
            if args.state:
                params.append(args.state)
                clauses.append(f"status = ${len(params)}")
            if args.type:
                params.append(args.type)
                clauses.append(f"saga_type = ${len(params)}")
            if args.older_than:
                params.append(args.older_than)
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


def show_saga(args: argparse.Namespace) -> int:
    state = asyncio.run(load_saga(args.saga_id))
    if state is None:
        print(f"no saga {args.saga_id!r}")
        return 2
    definition = definition_of(state)
    print(render_timeline(state, [s.name for s in definition.steps] if definition else ()))
    return 0


def saga_history(args: argparse.Namespace) -> int:
    async def run() -> list[asyncpg.Record]:
        connection = await connect()
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


_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


#: No saga is older than this: a longer age is a typo, not a filter.
_OLDEST = timedelta(days=3660)


def age(text: str) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``1d`` as a duration (an ``argparse`` type: a bad one is
    a one-line usage error)."""
    match = re.fullmatch(r"(\d{1,9})([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use e.g. 90s, 10m, 2h, 1d")
    found = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if found > _OLDEST:
        raise argparse.ArgumentTypeError(f"{text!r}: longer than ten years")
    return found


def limit(text: str) -> int:
    """How many rows to show: 1 to 100,000 (an ``argparse`` type)."""
    if not re.fullmatch(r"\d{1,6}", text.strip()) or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 1 to 100000")
    return int(text)
