"""One saga is one trace: real processes export OTLP/HTTP to a receiver the test runs.

The system is the example one (orders over HTTP, inventory, payment, shipping,
notification, the coordinator), each its own process exporting spans and
metrics to :class:`~saga.dev.otlp.OtlpReceiver`. The spans are decoded from the
protobuf the exporters sent, and the trace of each saga is walked from the
last compensation back to the HTTP call that placed the order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saga.dev.otlp import CollectedSpan, OtlpReceiver, render_tree
from saga.dev.processes import free_port
from tests.conftest import Infra
from tests.http_helpers import OPERATOR
from tests.integration.test_coordinator import launch, until
from tests.kafka_helpers import eventually
from tests.system_helpers import System

EVERYONE = ("coordinator", "orders", "inventory", "payment", "shipping", "notification")
#: Shipping never answers for these orders: the coordinator's step timer must act.
SILENT = [{"step": "ship", "action": "never_answer", "when": {"order_id": "silent-*"}}]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def exporting_to(endpoint: str) -> dict[str, str]:
    return {
        "SAGA_OTLP_ENDPOINT": endpoint,
        "SAGA_OTLP_METRICS_ENDPOINT": endpoint,
        "SAGA_OTLP_EXPORT_INTERVAL_MS": "200",
        "SAGA_METRICS_INTERVAL_MS": "500",
        "SAGA_FAULTS": json.dumps(SILENT),
    }


def post_order(running: System, order_id: str, amount_cents: int = 1_500) -> dict[str, Any]:
    body = json.dumps({"order_id": order_id, "customer_id": "c-1", "amount_cents": amount_cents})
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{running.local.url('orders')}/orders",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {OPERATOR}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer: dict[str, Any] = json.load(response)
        assert response.status == 202, answer
    return answer


def assert_saga_metrics(receiver: OtlpReceiver) -> None:
    """One saga completed and one compensated: counted, and their steps timed."""
    order = {"saga.type": "order"}
    for name, at_least in (("saga.started", 2), ("saga.completed", 1), ("saga.compensated", 1)):
        point = receiver.latest(name, **order)
        assert point is not None and point.kind == "sum" and point.value >= at_least, name
    for name, step in (("saga.step.duration", "ship"), ("saga.compensation.duration", "charge")):
        point = receiver.latest(name, **{"saga.step": step})
        assert point is not None and point.kind == "histogram" and point.count >= 1, name


def get_json(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {OPERATOR}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback http)
        return json.load(response)


def of_saga(receiver: OtlpReceiver, saga_id: str) -> list[CollectedSpan]:
    return [s for s in receiver.spans() if s.attributes.get("saga.id") == saga_id]


def whole_chain(receiver: OtlpReceiver, saga_id: str, prefix: str) -> bool:
    """Whether the saga's last compensation and every span above it were exported."""
    spans = of_saga(receiver, saga_id)
    if not spans:
        return False
    trace = receiver.traces()[spans[0].trace_id]
    by_id = {s.span_id: s for s in trace}
    releases = [s for s in trace if s.name == f"process {prefix}inventory.commands"]
    try:
        return bool(releases) and ancestry(releases[0], by_id)[-1].name == "POST /orders"
    except AssertionError:
        return False


def ancestry(span: CollectedSpan, by_id: dict[str, CollectedSpan]) -> list[CollectedSpan]:
    """``span`` and its parents up to the root, nearest first."""
    chain = [span]
    while chain[-1].parent_span_id is not None:
        parent = by_id.get(chain[-1].parent_span_id)
        assert parent is not None, f"parent of {chain[-1].name} was never exported"
        chain.append(parent)
    return chain


def hops(chain: list[CollectedSpan], prefix: str) -> list[str]:
    return [f"{s.name.replace(prefix, '')} [{s.service}]" for s in reversed(chain)]


