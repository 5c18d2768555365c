"""``saga tasks list|approve|reject``: people's decisions in approval steps."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from saga.cli.actions import WAIT_S, publication, wait_published
from saga.cli.operator import operator_name, with_coordinator
from saga.coordinator.apply import Coordinator
from saga.coordinator.tasks import Decided, TaskError, decide_task, list_tasks


def register(commands: Any) -> None:
    tasks = commands.add_parser("tasks", help="approval tasks waiting for people")
    actions = tasks.add_subparsers(required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="open tasks (or --status all)")
    ls.add_argument("--assignee")
    ls.add_argument("--status", default="open", help="open, approved, rejected, cancelled, all")
    ls.add_argument("--json", action="store_true", help="as JSON")
    ls.set_defaults(run=_list)
    for name, run in (("approve", _approve), ("reject", _reject)):
        sub = actions.add_parser(name, help=f"{name} a task (audited with who and when)")
        sub.add_argument("task_id")
        sub.add_argument("--reason", required=name == "reject")
        sub.add_argument("--by", help="who decides (default: SAGA_OPERATOR or your login)")
        sub.set_defaults(run=run)


def _list(args: argparse.Namespace) -> int:
    async def work(coordinator: Coordinator) -> list[dict[str, Any]]:
        status = None if args.status == "all" else args.status
        return await list_tasks(coordinator, status=status, assignee=args.assignee)

    found = asyncio.run(with_coordinator(work))
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    for task in found:
        print(
            f"{task['task_id']}  {task['status']:<9} {task['assignee'] or '-':<12}"
            f" SLA {task['sla_due'] or '-'}  deadline {task['deadline'] or '-'}"
            + (f"  decided by {task['decided_by']}" if task["decided_by"] else "")
        )
    if not found:
        print("no tasks")
    return 0


def _approve(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


def _reject(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    by = args.by or operator_name()

    async def work(coordinator: Coordinator) -> tuple[Decided, int]:
        done = await decide_task(
            coordinator, args.task_id, approve=approve, by=by, reason=args.reason
        )
        # The running coordinator publishes what the decision sends, signed.
        return done, await wait_published(coordinator.pool, done.outbox, WAIT_S)

    try:
        done, unsent = asyncio.run(with_coordinator(work))
    except TaskError as refused:
        print(f"saga: error: {refused}")
        return 2
    for note in done.notes:
        print(note)
    print(f"task {done.task_id} {done.decision} by {by}; saga {done.saga_id}: {done.saga_status}")
    line = publication(len(done.outbox), unsent)
    if line:
        print(line)
    return 0
