"""Which just-committed outbox rows go out at once, and which wait for an older one."""

from __future__ import annotations

from saga.messages.codec import EncodedRecord
from saga.outbox.send_order import SendOrder, Written


def row(row_id: int, key: bytes | None, *waits_for: int) -> Written:
    return Written(row_id, "t", EncodedRecord(key, b"v", []), waits_for)  # type: ignore[arg-type]


def ids(rows: list[Written]) -> list[int]:
    return [r.id for r in rows]


def test_rows_waiting_for_nothing_go_at_once_in_id_order() -> None:
    order = SendOrder()
    assert ids(order.admit([row(2, b"a"), row(3, None), row(1, b"b")])) == [1, 2, 3]
    assert order.in_flight == {1, 2, 3}


def test_a_row_goes_once_the_one_it_waits_for_is_handed_over_here() -> None:
    order = SendOrder()
    assert ids(order.admit([row(5, b"s", 4)])) == [], "4 is unsent and not ours"
    assert order.held == [5]
    # Another worker of this process commits and hands over 4: 5 comes along, after it.
    assert ids(order.admit([row(4, b"s")])) == [4, 5]
    assert order.held == []


def test_a_row_waits_for_the_acknowledgement_of_one_in_flight_in_another_handover() -> None:
    order = SendOrder()
    assert ids(order.admit([row(1, b"s")])) == [1]
    # 1 is with the producer, not yet acknowledged: should its handover fail, a 2
    # handed over behind it would reach the broker first.
    assert ids(order.admit([row(2, b"s", 1), row(3, b"t")])) == [3]
    assert order.held == [2]
    assert ids(order.admit()) == [], "nothing acknowledged yet"
    order.sent([1])
    assert ids(order.admit()) == [2]


def test_a_row_behind_a_failed_handover_stays_held_for_the_relay() -> None:
    order = SendOrder()
    order.admit([row(1, b"s")])
    order.admit([row(2, b"s", 1)])
    order.unsent([1])
    assert ids(order.admit()) == []
    assert order.held == [2]


def test_a_row_waiting_for_one_already_sent_here_goes_at_once() -> None:
    order = SendOrder()
    order.admit([row(1, b"s")])
    order.sent([1])
    assert order.in_flight == frozenset()
    assert ids(order.admit([row(2, b"s", 1)])) == [2]


def test_later_rows_of_a_held_key_wait_too_and_other_keys_do_not() -> None:
    order = SendOrder()
    # 11 and 12 were written together (12 does not list 11) but keep their order.
    assert ids(order.admit([row(11, b"s", 10), row(12, b"s", 10), row(13, b"t")])) == [13]
    assert order.held == [11, 12]
    assert ids(order.admit([row(10, b"s")])) == [10, 11, 12]


def test_a_failed_handover_is_not_waited_on_and_the_relay_takes_held_rows() -> None:
    order = SendOrder()
    order.admit([row(1, b"s")])
    order.unsent([1])  # the publish failed: row 1 stays in the outbox
    assert ids(order.admit([row(2, b"s", 1)])) == []
    order.taken([1, 2])  # the relay sends both, in id order
    assert order.held == []
    assert order.in_flight == {1, 2}


def test_a_row_held_too_long_is_left_to_the_relay() -> None:
    now = [0.0]
    order = SendOrder(hold_s=5, clock=lambda: now[0])
    order.admit([row(2, b"s", 1)])
    now[0] = 6.0
    assert ids(order.admit([row(3, b"t")])) == [3]
    assert order.held == [], "forgotten here; still unsent in the outbox"


def test_only_a_bounded_number_of_sent_ids_is_remembered() -> None:
    order = SendOrder(remember=2)
    order.admit([row(1, b"a"), row(2, b"b"), row(3, b"c")])
    order.sent([1, 2, 3])
    assert ids(order.admit([row(4, b"a", 1)])) == [], "1 is forgotten: wait for the relay"
    assert ids(order.admit([row(5, b"c", 3)])) == [5]
