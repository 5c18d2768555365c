"""What people do from the console and the CLI: act on sagas (one, or every saga a
filter finds), decide tasks, redrive dead letters. All of it audited with who.

A saga action is the CLI's (:func:`saga.cli.actions.act`): the coordinator's own
logic on its database, the person in the saga log, what it sends in the outbox for
the running coordinator to publish. A bulk action acts on each saga the filter finds,
one at a time, and records the whole in ``saga_audit``; so does each redrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saga.cli.actions import Acted, act
from saga.console import queries
from saga.console.dead_letters import Letter, redrive_of
from saga.console.queries import SagaFilter
from saga.coordinator.apply import Coordinator
from saga.kafka.publisher import Publisher
from saga.settings import Settings

#: The actions on a saga, and whether each needs a reason (kept in the saga log).
ACTIONS: dict[str, bool] = {"retry": False, "skip": True, "resolve": True, "cancel": True}


class Refused(ValueError):
    """An action asked for wrongly (an unknown action, no step to skip, no reason)."""


def action_name(action: str, step: str | None) -> str:
    """The coordinator's name of an action: ``retry``, ``skip:<step>``, ..."""
    if action not in ACTIONS:
        raise Refused(f"no action {action!r}; one of {', '.join(ACTIONS)}")
    if action == "skip":
        if not step:
            raise Refused("skip needs the step whose compensation is not needed")
        return f"skip:{step}"
    return action


def check_reason(action: str, reason: str | None) -> str | None:
    reason = " ".join((reason or "").split())[:500] or None
    if ACTIONS.get(action) and not reason:
        raise Refused(f"{action} needs a reason (kept in the saga log)")
    return reason


async def act_on_saga(
    coordinator: Coordinator,
    saga_id: str,
    action: str,
    *,
    actor: str,
    step: str | None = None,
    reason: str | None = None,
    wait_s: float = 2.0,
) -> Acted:
    """One saga: the same path as ``saga retry|skip|resolve|cancel``."""
    name = action_name(action, step)
    return await act(
        coordinator,
        saga_id,
        name,
        actor=actor,
        reason=check_reason(action, reason),
        wait_s=wait_s,
    )


@dataclass(frozen=True)
class BulkResult:
    applied: list[str]
    refused: list[tuple[str, str]]


async def act_in_bulk(
    coordinator: Coordinator,
    wanted: SagaFilter,
    action: str,
    *,
    actor: str,
    step: str | None = None,
    reason: str | None = None,
    expected: int | None = None,
) -> BulkResult:
    """``action`` on every saga ``wanted`` finds (skip: at ``step``, else the filter's).
    ``expected``: how many the person was shown; refused if the filter now finds more
    or fewer (sagas moved meanwhile), before anything is done."""
    name = action_name(action, step or wanted.step)
    reason = check_reason(action, reason)
    async with coordinator.pool.acquire() as connection:
        ids = await queries.matching_ids(
            connection, wanted, queries.search_fields(coordinator.definitions.values())
        )
    if expected is not None and len(ids) != expected:
        raise Refused(
            f"the filter now finds {len(ids)} saga(s), not the {expected} shown: look again"
        )
    applied, refused = [], []
    for saga_id in ids:
        acted = await act(coordinator, saga_id, name, actor=actor, reason=reason, wait_s=0)
        if acted.applied:
            applied.append(saga_id)
        else:
            refused.append((saga_id, "; ".join(acted.notes) or f"saga is {acted.status}"))
    async with coordinator.pool.acquire() as connection:
        await queries.audit(
            connection,
            actor,
            f"bulk {name}",
            wanted.describe(),
            {"reason": reason, "applied": applied, "refused": [i for i, _ in refused]},
        )
    return BulkResult(applied, refused)


async def redrive(
    settings: Settings, pool: object, letters: Sequence[Letter], *, actor: str
) -> list[str]:
    """Publish each letter's original record to its original topic; audit each. The
    ids redriven, in order (``NotRedrivable`` before anything is sent)."""
    records = [(letter, redrive_of(letter)) for letter in letters]
    done = []
    async with Publisher(settings, client_id=f"{settings.client_id}-redrive") as publisher:
        for letter, record in records:
            sent = await publisher.publish_raw(
                record.topic, key=record.key, value=record.value, headers=record.headers
            )
            async with pool.acquire() as connection:  # type: ignore[attr-defined]
                await queries.audit(
                    connection,
                    actor,
                    "redrive",
                    letter.id,
                    {
                        "to": f"{sent.topic}[{sent.partition}]@{sent.offset}",
                        "saga_id": letter.saga_id,
                        "reason": letter.reason,
                    },
                )
            done.append(letter.id)
    return done
