"""Approval tasks: list them, approve or reject one (for the CLI and the HTTP endpoint).

A decision is an operator fact for the saga (``approve:<step>`` or
``reject:<step>``), decided and audited like any other: the saga log records
who and when, and the task row keeps its history (opened, escalated, decided).

HTTP, on the coordinator's health port, with a bearer token (:mod:`saga.security.auth`)::

    GET  /tasks?status=open&assignee=alice      role viewer
    POST /tasks/{task_id}/approve   {"reason": "ok"}              role approver
    POST /tasks/{task_id}/reject    {"reason": "too expensive"}   role approver

The decider is the token's subject, who must be the task's current assignee (403
otherwise); a ``by`` in the body is refused. (A task id holds a ``/``: send it
URL-encoded, ``%2F``.) The CLI's ``saga tasks approve --by`` is the operators' path,
through the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from saga.coordinator import store
from saga.coordinator.apply import Coordinator
from saga.coordinator.state import SagaState
from saga.errors import SagaError
from saga.outbox.send_order import Written
from saga.participant.routes import BadRequest, HttpRequest, parse_json
from saga.security.auth import Forbidden, Principal


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
    coordinator: Coordinator,
    task_id: str,
    *,
    approve: bool,
    by: str,
    reason: str | None,
    assignee_only: bool = False,
) -> Decided:
    """Approve or reject ``task_id`` as ``by``; the outbox rows are for the caller to publish.

    ``assignee_only``: :class:`~saga.security.auth.Forbidden` unless ``by`` is the task's
    current assignee (the HTTP path; an operator's CLI decides for anyone).
    """
    async with coordinator.pool.acquire() as connection:
        task = await store.find_task(connection, task_id)
    if task is None:
        raise TaskError(f"no task {task_id!r}", 404)
    if task["status"] != "open":
        raise TaskError(f"task {task_id} is {task['status']} already", 409)
    refused = Forbidden(f"task {task_id} is assigned to someone else, not to {by}")
    if assignee_only and task["assignee"] != by:
        raise refused

    def still_assigned(state: SagaState) -> None:
        # Again on the locked saga: an escalation decided meanwhile moved the task on.
        step = state.steps.get(task["step"])
        if step is not None and step.status == "running" and step.assignee != by:
            raise refused

    action = f"{'approve' if approve else 'reject'}:{task['step']}"
    decision, ids = await coordinator.operate(
        task["saga_id"],
        action,
        actor=by,
        reason=reason,
        precondition=still_assigned if assignee_only else None,
    )
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


async def listing(coordinator: Coordinator, request: HttpRequest) -> tuple[int, Any]:
    """``GET /tasks?status=open&assignee=alice`` (``status=all``: every status)."""
    status = request.query.get("status", "open")
    found = await list_tasks(
        coordinator,
        status=None if status == "all" else status,
        assignee=request.query.get("assignee"),
    )
    return 200, found


async def decide(
    coordinator: Coordinator, request: HttpRequest, principal: Principal, *, approve: bool
) -> tuple[int, Any, list[Written]]:
    """``POST /tasks/{task_id}/approve|reject`` by the caller: (status, body, outbox rows)."""
    body = parse_json(request.body)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest('the body is a JSON object: {"reason": "..."}')
    if "by" in body:
        raise BadRequest("the decider is the caller (the bearer token's subject): send no 'by'")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be text")
    try:
        done = await decide_task(
            coordinator,
            request.params["task_id"],
            approve=approve,
            by=principal.subject,
            reason=reason,
            assignee_only=True,
        )
    except TaskError as refused:
        return refused.status, {"error": str(refused)}, []
    return (
        200,
        {
            "task_id": done.task_id,
            "saga_id": done.saga_id,
            "decision": done.decision,
            "decided_by": principal.subject,
            "saga_status": done.saga_status,
        },
        done.outbox,
    )
