"""Parallel branches, a join, an alternative, an optional step, human approvals and a
definition change, with real processes (the trip saga of ``tests.trips``).

Flight and hotel are booked at once; the coordinator publishes ``TripBooked`` when
both are; a manager approves (SLA 3 s, then the director; rejected after 20 s, long
enough for the restart below to escalate first); billing charges; loyalty awards
points (optional). The coordinator is SIGKILLed
while approval tasks are open and comes back, after their SLA passed, with
version 2 of the definition loaded next to version 1.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg

from saga.kafka.publisher import Publisher
from saga.messages.base import Message
from saga.messages.envelope import Envelope
from saga.messages.topics import events_topic
from tests.conftest import Infra
from tests.http_helpers import call_json
from tests.integration.test_coordinator import launch, until
from tests.kafka_helpers import eventually, read_available
from tests.system_helpers import System
from tests.trips.messages import TripRequested

SERVICES = ("flights", "hotels", "billing", "loyalty")


async def request_trip(running: System, trip_id: str) -> None:
    envelope: Envelope[Message] = Envelope(
        payload=TripRequested(trip_id=trip_id),
        saga_id=trip_id,
        saga_type="trip",
        source="/services/trips",
    )
    async with Publisher(running.settings) as publisher:
        await publisher.publish(f"{running.prefix}{events_topic('trips')}", envelope)


async def query(running: System, sql: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(running.database_url)
    try:
        return [dict(row) for row in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def tasks(running: System) -> dict[str, dict[str, Any]]:
    rows = await query(running, "SELECT * FROM saga_tasks")
    return {row["saga_id"]: row for row in rows}


async def bookings(running: System, trip_id: str) -> dict[str, bool]:
    rows = await query(
        running, "SELECT kind, cancelled FROM trip_bookings WHERE trip_id = $1", trip_id
    )
    return {row["kind"]: row["cancelled"] for row in rows}


async def test_branches_alternatives_approvals_and_versions(infra: Infra, tmp_path: Path) -> None:
    with launch(infra, tmp_path, env={"SAGA_DEFINITIONS": "tests.trips.sagas:v1"}) as running:
        for name in SERVICES:
            running.start(name, module=["tests.trips.services", name])
        running.start("coordinator")
        run = uuid.uuid4().hex[:6]
        ok, alt, opt = f"ok-{run}", f"alt-{run}.fail-hotel", f"opt-{run}.fail-points"
        late, esc, dead = f"late-{run}.fail-flight.slow-hotel", f"esc-{run}", f"dead-{run}"
        for trip in (ok, alt, opt, late):
            await request_trip(running, trip)

        async def opened(*trips: str) -> bool:
            return set(trips) <= set(await tasks(running))

        await eventually(lambda: opened(ok, alt, opt), what="an approval task per booked trip")
        for trip in (ok, alt, opt):
            done = await asyncio.to_thread(
                running.cli, "tasks", "approve", f"{trip}/approve", "--by", "manager"
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "approved by manager" in done.stdout
        again = await asyncio.to_thread(
            running.cli, "tasks", "reject", f"{ok}/approve", "--reason", "changed my mind"
        )
        assert again.returncode == 2 and "approved already" in again.stdout

        for trip in (esc, dead):
            await request_trip(running, trip)
        await eventually(lambda: opened(esc, dead), what="tasks for esc and dead")
        running.kill("coordinator", signal.SIGKILL)  # with their SLA timers pending
        before = await tasks(running)
        assert [(before[t]["assignee"], before[t]["escalations"]) for t in (esc, dead)] == [
            ("manager", 0),
            ("manager", 0),
        ], "not escalated before the kill"
        await asyncio.sleep(3.5)  # the SLA of esc and dead passes while it is down
        running.env["SAGA_DEFINITIONS"] = "tests.trips.sagas:both"
        running.start("coordinator")  # now with version 2 next to version 1

        async def escalated() -> bool:
            return bool((await tasks(running))[esc]["assignee"] == "director")

        await eventually(escalated, what="the esc task escalated after the restart")
        saga_events = await read_available(running.settings, f"{running.prefix}saga.events")

        def published(kind: str) -> list[dict[str, Any]]:
            return [
                json.loads(r.value or b"{}")
                for r in saga_events
                if dict(r.headers).get("ce_type") == kind.encode()
            ]

        assert {e["task_id"] for e in published("saga.TaskOpened")} >= {
            f"{t}/approve" for t in (ok, alt, opt, esc, dead)
        }
        escalations = published("saga.TaskEscalated")
        assert {"from_assignee": "manager", "to_assignee": "director"}.items() <= next(
            e for e in escalations if e["task_id"] == f"{esc}/approve"
        ).items()
        coordinator = running.local.url("coordinator")
        approve = f"{coordinator}/tasks/{quote(f'{esc}/approve', safe='')}/approve"

        async def decide(body: dict[str, Any], token: str | None) -> tuple[int, Any]:
            return await asyncio.to_thread(call_json, approve, "POST", body, token=token)

        # The decider is the token's subject, and only the current assignee may decide.
        assert (await decide({"reason": "urgent"}, None))[0] == 401
        assert (await decide({"reason": "urgent"}, "test-viewer"))[0] == 403, "no approver role"
        status, answer = await decide({"reason": "mine"}, "test-manager")
        assert status == 403 and "assigned to someone else" in answer["error"], answer
        status, answer = await decide({"by": "director", "reason": "urgent"}, "test-manager")
        assert status == 400 and "send no 'by'" in answer["error"], "the body names nobody"
        assert (await tasks(running))[esc]["status"] == "open", "refusals decided nothing"
        status, answer = await decide({"reason": "urgent"}, "test-director")
        assert status == 200 and answer["decision"] == "approved", answer
        assert answer["decided_by"] == "director"
        assert (await tasks(running))[esc]["decided_by"] == "director"
        actors = await query(
            running, "SELECT actor FROM saga_log WHERE saga_id = $1 AND kind = 'operator'", esc
        )
        assert [row["actor"] for row in actors] == ["director"], "audited with the subject"
        listed = await asyncio.to_thread(call_json, f"{coordinator}/tasks?assignee=director")
        assert [t["task_id"] for t in listed[1]] == [f"{dead}/approve"], "dead still waits"

        new = f"new-{run}"
        await request_trip(running, new)

        async def ceo_task() -> bool:
            return bool((await tasks(running)).get(new, {}).get("assignee") == "ceo")

        await eventually(ceo_task, what="a version-2 task for the CEO")
        done = await asyncio.to_thread(
            running.cli, "tasks", "approve", f"{new}/approve", "--by", "ceo"
        )
        assert done.returncode == 0, done.stdout + done.stderr

        await until(running, [ok, alt, opt, esc, new], "completed")
        await until(running, [late, dead], "compensated", timeout_s=60)
        states = await running.sagas([ok, alt, opt, late, esc, dead, new])
        versions = {trip: s.get("definition_version") for trip, s in states.items()}
        assert versions == {**dict.fromkeys((ok, alt, opt, late, esc, dead), 1), new: 2}

        # The alternative: no hotel, a hostel instead, and the saga went on.
        assert states[alt]["steps"]["hotel"]["status"] == "failed"
        assert states[alt]["steps"]["hostel"]["status"] == "completed"
        assert await bookings(running, alt) == dict.fromkeys(
            ("flight", "hostel", "charge", "points"), False
        )
        # The optional step failed; the saga completed.
        assert states[opt]["steps"]["points"]["status"] == "failed"
        # The hotel completed after the flight failed: undone once it answered.
        assert await running.commands_sent(late) == ["hotels.CancelHotel"]
        assert await bookings(running, late) == {"hotel": True}
        # Past the final deadline: rejected, both branches undone.
        decided = await tasks(running)
        assert (decided[dead]["status"], decided[dead]["decided_by"]) == ("rejected", "deadline")
        assert await bookings(running, dead) == {"flight": True, "hotel": True}
        # Audited: who decided, and each change of the task.
        assert (decided[esc]["status"], decided[esc]["decided_by"]) == ("approved", "director")
        history = [h["change"] for h in json.loads(decided[esc]["history"])]
        assert history == ["opened", "escalated", "approved"]
        actors = await query(
            running,
            "SELECT actor FROM saga_log WHERE saga_id = $1 AND kind = 'operator'",
            esc,
        )
        assert [a["actor"] for a in actors] == ["director"]

        diff = await asyncio.to_thread(running.cli, "definition", "diff", "trip@1", "trip@2")
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert "~ version: 1 -> 2" in diff.stdout
        assert "approval by manager > director" in diff.stdout
        assert "approval by ceo" in diff.stdout
