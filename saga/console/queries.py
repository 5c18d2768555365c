"""Sagas and tasks as the console and the CLI list them, read from the coordinator's tables.

A filter becomes one SQL ``WHERE`` (:func:`where`); rows become views by pure
functions (:func:`saga_view`, :func:`timeline`). Business keys (a definition's
``search`` fields) are read from the saga's stored state at query time: the values
of the start event are in its steps' data. That is a scan of ``saga_instances``
with a JSON test per row, fast enough for hundreds of thousands of sagas; the
states and types are filtered first by the index on ``status``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from saga.coordinator.state import SagaState, StepState
from saga.definition.saga import SagaDefinition

#: Step states in which a step is where the saga is (what "at step X" means).
ACTIVE = ("running", "failed", "timed_out", "compensating", "compensation_failed")
STATES = ("running", "compensating", "parked", "completed", "compensated", "resolved")


@dataclass(frozen=True)
class SagaFilter:
    """Which sagas: every field narrows (``None``: any)."""

    state: str | None = None
    saga_type: str | None = None
    #: The step the saga is at (running, failed, compensating or parked there).
    step: str | None = None
    #: The type of a step's error (``PaymentDeclined``, ``StepTimeout`` ...).
    error_type: str | None = None
    #: A business key: ``value`` (any searchable field) or ``field=value``.
    key: str | None = None
    older_than: timedelta | None = None
    limit: int = 100

    @classmethod
    def of(cls, query: Mapping[str, str], *, limit: int = 100) -> SagaFilter:
        """From the console's query string (``state``, ``type``, ``step``, ``error``,
        ``key``, ``older_than`` in minutes); empty values are no filter."""
        from saga.cli.sagas import age

        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value[:200] or None

        older = text("older_than")
        try:
            older_than = age(older if older[-1:].isalpha() else f"{older}m") if older else None
        except argparse.ArgumentTypeError as bad:
            raise ValueError(f"older than: {bad}") from None
        return cls(
            state=text("state"),
            saga_type=text("type"),
            step=text("step"),
            error_type=text("error"),
            key=text("key"),
            older_than=older_than,
            limit=limit,
        )

    def query(self) -> dict[str, str]:
        """The console's query string of this filter."""
        pairs = {
            "state": self.state,
            "type": self.saga_type,
            "step": self.step,
            "error": self.error_type,
            "key": self.key,
            "older_than": f"{int(self.older_than.total_seconds())}s" if self.older_than else None,
        }
        return {k: v for k, v in pairs.items() if v}

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.query().items()) or "every saga"


def search_fields(definitions: Iterable[SagaDefinition], saga_type: str | None = None) -> list[str]:
    """The searchable fields of the definitions (of ``saga_type`` only, if given)."""
    found: list[str] = []
    for definition in definitions:
        if saga_type is None or definition.name == saga_type:
            found += [f for f in definition.search if f not in found]
    return found


def where(wanted: SagaFilter, fields: Sequence[str]) -> tuple[str, list[Any]]:
    """The SQL condition on ``saga_instances`` for ``wanted``, and its parameters."""
    clauses, params = ["true"], list[Any]()

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if wanted.state:
        clauses.append(f"status = {param(wanted.state)}")
    if wanted.saga_type:
        clauses.append(f"saga_type = {param(wanted.saga_type)}")
    if wanted.older_than:
        clauses.append(f"created_at < now() - {param(wanted.older_than)}::interval")
    if wanted.step:
        clauses.append(
            f"state->'steps'->{param(wanted.step)}->>'status' = ANY({param(list(ACTIVE))})"
        )
    if wanted.error_type:
        clauses.append(
            "EXISTS (SELECT 1 FROM jsonb_each(state->'steps') s"  # noqa: S608 - numbered params
            f" WHERE split_part(s.value->>'error', ':', 1) = {param(wanted.error_type)})"
        )
    if wanted.key:
        name, eq, value = wanted.key.partition("=")
        names = [name.strip()] if eq and name.strip() in fields else list(fields)
        value = value.strip() if eq and name.strip() in fields else wanted.key
        clauses.append(
            "EXISTS (SELECT 1 FROM jsonb_each(state->'steps') s,"  # noqa: S608 - numbered params
            f" unnest({param(names)}::text[]) f(name)"
            f" WHERE s.value->'data'->>f.name = {param(value)})"
        )
    return " AND ".join(clauses), params


