"""The console's HTML: small functions from views to escaped markup (no template engine).

Every value is escaped by :func:`esc`; markup is only ever joined from these
functions' own literals. A region marked ``data-live`` is fetched again every few
seconds by ``console.js`` (the same URL with ``fragment=1`` answers that region
alone), so pages follow the sagas without a reload.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from saga.console.dead_letters import Letter
from saga.console.operations import ACTIONS
from saga.console.queries import STATES, SagaFilter, SagaView, StepLine
from saga.coordinator.state import SagaState
from saga.security.auth import Principal


def esc(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = max(0, int((now - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def layout(title: str, body: str, who: Principal | None, note: str | None = None) -> str:
    nav = ""
    if who is not None:
        roles = ", ".join(sorted(who.roles))
        nav = (
            '<nav><a href="/sagas">Sagas</a><a href="/tasks">Tasks</a>'
            '<a href="/dead-letters">Dead letters</a><a href="/audit">Audit</a>'
            f'<span class="who">{esc(who.subject)} ({esc(roles)})</span>'
            '<form method="post" action="/sign-out" class="inline">'
            '<button class="link">Sign out</button></form></nav>'
        )
    flash = f'<p class="note" role="status">{esc(note)}</p>' if note else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · saga console</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f'<body><header><a class="brand" href="/sagas">saga console</a>{nav}</header>'
        f"<main><h1>{esc(title)}</h1>{flash}{body}</main></body></html>"
    )


def sign_in(error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return layout(
        "Sign in",
        f"{problem}<form method=post action=/sign-in class=card>"
        "<label>Bearer token <input type=password name=token id=token autocomplete=off"
        " required></label><button type=submit>Sign in</button>"
        "<p class=hint>Paste a token from your identity provider (in development: one of"
        " SAGA_AUTH_TOKENS). It is kept in an HttpOnly cookie for this site only.</p>"
        "</form>",
        None,
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def link(href: str, text: object) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def badge(state: str) -> str:
    return f'<span class="state {esc(state)}">{esc(state)}</span>'


def filter_form(wanted: SagaFilter, types: Sequence[str], fields: Sequence[str]) -> str:
    q = wanted.query()

    def options(name: str, values: Sequence[str]) -> str:
        chosen = q.get(name, "")
        items = ['<option value="">any</option>'] + [
            f"<option{' selected' if v == chosen else ''}>{esc(v)}</option>" for v in values
        ]
        return f'<select name="{name}" id="f-{name}">{"".join(items)}</select>'

    def box(name: str, hint: str) -> str:
        return (
            f'<input name="{name}" id="f-{name}" value="{esc(q.get(name, ""))}"'
            f' placeholder="{esc(hint)}">'
        )

    keys = ", ".join(fields) or "no searchable fields"
    return (
        '<form method=get action=/sagas class="filters">'
        f"<label>Business key {box('key', keys)}</label>"
        f"<label>State {options('state', STATES)}</label>"
        f"<label>Type {options('type', types)}</label>"
        f"<label>Step {box('step', 'charge')}</label>"
        f"<label>Error type {box('error', 'StepTimeout')}</label>"
        f"<label>Older than {box('older_than', '10m, 2h, 1d')}</label>"
        "<button type=submit>Find</button></form>"
    )


def counts(found: Mapping[str, Mapping[str, int]], wanted: SagaFilter) -> str:
    def chips(kind: str, param: str) -> str:
        items = []
        for name, n in sorted(found.get(kind, {}).items()):
            href = "/sagas?" + urlencode({**wanted.query(), param: name})
            items.append(f'<a class="chip" href="{esc(href)}">{esc(name)} <b>{n}</b></a>')
        return "".join(items) or "<span class=hint>none</span>"

    total = sum(found.get("state", {}).values())
    return (
        f'<div class="counts"><span>matching <b id="total">{total}</b></span>'
        f"<span>by state {chips('state', 'state')}</span>"
        f"<span>by type {chips('type', 'type')}</span></div>"
    )


def saga_rows(views: Sequence[SagaView], now: datetime) -> str:
    rows = [
        [
            link(f"/sagas/{quote(v.saga_id, safe='')}", v.saga_id),
            esc(v.saga_type),
            badge(v.status),
            esc(v.step or "-"),
            esc(v.error_type or ""),
            esc(", ".join(f"{k}={val}" for k, val in v.keys.items())),
            f'<span title="{esc(when(v.started_at))}">{esc(ago(v.started_at, now))}</span>',
            esc(when(v.updated_at)),
        ]
        for v in views
    ]
    if not rows:
        return "<p class=hint>No saga matches.</p>"
    return table(
        ["saga", "type", "state", "step", "error type", "keys", "age", "updated"],
        rows,
        cls="sagas",
    )


def bulk_form(wanted: SagaFilter, who: Principal) -> str:
    if not who.can("operator"):
        return ""
    hidden = "".join(
        f'<input type=hidden name="{esc(k)}" value="{esc(v)}">' for k, v in wanted.query().items()
    )
    choices = "".join(f"<option>{a}</option>" for a in ACTIONS)
    return (
        '<form method=get action=/bulk class="card bulk">'
        f"{hidden}<label>Act on every matching saga <select name=action id=bulk-action>"
        f"{choices}</select></label><button type=submit>Preview</button></form>"
    )


def sagas_page(
    wanted: SagaFilter,
    live: str,
    types: Sequence[str],
    fields: Sequence[str],
    who: Principal,
    note: str | None,
) -> str:
    src = "/sagas?" + urlencode({**wanted.query(), "fragment": "1"})
    quick = (
        '<p class="quick">Quick: <a href="/sagas?state=parked">parked</a>'
        ' · <a href="/sagas?state=running&amp;older_than=10m">stuck: running over 10 min</a>'
        ' · <a href="/sagas?state=compensating&amp;older_than=10m">compensating over 10'
        " min</a></p>"
    )
    body = (
        quick
        + filter_form(wanted, types, fields)
        + f'<div id="live" data-live="{esc(src)}">{live}</div>'
        + bulk_form(wanted, who)
    )
    return layout("Sagas", body, who, note)


def sagas_live(found: Mapping[str, Mapping[str, int]], wanted: SagaFilter, rows: str) -> str:
    return counts(found, wanted) + rows


def saga_live(
    state: SagaState,
    steps: Sequence[StepLine],
    log: Sequence[Mapping[str, Any]],
    trace: tuple[str | None, str | None],
    tasks: Sequence[Mapping[str, Any]],
) -> str:
    trace_id, trace_url = trace
    if trace_url:
        traced = f'<a id="trace" href="{esc(trace_url)}" target="_blank" rel="noopener">'
        traced += f"{esc(trace_id)}</a>"
    else:
        traced = esc(trace_id or "-")
    head = (
        '<dl class="facts">'
        f"<dt>state</dt><dd id=status>{badge(state.status)}"
        f"{(' ' + esc(state.reason)) if state.reason else ''}</dd>"
        f"<dt>type</dt><dd>{esc(state.saga_type)} v{state.definition_version}</dd>"
        f"<dt>started</dt><dd>{esc(when(state.started_at))}</dd>"
        f"<dt>finished</dt><dd>{esc(when(state.finished_at))}</dd>"
        f"<dt>trace</dt><dd>{traced}</dd></dl>"
    )
    rows = [
        [
            esc(s.name),
            badge(s.status),
            esc(when(s.started_at)),
            esc(when(s.finished_at)),
            esc(f"{s.duration_s:.3f}s" if s.duration_s is not None else "-"),
            esc(s.attempts or "-"),
            esc(s.compensation),
            esc(s.error or ""),
        ]
        for s in steps
    ]
    timeline = "<h2>Timeline</h2>" + table(
        ["step", "state", "started", "finished", "duration", "attempts", "undo", "error"],
        rows,
        cls="timeline",
    )
    task_rows = [
        [esc(t["task_id"]), esc(t["step"]), badge(t["status"]), esc(t["assignee"] or "-")]
        for t in tasks
    ]
    task_part = (
        "<h2>Tasks</h2>" + table(["task", "step", "state", "assignee"], task_rows) if tasks else ""
    )
    raw = [
        [
            esc(when(e["at"])),
            esc(e["kind"]),
            esc(e["type"]),
            esc(e["actor"]),
            _detail(e["detail"], 400),
        ]
        for e in log
    ]
    history = "<h2>History</h2>" + table(["at", "kind", "type", "actor", "detail"], raw)
    return head + timeline + task_part + history


def saga_actions(state: SagaState, steps: Sequence[str], who: Principal) -> str:
    if not who.can("operator"):
        return ""
    forms = []
    for action, needs_reason in ACTIONS.items():
        step = ""
        if action == "skip":
            options = "".join(f"<option>{esc(s)}</option>" for s in steps)
            step = f'<select name=step aria-label="step">{options}</select>'
        reason = (
            f'<input name=reason placeholder="reason" aria-label="{action} reason" required>'
            if needs_reason
            else ""
        )
        forms.append(
            f'<form method=post action="/sagas/{esc(quote(state.saga_id, safe=""))}/{action}"'
            f' data-confirm="{esc(action)} saga {esc(state.saga_id)}?" class="action">'
            f'{step}{reason}<button type=submit id="do-{action}">{action.title()}</button></form>'
        )
    return '<h2>Actions</h2><div class="actions">' + "".join(forms) + "</div>"


def letter_rows(letters: Sequence[Letter], who: Principal, *, select: bool) -> str:
    rows = []
    for letter in letters:
        pick = (
            f'<input type=checkbox name=id value="{esc(letter.id)}" aria-label="{esc(letter.id)}">'
            if select and who.can("operator")
            else ""
        )
        saga = letter.saga_id or ""
        rows.append(
            [
                pick,
                esc(when(letter.at)),
                esc(letter.error_type),
                esc(letter.reason),
                esc(letter.group),
                esc(letter.original),
                link(f"/sagas/{quote(saga, safe='')}", saga) if saga else "",
                f"<code>{esc(letter.id)}</code>",
            ]
        )
    if not rows:
        return "<p class=hint>No dead letters.</p>"
    return table(
        ["", "at", "error type", "reason", "group", "from", "saga", "dead letter"],
        rows,
        cls="letters",
    )


def letters_page(found: Mapping[str, Sequence[Letter]], who: Principal, note: str | None) -> str:
    parts = []
    for topic, letters in found.items():
        rows = letter_rows(letters, who, select=True)
        button = (
            '<button type=submit id="redrive">Redrive selected</button>'
            if who.can("operator") and letters
            else ""
        )
        parts.append(
            f'<section><h2>{esc(topic)} <span class="hint">{len(letters)}</span></h2>'
            f'<form method=post action="/dead-letters/redrive" data-confirm="Redrive the'
            f' selected dead letters to their topic?">{rows}{button}</form></section>'
        )
    body = "".join(parts) or "<p class=hint>No dead-letter topics yet.</p>"
    return layout("Dead letters", body, who, note)


def tasks_page(tasks: Sequence[Mapping[str, Any]], who: Principal, note: str | None) -> str:
    live = tasks_live(tasks, who)
    return layout("Tasks", f'<div id="live" data-live="/tasks?fragment=1">{live}</div>', who, note)


def tasks_live(tasks: Sequence[Mapping[str, Any]], who: Principal) -> str:
    rows = []
    for t in tasks:
        mine = t["status"] == "open" and who.can("approver") and t["assignee"] == who.subject
        forms = ""
        if mine:
            target = quote(str(t["task_id"]), safe="")
            forms = "".join(
                f'<form method=post action="/tasks/{target}/{verb}" class="inline"'
                f' data-confirm="{verb} task {esc(t["task_id"])}?">'
                f'<input name=reason placeholder="reason" aria-label="{verb} reason"'
                f"{' required' if verb == 'reject' else ''}>"
                f"<button type=submit>{verb.title()}</button></form>"
                for verb in ("approve", "reject")
            )
        rows.append(
            [
                esc(t["task_id"]),
                link(f"/sagas/{quote(str(t['saga_id']), safe='')}", t["saga_id"]),
                esc(t["step"]),
                badge(str(t["status"])),
                esc(t["assignee"] or "-"),
                esc(t.get("decided_by") or ""),
                forms,
            ]
        )
    if not rows:
        return "<p class=hint>No tasks.</p>"
    return table(["task", "saga", "step", "state", "assignee", "decided by", ""], rows)


def bulk_page(
    wanted: SagaFilter, action: str, ids: Sequence[str], who: Principal, step: str | None
) -> str:
    hidden = "".join(
        f'<input type=hidden name="{esc(k)}" value="{esc(v)}">' for k, v in wanted.query().items()
    )
    shown = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
    reason = (
        "<label>Reason <input name=reason id=bulk-reason required></label>"
        if ACTIONS.get(action)
        else ""
    )
    body = (
        f'<p class="card">Filter: {esc(wanted.describe())}</p>'
        f'<p id="affected"><b>{len(ids)}</b> saga(s) will be affected by'
        f" <b>{esc(action)}</b>{(' at ' + esc(step)) if step else ''}: {esc(shown)}</p>"
        f'<form method=post action=/bulk class=card data-confirm="{esc(action)}'
        f' {len(ids)} saga(s)?">{hidden}<input type=hidden name=action value="{esc(action)}">'
        f'<input type=hidden name=expected value="{len(ids)}">'
        f"{reason}<button type=submit id=bulk-confirm>{esc(action.title())} {len(ids)}"
        " saga(s)</button></form>"
    )
    return layout("Bulk action", body, who)


def _detail(detail: Any, limit: int) -> str:
    """A log entry's detail as JSON, cut to ``limit`` characters, escaped."""
    return f"<code>{esc(json.dumps(detail, sort_keys=True, default=str)[:limit])}</code>"


def audit_page(entries: Sequence[Mapping[str, Any]], who: Principal) -> str:
    rows = [
        [
            esc(when(e["at"])),
            esc(e["actor"]),
            esc(e["action"]),
            esc(e["target"]),
            _detail(e["detail"], 300),
        ]
        for e in entries
    ]
    return layout("Audit", table(["at", "who", "action", "on", "detail"], rows), who)


def problem(title: str, text: str, who: Principal | None) -> str:
    return layout(title, f'<p class="error" role="alert">{esc(text)}</p>', who)