async def test_each_saga_is_one_trace_from_the_http_call_to_the_last_compensation(
    infra: Infra, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    run = uuid.uuid4().hex[:6]
    ok, nowhere, silent = f"ok-{run}", f"nowhere-{run}", f"silent-{run}"
    with launch(infra, tmp_path, *EVERYONE, env=exporting_to(receiver.endpoint)) as running:
        post_order(running, ok)
        post_order(running, nowhere)  # no carrier: refund, then release
        await until(running, [ok], "completed")
        await until(running, [nowhere], "compensated")
        prefix = running.prefix  # topics are namespaced per test system

        # Spans and metrics are exported in batches: let the coordinator's arrive
        # before it is killed below (a consumer's process span ends after the spans
        # made while handling its batch: wait for the whole chain, not for one span).
        def exported(r: OtlpReceiver) -> bool:
            return whole_chain(r, nowhere, prefix) and all(
                r.latest(name, **{"saga.type": "order"}) is not None
                for name in ("saga.started", "saga.completed", "saga.compensated")
            )

        assert receiver.wait_for(exported, timeout_s=30), "the coordinator exported nothing"
        assert_saga_metrics(receiver)

        # The coordinator dies while shipping keeps silent; the step timer fires
        # in the restarted coordinator, and its compensations join the trace.
        post_order(running, silent)

        async def shipping_started() -> bool:
            state = (await running.sagas([silent])).get(silent)
            return state is not None and state["steps"]["ship"]["status"] == "running"

        await eventually(shipping_started, what="the ship step running")
        running.kill("coordinator", signal.SIGKILL)
        await asyncio.sleep(4)  # past the 3 s step timeout
        running.start("coordinator")
        await until(running, [silent], "compensated")

        def settled(r: OtlpReceiver) -> bool:
            names = {s.name for s in of_saga(r, silent)} | {s.name for s in of_saga(r, nowhere)}
            return {
                f"process {prefix}inventory.commands",
                f"process {prefix}saga.events",
            } <= names

        assert receiver.wait_for(settled, timeout_s=30), "spans did not arrive"
        # The orders service learned each outcome from saga.events.
        for order_id, status in ((ok, "confirmed"), (nowhere, "cancelled"), (silent, "cancelled")):

            async def shown(order_id: str = order_id, status: str = status) -> bool:
                url = f"{running.local.url('orders')}/orders/{order_id}"
                return bool((await asyncio.to_thread(get_json, url))["status"] == status)

            await eventually(shown, what=f"{order_id} {status} in the orders service")

    for saga_id in (ok, nowhere, silent):
        spans = of_saga(receiver, saga_id)
        assert len({s.trace_id for s in spans}) == 1, f"{saga_id} spans several traces"

    trace = receiver.traces()[of_saga(receiver, nowhere)[0].trace_id]
    by_id = {s.span_id: s for s in trace}
    [release] = [
        s
        for s in trace
        if s.name == f"process {prefix}inventory.commands" and s.service == "inventory"
    ]
    chain = hops(ancestry(release, by_id), prefix)
    assert chain == [
        "POST /orders [orders]",
        "send orders.events [orders]",
        "process orders.events [inventory]",
        "send inventory.events [inventory]",
        "process inventory.events [payment]",
        "send payment.events [payment]",
        "process payment.events [shipping]",
        "send shipping.events [shipping]",
        "process shipping.events [coordinator]",
        "decide order [coordinator]",
        "compensate charge [coordinator]",
        "send payment.commands [coordinator]",
        "process payment.commands [payment]",
        "send payment.events [payment]",
        "process payment.events [coordinator]",
        "decide order [coordinator]",
        "compensate reserve [coordinator]",
        "send inventory.commands [coordinator]",
        "process inventory.commands [inventory]",
    ], "\n" + render_tree(trace)

    # Messaging semantic conventions plus the saga's attributes.
    attributes = release.attributes
    assert release.kind == "consumer"
    assert attributes["messaging.system"] == "kafka"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.destination.name"] == f"{running.prefix}inventory.commands"
    assert attributes["messaging.consumer.group.name"] == f"{running.prefix}inventory"
    assert isinstance(attributes["messaging.kafka.offset"], int)
    assert str(attributes["messaging.destination.partition.id"]).isdigit()
    assert attributes["messaging.message.id"]
    assert (attributes["saga.id"], attributes["saga.type"]) == (nowhere, "order")
    assert (attributes["saga.step"], attributes["saga.outcome"]) == ("release", "completed")
    assert attributes["saga.compensates"] == "reserve"
    [send] = [s for s in trace if s.span_id == release.parent_span_id]
    assert send.kind == "producer"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == f"{running.prefix}inventory.commands"
    assert send.attributes["messaging.message.id"] == attributes["messaging.message.id"]

    # After the restart: the timer's decision and compensations are in the same trace.
    silent_trace = receiver.traces()[of_saga(receiver, silent)[0].trace_id]
    names = [s.name.replace(prefix, "") for s in silent_trace]
    assert names[0] == "POST /orders", render_tree(silent_trace)
    timer_decisions = [
        s
        for s in silent_trace
        if s.name == "decide order" and s.attributes.get("saga.trigger") == "timer"
    ]
    assert timer_decisions, render_tree(silent_trace)
    assert "compensate charge" in names and "compensate reserve" in names
    assert "process inventory.commands" in names
    assert "process shipping.commands" in names, "the silent shipment is cancelled too"


async def test_sagas_complete_when_the_collector_is_down(infra: Infra, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    names = ("coordinator", "orders", "inventory", "payment", "shipping", "notification")
    with launch(infra, tmp_path, *names, env=exporting_to(closed)) as running:
        orders = [f"dark-{uuid.uuid4().hex[:6]}-{i}" for i in range(3)]
        for order_id in orders:
            post_order(running, order_id)
        await until(running, orders, "completed")
