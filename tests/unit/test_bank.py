"""The payment service's stand-in card processor: idempotent, refunds once, bounded."""

from __future__ import annotations

import pytest

from services.payment.bank import Bank, CardDeclined


async def test_a_retried_charge_is_one_charge_and_a_refund_happens_once() -> None:
    bank = Bank(decline_above_cents=1_000)
    first = await bank.charge("k-1", "o-1", 500)
    assert await bank.charge("k-1", "o-1", 500) == first
    assert len(bank) == 1
    assert await bank.refund("o-1") is True
    assert await bank.refund("o-1") is False, "refunded before"
    assert await bank.refund("o-2") is False, "never charged"
    with pytest.raises(CardDeclined):
        await bank.charge("k-2", "o-2", 1_001)


async def test_only_the_latest_charges_are_remembered() -> None:
    bank = Bank(remember=3)
    for n in range(10):
        await bank.charge(f"k-{n}", f"o-{n}", 100)
    assert len(bank) == 3
    assert await bank.refund("o-9") is True
    assert await bank.refund("o-0") is False, "forgotten"
    charge_id = await bank.charge("k-8", "o-8", 100)
    assert await bank.charge("k-8", "o-8", 100) == charge_id
