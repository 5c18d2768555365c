"""The saga console in a real browser (headless Chromium driven by Playwright), against
real processes: the coordinator, step services, the console, the broker and PostgreSQL.

Payment is down at first, so an order's charge times out and its refund is never
confirmed: the saga parks at ``charge``. People sign in with static tokens: alice
(operator), victor (viewer), manager and director (approvers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from contracts.orders import OrderPlaced
from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from tests.conftest import Infra
from tests.integration.test_coordinator import launch, until
from tests.integration.test_flows import request_trip, tasks
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
T = TypeVar("T")
TOKENS = {
    "alice-token": {"sub": "alice", "roles": ["operator"]},
    "victor-token": {"sub": "victor", "roles": ["viewer"]},
    "manager-token": {"sub": "manager", "roles": ["approver"]},
    "director-token": {"sub": "director", "roles": ["approver"]},
}
TRACES = "http://jaeger.test/trace/{trace_id}"
#: Set to a path to save a screenshot of a saga's page there (docs/console.png).
SCREENSHOT = os.environ.get("SAGA_CONSOLE_SCREENSHOT")

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"no Chromium at {CHROMIUM}: .ci/run installs it")
    pytest.skip("no Chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def running(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    logs = tmp_path_factory.mktemp("console-logs")
    env = {
        "SAGA_DEFINITIONS": "tests.browser.sagas:definitions",
        "SAGA_AUTH_TOKENS": json.dumps(TOKENS),
        "SAGA_TRACE_URL_TEMPLATE": TRACES,
    }
    with launch(infra, logs, "coordinator", "inventory", "shipping", env=env) as system:
        for name in ("flights", "hotels"):
            system.start(name, module=["tests.trips.services", name])
        system.start("console")
        yield system


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


def sync(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end from a test (Playwright's sync API holds this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def signed_in(browser: Any, running: System, token: str) -> Any:
    """A new browser page signed in with ``token``."""
    page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
    page.set_default_timeout(20_000)
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(running.local.url("console") + "/sign-in")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url("**/sagas**")
    return page


async def place(running: System, order_id: str, customer_id: str) -> None:
    envelope: Envelope[Message] = Envelope(
        payload=OrderPlaced(order_id=order_id, customer_id=customer_id, amount_cents=1200),
        saga_id=order_id,
        saga_type="order",
        source="/services/orders",
        # The trace the orders service would have started (no tracer runs in the test).
        traceparent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
    )
    async with Publisher(running.settings) as publisher:
        await publisher.publish(f"{running.prefix}orders.events", envelope)


async def audit(running: System) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(running.database_url)
    try:
        rows = await connection.fetch("SELECT actor, action, target FROM saga_audit ORDER BY id")
    finally:
        await connection.close()
    return [dict(r) for r in rows]


def post(page: Any, running: System, path: str, form: dict[str, str]) -> int:
    """POST a form as the page's person would, from the console's origin; the status."""
    base = running.local.url("console")
    answer = page.request.post(base + path, form=form, headers={"Origin": base}, max_redirects=0)
    return int(answer.status)


def test_an_operator_finds_a_parked_saga_by_its_key_retries_it_and_watches_it_finish(
    running: System, browser: Any
) -> None:
    run = uuid.uuid4().hex[:6]
    first, customer = f"park-{run}-1", f"customer-{run}"
    # Two more sagas of another customer, for a bulk action.
    others, other_customer = [f"park-{run}-2", f"park-{run}-3"], f"other-{run}"
    sync(place(running, first, customer))
    for order_id in others:
        sync(place(running, order_id, other_customer))
    sync(until(running, [first, *others], "parked", timeout_s=90))

    page = signed_in(browser, running, "alice-token")
    page.fill("#f-key", f"customer_id={other_customer}")
    page.click("text=Find")
    assert page.locator("#total").inner_text() == "2"
    page.fill("#f-key", first)
    page.click("text=Find")
    assert page.locator("#total").inner_text() == "1"
    page.click(f"a:text-is('{first}')")

    timeline = page.locator("table.timeline")
    assert "compensation_failed" in timeline.locator("tr:has-text('charge')").inner_text()
    assert "completed" in timeline.locator("tr:has-text('reserve')").inner_text()
    state = sync(running.sagas([first]))[first]
    trace_id = state["traceparent"].split("-")[1]
    assert page.locator("#trace").get_attribute("href") == TRACES.format(trace_id=trace_id)
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=False)

    page.click("#do-retry")  # confirmed in the dialog
    assert f"retry: saga {first} is compensating" in page.locator(".note").inner_text()

    # Bulk: every saga of the other customer parked at charge, counted first.
    base = running.local.url("console")
    bulk = page.context.new_page()
    bulk.on("dialog", lambda dialog: dialog.accept())
    bulk.goto(
        f"{base}/bulk?state=parked&step=charge&key=customer_id%3D{other_customer}&action=retry"
    )
    assert bulk.locator("#affected").inner_text().startswith("2 saga(s) will be affected")
    bulk.click("#bulk-confirm")
    assert "retry: 2 saga(s) acted on" in bulk.locator(".note").inner_text()
    assert {
        "actor": "alice",
        "action": "bulk retry",
        "target": f"state parked, step charge, key customer_id={other_customer}",
    } in sync(audit(running))

    running.start("payment")  # the cause is fixed: the refunds are confirmed
    # No reload: the live region follows the saga to its end.
    playwright_api.expect(page.locator("#status")).to_contain_text("compensated", timeout=60_000)
    assert "alice" in page.locator("#live").inner_text(), "the retry is in the history with alice"
    sync(until(running, [first, *others], "compensated", timeout_s=60))
    page.context.close()


def test_a_task_is_approved_by_its_assignee_and_refused_to_anyone_else(
    running: System, browser: Any
) -> None:
    trip = f"trip-{uuid.uuid4().hex[:6]}"
    sync(request_trip(running, trip))

    async def opened() -> bool:
        return trip in await tasks(running)

    sync(eventually(opened, timeout_s=60, what="the trip's approval task"))
    task_id = sync(tasks(running))[trip]["task_id"]
    target = "/tasks/" + task_id.replace("/", "%2F")

    director = signed_in(browser, running, "director-token")
    assert post(director, running, f"{target}/approve", {"reason": "mine now"}) == 403
    alice = signed_in(browser, running, "alice-token")
    assert post(alice, running, f"{target}/approve", {}) == 403
    assert sync(tasks(running))[trip]["status"] == "open"

    manager = signed_in(browser, running, "manager-token")
    manager.click("text=Tasks")
    row = manager.locator(f"tr:has-text('{task_id}')")
    row.locator("input[name=reason]").first.fill("within budget")
    row.locator("button:text('Approve')").click()
    assert f"task {task_id} approved" in manager.locator(".note").inner_text()
    decided = sync(tasks(running))[trip]
    assert (decided["status"], decided["decided_by"]) == ("approved", "manager")
    for page in (director, alice, manager):
        page.context.close()


def test_an_operator_redrives_a_dead_letter_to_its_topic(running: System, browser: Any) -> None:
    key = f"bad-{uuid.uuid4().hex[:6]}"
    topic = f"{running.prefix}inventory.events"

    async def publish_garbage() -> None:
        async with Publisher(running.settings) as publisher:
            await publisher.publish_raw(topic, key=key.encode(), value=b"not json", headers=[])

    sync(publish_garbage())

    async def dead_lettered() -> bool:
        records = await read_available(running.settings, f"{topic}.dlq", idle_s=0.5)
        return any(r.key == key.encode() for r in records)

    sync(eventually(dead_lettered, timeout_s=60, what="the garbage dead-lettered"))

    page = signed_in(browser, running, "alice-token")
    page.click("text=Dead letters")
    heading = re.compile(rf"^{re.escape(topic)}\.dlq \d+$")
    section = page.locator("section").filter(has=page.get_by_role("heading", name=heading))
    row = section.locator(f"tr:has-text('{key}')").first
    shown = row.inner_text()
    assert f"{topic}[" in shown, "where it came from"
    assert "MissingHeader" in shown and "missing required header 'ce_id'" in shown, "why"
    assert f"{running.prefix}" in shown.split(topic)[0], "the group that dead-lettered it"
    row.locator("input[type=checkbox]").check()
    section.locator("#redrive").click()
    assert "1 dead letter(s) redriven by alice" in page.locator(".note").inner_text()

    records = [r for r in sync(read_available(running.settings, topic)) if r.key == key.encode()]
    assert len(records) == 2, "the original and the redriven copy"
    assert records[1].value == b"not json"
    assert not [n for n, _ in records[1].headers if n.startswith("dlq_")]
    assert any(e["actor"] == "alice" and e["action"] == "redrive" for e in sync(audit(running)))
    page.context.close()


def test_a_viewer_sees_everything_and_the_server_refuses_their_actions(
    running: System, browser: Any
) -> None:
    saga_id = f"view-{uuid.uuid4().hex[:6]}"
    sync(place(running, saga_id, "customer-v"))

    async def started() -> bool:
        return saga_id in await running.sagas([saga_id])

    sync(eventually(started, timeout_s=60, what="the saga started"))
    page = signed_in(browser, running, "victor-token")
    page.fill("#f-key", saga_id)
    page.click("text=Find")
    page.click(f"a:text-is('{saga_id}')")
    assert page.locator("table.timeline tr:has-text('reserve')").count() == 1
    assert page.locator("#do-retry").count() == 0, "no buttons for a viewer"

    async def settled() -> bool:
        found = await running.statuses([saga_id])
        return found.get(saga_id) in ("parked", "compensated", "completed")

    sync(eventually(settled, timeout_s=90, what="the saga at rest"))
    before = sync(running.sagas([saga_id]))[saga_id]
    for path, form in (
        (f"/sagas/{saga_id}/resolve", {"reason": "by a viewer"}),
        (f"/sagas/{saga_id}/retry", {}),
        ("/bulk", {"action": "resolve", "reason": "all of them", "state": "completed"}),
        ("/dead-letters/redrive", {"id": f"{running.prefix}inventory.events.dlq:0:0"}),
    ):
        assert post(page, running, path, form) == 403, path
    assert sync(running.sagas([saga_id]))[saga_id] == before
    # Without Origin, a cookie's form post is refused even for an operator.
    alice = signed_in(browser, running, "alice-token")
    answer = alice.request.post(
        running.local.url("console") + f"/sagas/{saga_id}/retry", form={}, max_redirects=0
    )
    assert answer.status == 403
    # Signed out, nothing is shown.
    anonymous = browser.new_context().new_page()
    anonymous.goto(running.local.url("console") + "/sagas")
    assert anonymous.url.endswith("/sign-in")
    for p in (page, alice, anonymous):
        p.context.close()
