"""Timer keys: typed in the decision code, stored and compared as ``kind:step`` strings."""

from __future__ import annotations

import pytest

from saga.coordinator.timer_keys import TimerKey


@pytest.mark.parametrize(
    "name",
    [
        "step-timeout:charge",
        "compensation-timeout:reserve",
        "compensation-retry:reserve",
        "approval-sla:approve",
        "approval-deadline:approve",
        "deadline",
    ],
)
def test_a_stored_name_parses_to_a_key_that_formats_back_to_it(name: str) -> None:
    key = TimerKey.parse(name)
    assert key is not None
    assert str(key) == name


@pytest.mark.parametrize(
    "name", ["nap:charge", "deadline:charge", "step-timeout", "step-timeout:", "", ":charge"]
)
def test_a_name_that_is_no_timer_of_the_coordinator_parses_to_none(name: str) -> None:
    assert TimerKey.parse(name) is None
