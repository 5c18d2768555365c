"""When a service's delivery batches take a savepoint per delivery."""

from __future__ import annotations

from saga.participant.batches import CAREFUL_FOR_S, Carefulness


def careful(carefulness: Carefulness) -> bool:
    return carefulness.careful  # read afresh each time (no narrowing across calls)


def test_batches_take_savepoints_only_for_a_while_after_a_failure() -> None:
    now = [100.0]
    carefulness = Carefulness(clock=lambda: now[0])
    assert not careful(carefulness), "handlers succeed: no savepoints"
    carefulness.failed()
    assert careful(carefulness)
    now[0] += CAREFUL_FOR_S - 0.001
    assert careful(carefulness)
    now[0] += 0.002
    assert not careful(carefulness), "none again once the time is up"
    carefulness.failed()
    now[0] += 1
    carefulness.failed()  # a later failure extends it
    now[0] += CAREFUL_FOR_S - 0.5
    assert careful(carefulness)
