"""Dead letters: read from the broker per topic, and redriven to where they came from.

Every ``<topic>.dlq`` of the system (its ``SAGA_TOPIC_PREFIX``) and the security dead
letters are read from the beginning by a consumer without a group, up to their end
offsets at the time of reading. A dead letter is redriven by publishing its original
key, value and headers (without the ``dlq_*`` headers the dead-lettering added) to
its original topic, and recording who did it in ``saga_audit``.

A signed record (``SAGA_REQUIRE_SIGNATURES``) gets its original signature back
(kept by the security dead letters as ``dlq_signature*``): the signature covers the
topic, key, value and headers, all restored, so it verifies. A consumer that still
remembers reading that record at its first position refuses the copy as a replay, and
it goes back to the security dead letters, reason ``replayed``; after that consumer
restarted, the redriven record is taken. A record whose value was left out for size
(``dlq_value_omitted``) cannot be redriven: it is refused with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from saga.kafka.config import client_kwargs
from saga.messages import headers as h
from saga.messages.topics import DLQ_SUFFIX, SECURITY_DEAD_LETTERS, prefixed
from saga.settings import Settings

#: Most dead letters read from one topic (the newest are kept).
MAX_PER_TOPIC = 5_000

#: A dead letter's own signature headers, replaced by the original's on redrive.
_SIGNATURE = (h.SIGNATURE, h.SIGNATURE_KEY_ID, h.SIGNATURE_ALGORITHM, h.SIGNATURE_NONCE)
_ORIGINAL_SIGNATURE = {
    h.DLQ_SIGNATURE: h.SIGNATURE,
    h.DLQ_SIGNATURE_KEY_ID: h.SIGNATURE_KEY_ID,
    h.DLQ_SIGNATURE_ALGORITHM: h.SIGNATURE_ALGORITHM,
    h.DLQ_SIGNATURE_NONCE: h.SIGNATURE_NONCE,
}

Headers = Sequence[tuple[str, bytes | None]]


class NotRedrivable(ValueError):
    """A dead letter that cannot go back as it came (its value was left out, or it
    says nothing of where it came from)."""


@dataclass(frozen=True)
class Letter:
    """A record on a dead-letter topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None = None

    @property
    def id(self) -> str:
        """``topic:partition:offset``: how the console and the CLI name it."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        for found, value in self.headers:
            if found == name and value is not None:
                return value.decode(errors="replace")
        return None

    @property
    def reason(self) -> str:
        return self.header(h.DLQ_REASON) or ""

    @property
    def error_type(self) -> str:
        return self.header(h.DLQ_ERROR_TYPE) or ""

    @property
    def group(self) -> str:
        return self.header(h.DLQ_GROUP) or ""

    @property
    def original(self) -> str:
        """Where it was first: ``topic[partition]@offset``."""
        return (
            f"{self.header(h.DLQ_TOPIC)}[{self.header(h.DLQ_PARTITION)}]"
            f"@{self.header(h.DLQ_OFFSET)}"
        )

    @property
    def saga_id(self) -> str | None:
        """The record's key: the saga id of a saga message."""
        return self.key.decode(errors="replace") if self.key else None

    @property
    def at(self) -> datetime | None:
        text = self.header(h.DLQ_TIME)
        if text:
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                pass
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC) if self.timestamp_ms else None


