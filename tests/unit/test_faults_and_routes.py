"""Fault rules pick deliveries as documented; routes match paths and start sagas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.orders import OrderPlaced
from saga.messages.codec import EncodedRecord
from saga.participant.request_runner import RequestRunner
from saga.participant.routes import HttpRequest, HttpResponse, RequestContext, Route
from saga.participant.service import Service
from saga.resilience.faults import FaultRule, Faults
from saga.settings import Settings


def test_rules_match_step_and_payload_patterns_and_delays_add_up() -> None:
    faults = Faults(
        [
            FaultRule(step="reserve", action="fail", when={"sku": "sku-broken"}),
            FaultRule(step="ship", action="never_answer", when={"order_id": "silent-*"}),
            FaultRule(step="*", action="delay", delay_ms=20),
            FaultRule(step="re*", action="delay", delay_ms=5),
        ]
    )
    assert faults.verdict("reserve", "m1", {"sku": "sku-broken"}) == ("fail", 0.025)
    assert faults.verdict("reserve", "m1", {"sku": "sku-1"}) == ("run", 0.025)
    assert faults.verdict("ship", "m1", {"order_id": "silent-7"}) == ("never_answer", 0.02)
    assert faults.verdict("ship", "m1", {"order_id": "loud-7"}) == ("run", 0.02)
    assert faults.verdict("charge", "m1", {}) == ("run", 0.02)
    assert not Faults() and faults


def test_a_rate_picks_about_that_share_and_the_same_message_every_time() -> None:
    faults = Faults([FaultRule(step="charge", action="fail", rate=0.2)])
    picked = [faults.verdict("charge", f"m{n}", {})[0] == "fail" for n in range(5000)]
    assert 0.17 < sum(picked) / len(picked) < 0.23
    again = [faults.verdict("charge", f"m{n}", {})[0] == "fail" for n in range(5000)]
    assert picked == again, "a redelivered message meets the same fate"


def test_fault_rules_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    rules = [{"step": "ship", "action": "never_answer", "when": {"order_id": "x-*"}}]
    monkeypatch.setenv("SAGA_FAULTS", json.dumps(rules))
    assert Settings().faults == [FaultRule(**rules[0])]  # type: ignore[arg-type]
    monkeypatch.setenv("SAGA_FAULTS", '[{"step": "ship", "action": "explode"}]')
    with pytest.raises(ValueError, match="action"):
        Settings()


async def _ok(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
    return HttpResponse(200)


def test_route_patterns_capture_parameters() -> None:
    route = Route("GET", "/orders/{order_id}", _ok)
    assert route.match("GET", "/orders/o-1") == {"order_id": "o-1"}
    assert route.match("GET", "/orders/o-1/") == {"order_id": "o-1"}
    assert route.match("POST", "/orders/o-1") is None
    assert route.match("GET", "/orders") is None
    assert route.match("GET", "/orders/o-1/items") is None


async def test_a_route_without_a_store_publishes_the_sagas_it_starts_in_the_callers_trace() -> None:
    service = Service("orders")
    sent: list[tuple[str, EncodedRecord]] = []

    @service.route("POST", "/orders/{order_id}")
    async def place(request: HttpRequest, ctx: RequestContext) -> HttpResponse:
        body: dict[str, Any] = request.json()
        event = OrderPlaced(order_id=request.params["order_id"], customer_id="c", **body)
        ctx.start_saga("order", event, saga_id=event.order_id)
        return HttpResponse(202, {"order_id": event.order_id, "q": request.query})

    async def emit(records: list[tuple[str, EncodedRecord]]) -> None:
        sent.extend(records)

    runner = RequestRunner(service, store=None, emit=emit, after_commit=None, topic_prefix="t.")
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    status, answer = await runner(
        "POST", "/orders/o-9?x=1", {"traceparent": caller}, b'{"amount_cents": 5}'
    )
    assert (status, answer) == (202, {"order_id": "o-9", "q": {"x": "1"}})
    [(topic, record)] = sent
    assert topic == "t.orders.events" and record.key == b"o-9"
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["ce_sagatype"] == "order"
    assert headers["traceparent"].split("-")[1] == caller.split("-")[1]

    assert (await runner("POST", "/orders/o-9", {}, b"{not json"))[0] == 400
    invalid = await runner("POST", "/orders/o-9", {}, b'{"amount_cents": -1}')
    assert invalid[0] == 400 and invalid[1]["error"] == "invalid request"
    assert (await runner("GET", "/elsewhere", {}, b""))[0] == 404
    assert len(sent) == 1, "nothing published for refused requests"
