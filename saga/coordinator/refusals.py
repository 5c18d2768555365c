"""Facts whose decision raises: retried for a while, since the saga's events read on other
partitions may change the outcome; then refused (set aside), so the rest of their batch,
the timers and the partition go on. A decision that keeps raising is a defect, not a
passing trouble.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from opentelemetry import metrics

from saga.coordinator.decision import Incoming
from saga.errors import SagaError
from saga.kafka.dead_letter import describe_error

log = logging.getLogger(__name__)
_refusals = metrics.get_meter("saga").create_counter(
    "saga.coordinator.refused", description="Facts whose decision raised (set aside)"
)
T = TypeVar("T")

#: How long a fact's decision keeps raising before the fact is refused. Until then its
#: batch is retried: events of the saga read on other partitions may change the outcome.
REFUSE_AFTER_S = 30.0
#: A fact that raised and has not raised again for this long after its ``REFUSE_AFTER_S``
#: is forgotten (its partition went to another instance, say); seen once more, it starts
#: over.
RAISING_FORGOTTEN_S = 600.0


class DecisionError(SagaError):
    """Deciding on one fact raised: a defect of a definition or of the coordinator,
    not of the database. That fact is set aside (refused); the others of its batch
    are decided without it."""

    def __init__(self, incoming: Incoming, error: Exception) -> None:
        self.message_id = incoming.message_id
        super().__init__(
            f"deciding on {incoming.type} for saga {incoming.saga_id} failed:"
            f" {describe_error(error)}"
        )


async def setting_aside(
    run: Callable[[dict[str, DecisionError]], Awaitable[T]],
    raising: dict[str, float],
    refuse_after_s: float,
) -> tuple[T, dict[str, DecisionError]]:
    """``run(refused)`` until no decision raises. A fact whose decision has raised for
    ``refuse_after_s`` is added to ``refused`` (those ``run`` sets aside) and it runs
    again; before that, the error goes to the caller, who retries later.

    ``raising`` (message id -> since when, monotonic seconds) outlives the call: it is
    how long a fact has been raising across the caller's retries."""
    refused: dict[str, DecisionError] = {}
    while True:
        try:
            return await run(refused), refused
        except DecisionError as error:
            if error.message_id in refused:
                raise  # not set aside: running again would raise again
            now = time.monotonic()
            forgotten = now - refuse_after_s - RAISING_FORGOTTEN_S
            for message_id in [m for m, first in raising.items() if first < forgotten]:
                del raising[message_id]
            since = raising.setdefault(error.message_id, now)
            if now - since < refuse_after_s:
                raise
            del raising[error.message_id]
            log.error("%s; the fact is refused, the rest of its batch goes on", error)
            _refusals.add(1)
            refused[error.message_id] = error


def decided(raising: dict[str, float], message_ids: Iterable[str]) -> None:
    """These facts were decided (or refused) at last: no longer raising."""
    if raising:
        for message_id in message_ids:
            raising.pop(message_id, None)