@dataclass(frozen=True)
class Redrive:
    """What redriving a letter publishes."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def redrive_of(letter: Letter) -> Redrive:
    """The original record of ``letter``: its topic, key, value and headers, without
    the ``dlq_*`` headers, with its original signature if it had one."""
    topic = letter.header(h.DLQ_TOPIC)
    if not topic:
        raise NotRedrivable(f"{letter.id}: no {h.DLQ_TOPIC} header, its topic is unknown")
    if letter.header(h.DLQ_VALUE_OMITTED) is not None:
        raise NotRedrivable(f"{letter.id}: its value was left out (over the size limit)")
    resigned = any(name in _ORIGINAL_SIGNATURE for name, _ in letter.headers)
    headers: list[tuple[str, bytes | None]] = []
    for name, value in letter.headers:
        if name in _ORIGINAL_SIGNATURE:
            headers.append((_ORIGINAL_SIGNATURE[name], value))
        elif name.startswith("dlq_") or (resigned and name in _SIGNATURE):
            continue
        else:
            headers.append((name, value))
    return Redrive(topic, letter.key, letter.value, headers)


def dead_letter_topics(all_topics: Iterable[str], prefix: str) -> list[str]:
    """The system's dead-letter topics among ``all_topics``."""
    security = prefixed(prefix, SECURITY_DEAD_LETTERS)
    return sorted(
        t for t in all_topics if t == security or (t.startswith(prefix) and t.endswith(DLQ_SUFFIX))
    )


async def read_letters(
    settings: Settings, topics: Sequence[str] | None = None, *, timeout_s: float = 20
) -> dict[str, list[Letter]]:
    """The dead letters on ``topics`` (default: every dead-letter topic), by topic,
    oldest first."""
    reader = AIOKafkaConsumer(
        **client_kwargs(settings, f"{settings.client_id}-dead-letters"),
        enable_auto_commit=False,
        fetch_max_wait_ms=min(settings.fetch_max_wait_ms, 100),
    )
    await reader.start()
    try:
        # Dead-letter topics only, whatever is asked for: the console's credentials may
        # read other topics, and a viewer must not read them through it.
        dead = dead_letter_topics(await reader.topics(), settings.topic_prefix)
        wanted = [t for t in topics if t in dead] if topics else dead
        found: dict[str, list[Letter]] = {t: [] for t in wanted}
        partitions = [
            TopicPartition(t, p)
            for t in wanted
            for p in sorted(reader.partitions_for_topic(t) or ())
        ]
        if not partitions:
            return found
        reader.assign(partitions)
        ends = await reader.end_offsets(partitions)
        starts = await reader.beginning_offsets(partitions)
        for tp in partitions:
            reader.seek(tp, max(starts[tp], ends[tp] - MAX_PER_TOPIC))
        left = {tp for tp in partitions if ends[tp] > starts[tp]}
        async with asyncio.timeout(timeout_s):
            while left:
                batches = await reader.getmany(*left, timeout_ms=200)
                for tp, records in batches.items():
                    for r in records:
                        if r.offset < ends[tp]:
                            found[tp.topic].append(
                                Letter(
                                    r.topic,
                                    r.partition,
                                    r.offset,
                                    r.key,
                                    r.value,
                                    tuple(r.headers),
                                    r.timestamp,
                                )
                            )
                for tp in list(left):
                    if await reader.position(tp) >= ends[tp]:
                        left.discard(tp)
    finally:
        await reader.stop()
    for letters in found.values():
        letters.sort(key=lambda x: (x.timestamp_ms or 0, x.partition, x.offset))
    return found


def parse_id(text: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` -> its parts; ``ValueError`` saying what is wrong."""
    topic, _, rest = text.strip().rpartition(":")
    topic, _, partition = topic.rpartition(":")
    if not topic or not partition.isdigit() or not rest.isdigit():
        raise ValueError(f"{text!r}: name a dead letter as TOPIC:PARTITION:OFFSET")
    return topic, int(partition), int(rest)


async def find_letters(settings: Settings, ids: Sequence[str]) -> list[Letter]:
    """The dead letters named by ``ids`` (``topic:partition:offset``); ``LookupError``
    naming the first that is not there."""
    wanted = [parse_id(i) for i in ids]
    found = await read_letters(settings, sorted({t for t, _, _ in wanted}))
    by_id = {letter.id: letter for letters in found.values() for letter in letters}
    out = []
    for topic, partition, offset in wanted:
        key = f"{topic}:{partition}:{offset}"
        if key not in by_id:
            raise LookupError(f"no dead letter {key}")
        out.append(by_id[key])
    return out
