"""Create the topics a component needs, if they are missing.

>>> async def prepare(settings: Settings) -> None:
...     await ensure_topics(settings, ["orders.events", "inventory.commands"])

Existing topics are left as they are (their partition count is not changed:
that would move keys between partitions and break per-saga ordering).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from saga.kafka.config import client_kwargs
from saga.messages.topics import SECURITY_DEAD_LETTERS, dead_letter_topic, prefixed, validate_topic
from saga.settings import Settings

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


async def ensure_topics(
    settings: Settings,
    topics: Iterable[str],
    *,
    partitions: int | None = None,
    with_dead_letters: bool = True,
) -> list[str]:
    """Create each missing topic (and its ``.dlq``); return the names created."""
    wanted: list[str] = []
    if settings.require_signatures:  # where refused records go
        wanted.append(validate_topic(prefixed(settings.topic_prefix, SECURITY_DEAD_LETTERS)))
    for topic in topics:
        for name in (topic, dead_letter_topic(topic)) if with_dead_letters else (topic,):
            if name not in wanted:
                wanted.append(validate_topic(name))
    admin = AIOKafkaAdminClient(**client_kwargs(settings, f"{settings.client_id}-admin"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=partitions or settings.topic_partitions,
                    replication_factor=settings.topic_replication_factor,
                    # Room for our largest record plus batch framing, whatever the
                    # broker-wide default is.
                    topic_configs={"max.message.bytes": str(settings.max_message_bytes + 65_536)},
                )
                for name in missing
            ]
        )
        created: list[str] = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != _TOPIC_ALREADY_EXISTS:  # created meanwhile by someone else
                raise RuntimeError(f"could not create topic {name!r}: error {code}: {message}")
        await _wait_visible(admin, missing)
    finally:
        await admin.close()
    log.info("created topics %s", created)
    return created


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    rows = getattr(response, "topic_errors", [])
    return [(row[0], row[1], row[2] if len(row) > 2 else None) for row in rows]


async def _wait_visible(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 10
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if set(names) <= set(await admin.list_topics()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics {names} not visible after {timeout_s}s")
        await asyncio.sleep(0.05)
