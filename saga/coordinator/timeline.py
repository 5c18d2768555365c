"""A saga as a readable timeline (what ``saga show`` and the demo print)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from saga.coordinator.state import SagaState


def render_timeline(state: SagaState, order: Sequence[str] = ()) -> str:
    """A saga as a readable timeline (what ``saga show`` prints), steps in ``order``."""
    trace = state.traceparent.split("-")[1] if state.traceparent else "-"
    head = [
        f"saga      {state.saga_id}",
        f"type      {state.saga_type}",
        f"state     {state.status}" + (f"  ({state.reason})" if state.reason else ""),
        f"started   {time(state.started_at)}",
        f"finished  {time(state.finished_at) if state.finished_at else '-'}",
        f"trace id  {trace}",
        "",
    ]
    rows = []
    names = [n for n in order if n in state.steps] + [n for n in state.steps if n not in order]
    for name in names:
        step = state.steps[name]
        duration = (
            f"{(step.finished_at - step.started_at).total_seconds():.3f}s"
            if step.started_at and step.finished_at
            else "-"
        )
        rows.append(
            [
                name,
                step.status,
                time(step.started_at),
                time(step.finished_at),
                duration,
                str(step.attempt or "-"),
                time(step.compensated_at)
                if step.compensated_at
                else (
                    str(step.compensation_attempts) + " sent" if step.compensation_attempts else "-"
                ),
                step.error or "",
            ]
        )
    rendered = table(
        ["STEP", "STATE", "STARTED", "FINISHED", "DURATION", "ATTEMPT", "COMPENSATED", "ERROR"],
        rows,
    )
    return "\n".join(head) + rendered


def time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row, strict=True)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(out) + "\n"