async def find_sagas(connection: Any, wanted: SagaFilter, fields: Sequence[str]) -> list[Any]:
    """The newest sagas that match, at most ``wanted.limit``."""
    condition, params = where(wanted, fields)
    # Only fixed clause texts with numbered parameters are joined here.
    return list(
        await connection.fetch(
            "SELECT saga_id, saga_type, status, version, state, created_at, updated_at"  # noqa: S608
            f" FROM saga_instances WHERE {condition}"
            f" ORDER BY created_at DESC LIMIT {int(wanted.limit)}",
            *params,
        )
    )


async def matching_ids(connection: Any, wanted: SagaFilter, fields: Sequence[str]) -> list[str]:
    """Every saga id that matches (no limit: what a bulk action touches)."""
    condition, params = where(wanted, fields)
    rows = await connection.fetch(
        f"SELECT saga_id FROM saga_instances WHERE {condition} ORDER BY created_at",  # noqa: S608
        *params,
    )
    return [r["saga_id"] for r in rows]


async def count_sagas(
    connection: Any, wanted: SagaFilter, fields: Sequence[str]
) -> dict[str, dict[str, int]]:
    """How many sagas match, by state and by type (``{"state": {...}, "type": {...}}``)."""
    condition, params = where(wanted, fields)
    rows = await connection.fetch(
        "SELECT status, saga_type, count(*) AS n"  # noqa: S608
        f" FROM saga_instances WHERE {condition} GROUP BY status, saga_type",
        *params,
    )
    counts: dict[str, dict[str, int]] = {"state": {}, "type": {}}
    for r in rows:
        counts["state"][r["status"]] = counts["state"].get(r["status"], 0) + r["n"]
        counts["type"][r["saga_type"]] = counts["type"].get(r["saga_type"], 0) + r["n"]
    return counts


def state_of(row: Mapping[str, Any]) -> SagaState:
    raw = row["state"]
    return SagaState.from_json(json.loads(raw) if isinstance(raw, str) else raw, row["version"])


def current_step(state: SagaState, order: Sequence[str] = ()) -> str | None:
    """The step the saga is at: parked or failing there first, else running."""
    names = [n for n in order if n in state.steps] + [n for n in state.steps if n not in order]
    for wanted in (("compensation_failed",), ("failed", "timed_out", "compensating"), ACTIVE):
        for name in names:
            if state.steps[name].status in wanted:
                return name
    return None


def error_type(step: StepState) -> str | None:
    """``PaymentDeclined`` of ``PaymentDeclined: card over its limit`` (``None``: the
    error names no type)."""
    if not step.error or ":" not in step.error:
        return None
    name = step.error.split(":", 1)[0].strip()
    return name if re.fullmatch(r"[A-Za-z_][\w.]*", name) else None


def business_keys(state: SagaState, fields: Sequence[str]) -> dict[str, str]:
    """The values of the searchable ``fields`` in the saga's stored data."""
    found: dict[str, str] = {}
    for step in state.steps.values():
        for name in fields:
            value = step.data.get(name)
            if name not in found and isinstance(value, str | int) and not isinstance(value, bool):
                found[name] = str(value)
    return found


