"""``make demo``: the example order system on the embedded broker and PostgreSQL.

Starts a throw-away embedded stack, then the coordinator and the orders,
inventory, payment, shipping and notification services, each as its own
process, and the saga console (its address and a sign-in token are printed).
Places a batch of orders over HTTP, in which faults injected through
``SAGA_FAULTS`` make every path happen: a SKU that always fails at the stock
step, a share of card charges declined, addresses no carrier serves, and one
order whose shipment never answers (the coordinator's step timeout acts).
Shows progress while the sagas run, then a summary (final states, latency per
step), and one compensated saga: its timeline from the saga log, its trace id,
and its trace tree from the spans every process exported over OTLP to a
receiver run by the demo (or to ``SAGA_OTLP_ENDPOINT``, e.g. Jaeger, when set).

Every process it started is stopped on exit, Ctrl-C included, and checked.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from contracts.order_saga import ORDER_SAGA
from saga.coordinator import SagaState, render_timeline
from saga.dev import DevStack, LocalSystem
from services.system import DEV_TOKEN, ENVIRONMENT, PROCESSES

#: The faults of the demo; ``SAGA_FAULTS`` in the environment replaces them.
FAULTS = [
    {"step": "reserve", "action": "fail", "when": {"sku": "sku-broken"}},
    {"step": "charge", "action": "fail", "rate": 0.15, "when": {"order_id": "order-*"}},
    {"step": "ship", "action": "never_answer", "when": {"order_id": "silent-*"}},
    {"step": "*", "action": "delay", "delay_ms": 15},
]
WAIT_S = 120


def _say(text: str = "") -> None:
    print(text, flush=True)


def _orders(run: str) -> list[tuple[str, dict[str, Any]]]:
    """``(what to expect, POST /orders body)`` for the batch."""
    batch: list[tuple[str, dict[str, Any]]] = []
    for n in range(16):
        body = {"order_id": f"order-{run}-{n:02}", "customer_id": f"customer-{n % 5}"}
        batch.append(("completes, unless the card is declined", body | {"amount_cents": 1_000 + n}))
    batch.append(
        (
            "no stock step: sku-broken always fails",
            {"order_id": f"broken-{run}", "sku": "sku-broken"},
        )
    )
    batch.append(
        ("card declined: amount over the limit", {"order_id": f"big-{run}", "amount_cents": 60_000})
    )
    batch.append(("no carrier: refund, then release", {"order_id": f"nowhere-{run}"}))
    batch.append(("shipping never answers: timeout", {"order_id": f"silent-{run}"}))
    return [(why, {"customer_id": "alice", "amount_cents": 2_500, **body}) for why, body in batch]


async def run_demo() -> int:
    from saga.dev.otlp import OtlpReceiver

    jaeger = os.environ.get("SAGA_OTLP_ENDPOINT")
    receiver = None if jaeger else OtlpReceiver().start()
    with tempfile.TemporaryDirectory(prefix="saga-demo-") as tmp:
        workdir = Path(tmp)
        stack = DevStack(workdir, detached=False)
        _say("starting the embedded Kafka-protocol broker and PostgreSQL ...")
        info = stack.up(kafka_port=None, postgres_port=None)
        system: LocalSystem | None = None
        pids = [info.broker.pid, info.postgres.pid]
        try:
            _say(f"  broker        pid {info.broker.pid:<7} {info.bootstrap_servers}")
            _say(f"  postgres      pid {info.postgres.pid:<7} {info.database_url}")
            endpoint = jaeger or (receiver.endpoint if receiver else "")
            env = {
                **os.environ,
                **info.environment(),
                **ENVIRONMENT,
                "SAGA_COMMIT_INTERVAL_MS": "50",
                "SAGA_OTLP_ENDPOINT": endpoint,
                "SAGA_OTLP_EXPORT_INTERVAL_MS": "300",
                "SAGA_FAULTS": os.environ.get("SAGA_FAULTS", json.dumps(FAULTS)),
            }
            token = secrets.token_urlsafe(16)
            if "SAGA_AUTH_TOKENS" not in env:
                people = {token: {"sub": "demo", "roles": ["operator", "approver"]}}
                env["SAGA_AUTH_TOKENS"] = json.dumps(people)
            system = LocalSystem(env, workdir, processes=PROCESSES)
            for name in PROCESSES:
                pid = system.start(name)  # from this thread: children die with it (Linux)
                pids.append(pid)
                _say(f"  {name:<13} pid {pid:<7} (its own process)")
            _say(f"  traces        OTLP/HTTP to {endpoint}")
            signed_in = "your SAGA_AUTH_TOKENS" if "SAGA_AUTH_TOKENS" in os.environ else token
            _say(f"  console       {system.url('console')}/  (sign in with {signed_in})")
            await _run_orders(system, info.database_url, receiver, jaeger)
        finally:
            if system is not None:
                system.stop_all()
            stopped = stack.down()
            if receiver is not None:
                receiver.stop()
            _say(f"\nstopped the services, the coordinator, {', '.join(stopped)}")
        left = [pid for pid in pids if _alive(pid)]
    if left:
        _say(f"still running: {left}")
        return 1
    _say("demo finished; nothing left running")
    return 0


async def _run_orders(
    system: LocalSystem, database_url: str, receiver: Any, jaeger: str | None
) -> None:
    run = uuid.uuid4().hex[:4]
    batch = _orders(run)
    _say(f"\nplacing {len(batch)} orders with POST {system.url('orders')}/orders")
    for why, body in batch:
        await asyncio.to_thread(_post, f"{system.url('orders')}/orders", body)
        if not body["order_id"].startswith("order-"):
            _say(f"  placed {body['order_id']:<16} {why}")
    _say(
        f"  placed {sum(b['order_id'].startswith('order-') for _, b in batch)} more: order-{run}-*"
    )
    sagas = [body["order_id"] for _, body in batch]
    _say("")
    states = await _follow(database_url, sagas)
    _say("")
    _say(_summary(states))
    shown = states[f"nowhere-{run}"]
    _say("")
    _say("one compensated saga, from the saga log (saga show):")
    _say(render_timeline(shown, [s.name for s in ORDER_SAGA.steps]))
    trace_id = shown.traceparent.split("-")[1] if shown.traceparent else None
    if trace_id is None:
        return
    if receiver is None:
        _say(f"\nits trace is {trace_id}: open Jaeger and search for saga.id={shown.saga_id}")
        return
    from saga.dev.otlp import render_tree

    def arrived(r: Any) -> bool:
        names = {s.name for s in r.traces().get(trace_id, [])}
        return "process inventory.commands" in names and "process saga.events" in names

    receiver.wait_for(arrived, timeout_s=15)
    spans = receiver.traces().get(trace_id, [])
    _say(f"\nits trace {trace_id}: {len(spans)} spans across processes")
    _say(render_tree(spans, attributes=("saga.step", "saga.outcome", "saga.status")))


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 (the demo's own loopback service)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {DEV_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)


async def _follow(database_url: str, sagas: list[str]) -> dict[str, SagaState]:
    """Print progress until every saga finished; their final states."""
    db = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + WAIT_S
        last = ""
        while True:
            rows = await db.fetch(
                "SELECT saga_id, state, version FROM saga_instances"
                " WHERE saga_id = ANY($1::text[])",
                sagas,
            )
            states = {
                r["saga_id"]: SagaState.from_json(json.loads(r["state"]), r["version"])
                for r in rows
            }
            counts: Counter[str] = Counter(s.status for s in states.values())
            counts["waiting"] = len(sagas) - len(states)
            line = "progress: " + ", ".join(
                f"{counts[k]} {k}"
                for k in (
                    "completed",
                    "compensated",
                    "compensating",
                    "running",
                    "parked",
                    "waiting",
                )
                if counts[k]
            )
            if line != last:
                _say(f"  {time.strftime('%H:%M:%S')} {line}")
                last = line
            if len(states) == len(sagas) and all(
                s.finished or s.status == "parked" for s in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise TimeoutError(f"sagas not finished after {WAIT_S}s: {line}")
            await asyncio.sleep(0.25)
    finally:
        await db.close()


def _summary(states: dict[str, SagaState]) -> str:
    """Counts per final state, then latency per step and end to end."""
    counts: Counter[str] = Counter(s.status for s in states.values())
    lines = ["summary: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    reasons = Counter((s.reason or "").split(":")[0] for s in states.values() if s.reason)
    for reason, n in sorted(reasons.items()):
        lines.append(f"  compensated because {reason}: {n}")
    lines.append("")
    lines.append(f"{'STEP':<10}{'COMPLETED':>10}{'P50 MS':>10}{'P95 MS':>10}{'MAX MS':>10}")
    for step in ORDER_SAGA.steps:
        took = [
            (st.finished_at - st.started_at).total_seconds() * 1000
            for s in states.values()
            if (st := s.steps.get(step.name)) and st.started_at and st.finished_at
            if st.status in ("completed", "compensated")
        ]
        lines.append(f"{step.name:<10}{len(took):>10}" + _percentiles(took))
    whole = [
        (s.finished_at - s.started_at).total_seconds() * 1000
        for s in states.values()
        if s.status == "completed" and s.finished_at
    ]
    lines.append(f"{'saga':<10}{len(whole):>10}" + _percentiles(whole))
    return "\n".join(lines)


def _percentiles(values: list[float]) -> str:
    if not values:
        return f"{'-':>10}{'-':>10}{'-':>10}"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):>10.1f}{p95:>10.1f}{ordered[-1]:>10.1f}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours is not running
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def main() -> int:
    """``make demo``: run it, and stop everything it started on Ctrl-C too."""
    try:
        return asyncio.run(run_demo())
    except KeyboardInterrupt:  # everything it started was stopped on the way out
        print("\ndemo interrupted; everything it started is stopped", flush=True)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
