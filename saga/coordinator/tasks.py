"""Approval tasks: list them, approve or reject one (for the CLI and the HTTP endpoint).

A decision is an operator fact for the saga (``approve:<step>`` or
``reject:<step>``), decided and audited like any other: the saga log records
who and when, and the task row keeps its history (opened, escalated, decided).

HTTP, on the coordinator's health port::

    GET  /tasks?status=open&assignee=alice
    POST /tasks/{task_id}/approve   {"by": "alice", "reason": "ok"}
    POST /tasks/{task_id}/reject    {"by": "alice", "reason": "too expensive"}

(a task id holds a ``/``: send it URL-encoded, ``%2F``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from saga.coordinator import store
from saga.coordinator.apply import Coordinator
from saga.errors import SagaError
from saga.outbox.send_order import Written
from saga.participant.routes import match_path


class TaskError(SagaError):
    """No such task, or it is decided already; ``status`` is the HTTP answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decided:
    task_id: str
    saga_id: str
    decision: str
    saga_status: str
    notes: list[str]
    outbox: list[Written]


async def list_tasks(
    coordinator: Coordinator, *, status: str | None = "open", assignee: str | None = None
) -> list[dict[str, Any]]:
    async with coordinator.pool.acquire() as connection:
        rows = await store.list_tasks(connection, status=status, assignee=assignee)
    return [_json(row) for row in rows]


async def decide_task(
    coordinator: Coordinator, task_id: str, *, approve: bool, by: str, reason: str | None
) -> Decided:
    """Approve or reject ``task_id`` as ``by``; the outbox rows are for the caller to publish."""
    async with coordinator.pool.acquire() as connection:
        task = await store.find_task(connection, task_id)
    if task is None:
        raise TaskError(f"no task {task_id!r}", 404)
    if task["status"] != "open":
        raise TaskError(f"task {task_id} is {task['status']} already", 409)
    action = f"{'approve' if approve else 'reject'}:{task['step']}"
    decision, ids = await coordinator.operate(task["saga_id"], action, actor=by, reason=reason)
    if decision is None or decision.state is None:
        raise TaskError(f"saga {task['saga_id']} of task {task_id} is gone", 404)
    if not decision.applied:  # decided a moment ago by someone (or something) else
        raise TaskError(f"task {task_id} was decided already", 409)
    return Decided(
        task_id,
        task["saga_id"],
        "approved" if approve else "rejected",
        decision.state.status,
        decision.notes,
        ids,
    )


def _json(row: dict[str, Any]) -> dict[str, Any]:
    """A task row as JSON: times as ISO text, the history decoded."""
    out = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
    if isinstance(out.get("history"), str):
        out["history"] = json.loads(out["history"])
    return out


async def answer(
    coordinator: Coordinator, method: str, target: str, body: bytes
) -> tuple[int, Any, list[Written]]:
    """Answer a tasks request: (status, body, outbox rows to publish)."""
    path, _, query = target.partition("?")
    if method == "GET" and match_path("/tasks", path) is not None:
        wanted = dict(parse_qsl(query))
        status = wanted.get("status", "open")
        found = await list_tasks(
            coordinator, status=None if status == "all" else status, assignee=wanted.get("assignee")
        )
        return 200, found, []
    for action, approve in (("approve", True), ("reject", False)):
        params = match_path(f"/tasks/{{task_id}}/{action}", path)
        if method != "POST" or params is None:
            continue
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return 400, {"error": "body is not JSON"}, []
        by = request.get("by") if isinstance(request, dict) else None
        reason = request.get("reason") if isinstance(request, dict) else None
        if not isinstance(by, str) or not by.strip():
            return 400, {"error": 'say who decides: {"by": "name"}'}, []
        if reason is not None and not isinstance(reason, str):
            return 400, {"error": "reason must be text"}, []
        try:
            done = await decide_task(
                coordinator, unquote(params["task_id"]), approve=approve, by=by, reason=reason
            )
        except TaskError as refused:
            return refused.status, {"error": str(refused)}, []
        return (
            200,
            {
                "task_id": done.task_id,
                "saga_id": done.saga_id,
                "decision": done.decision,
                "saga_status": done.saga_status,
            },
            done.outbox,
        )
    return 404, {"error": f"no route for {path}"}, []