def trace_id(state: SagaState) -> str | None:
    """The saga's trace id, from the traceparent it was started with."""
    parts = (state.traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def trace_url(template: str | None, state: SagaState) -> str | None:
    """``template`` (``SAGA_TRACE_URL_TEMPLATE``) with the saga's trace id."""
    found = trace_id(state)
    return template.replace("{trace_id}", found) if template and found else None


@dataclass(frozen=True)
class SagaView:
    """A saga as a row of the list."""

    saga_id: str
    saga_type: str
    status: str
    started_at: datetime
    updated_at: datetime
    step: str | None
    error: str | None
    error_type: str | None
    keys: dict[str, str] = field(default_factory=dict)
    reason: str | None = None


def saga_view(row: Mapping[str, Any], definition: SagaDefinition | None) -> SagaView:
    """A row of ``saga_instances`` as the list shows it."""
    state = state_of(row)
    order = [s.name for s in definition.steps] if definition else []
    at = current_step(state, order)
    error = state.steps[at].error if at else None
    return SagaView(
        saga_id=state.saga_id,
        saga_type=state.saga_type,
        status=state.status,
        started_at=row["created_at"],
        updated_at=row["updated_at"],
        step=at,
        error=error,
        error_type=error_type(state.steps[at]) if at else None,
        keys=business_keys(state, definition.search if definition else ()),
        reason=state.reason,
    )


@dataclass(frozen=True)
class StepLine:
    """One step of a saga's timeline."""

    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    attempts: int
    error: str | None
    compensation: str


def timeline(state: SagaState, order: Sequence[str] = ()) -> list[StepLine]:
    """The saga's steps in ``order`` with their times, durations, attempts and errors."""
    names = [n for n in order if n in state.steps] + [n for n in state.steps if n not in order]
    lines = []
    for name in names:
        step = state.steps[name]
        if step.compensated_at:
            compensation = f"compensated {step.compensated_at:%H:%M:%S}"
        elif step.compensation_attempts:
            compensation = f"{step.compensation_attempts} sent"
        else:
            compensation = ""
        lines.append(
            StepLine(
                name=name,
                status=step.status,
                started_at=step.started_at,
                finished_at=step.finished_at,
                duration_s=(step.finished_at - step.started_at).total_seconds()
                if step.started_at and step.finished_at
                else None,
                attempts=step.attempt,
                error=step.error,
                compensation=compensation,
            )
        )
    return lines


async def history(connection: Any, saga_id: str) -> list[dict[str, Any]]:
    """The saga's raw log, oldest first."""
    rows = await connection.fetch(
        "SELECT at, kind, type, actor, detail FROM saga_log WHERE saga_id = $1 ORDER BY id",
        saga_id,
    )
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


async def audit(
    connection: Any, actor: str, action: str, target: str, detail: Mapping[str, Any]
) -> None:
    """Record what ``actor`` did in ``saga_audit``."""
    await connection.execute(
        "INSERT INTO saga_audit (actor, action, target, detail) VALUES ($1, $2, $3, $4)",
        actor,
        action,
        target,
        json.dumps(dict(detail), default=str),
    )


async def recent_audit(connection: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The newest actions: redrives and bulk actions, and the operators' entries of the
    saga log (retry, skip, resolve, cancel, task decisions)."""
    rows = await connection.fetch(
        "(SELECT at, actor, action, target, detail FROM saga_audit)"
        " UNION ALL (SELECT at, actor, type, saga_id, detail FROM saga_log"
        " WHERE kind = 'operator') ORDER BY at DESC LIMIT $1",
        limit,
    )
    return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]


async def tasks(connection: Any, *, saga_id: str | None = None, limit: int = 200) -> list[Any]:
    """Open tasks first (oldest first), then the latest decided ones; or a saga's tasks."""
    if saga_id is not None:
        return list(
            await connection.fetch(
                "SELECT * FROM saga_tasks WHERE saga_id = $1 ORDER BY created_at", saga_id
            )
        )
    return list(
        await connection.fetch(
            "(SELECT *, 0 AS rank FROM saga_tasks WHERE status = 'open'"
            " ORDER BY created_at LIMIT $1)"
            " UNION ALL (SELECT *, 1 AS rank FROM saga_tasks WHERE status <> 'open'"
            " ORDER BY coalesce(decided_at, created_at) DESC LIMIT $1)"
            " ORDER BY rank, created_at",
            limit,
        )
    )
