"""Bad command-line input is a usage error naming the argument, never a traceback; an
operator action the coordinator refuses exits non-zero saying why in one line."""

from __future__ import annotations

import pytest

from saga.cli import main
from saga.cli.actions import Acted, report


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["list", "--limit", "-1"], "argument --limit: '-1': give a whole number from 1 to 100000"),
        (["list", "--limit", "0"], "argument --limit: '0': give a whole number from 1 to 100000"),
        (["list", "--older-than", "99999999d"], "argument --older-than: '99999999d': longer"),
        (["list", "--older-than", "soon"], "argument --older-than: 'soon': use e.g. 90s"),
    ],
)
def test_a_bad_list_argument_is_a_usage_error(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("saga list: error: ")
    assert says in error


@pytest.mark.parametrize("wait", ["-1", "301", "soon", "1e9"])
def test_a_bad_wait_is_a_usage_error(wait: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["retry", "o-1", "--wait", wait])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"saga retry: error: argument --wait: {wait!r}: give seconds from 0 to 300"


REFUSED = "resolve by bob (done): nothing to do, saga is completed already"
NO_STEP = "skip teleport by bob (x): saga order has no step 'teleport'"
STEPS = ("reserve", "charge")


@pytest.mark.parametrize(
    ("acted", "step", "code", "says"),
    [
        (Acted("o-1"), None, 2, "no saga 'o-1'"),
        (Acted("o-1", "completed", False, (REFUSED,), STEPS), None, 1, REFUSED),
        (Acted("o-1", "running", False, (NO_STEP,), STEPS), "teleport", 2, NO_STEP),
        (
            Acted("o-1", "parked", False, ("retry by bob:\nnothing  to do",), STEPS),
            None,
            1,
            "retry by bob: nothing to do",
        ),
    ],
)
def test_an_operator_action_that_is_refused_exits_non_zero_saying_why_in_one_line(
    acted: Acted, step: str | None, code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(acted, step=step) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"saga: error: {says}\n"


def test_an_operator_action_taken_exits_0_and_says_whether_the_coordinator_published_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    taken = Acted("o-1", "compensating", True, ("retry by bob",), STEPS, written=1, unsent=0)
    assert report(taken) == 0
    assert capsys.readouterr().out.splitlines() == [
        "retry by bob",
        "saga o-1: compensating",
        "1 message(s) published by the coordinator",
    ]
    waiting = Acted("o-1", "resolved", True, ("resolved by bob",), STEPS, written=1, unsent=1)
    assert report(waiting) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "queued: 1 of 1 message(s) wait in the coordinator's outbox;"
        " the coordinator publishes them, signed, as soon as it runs"
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SAGA_REQUIRE_SIGNATURES": "true"},
            "invalid settings: SAGA_REQUIRE_SIGNATURES needs SAGA_SIGNING_KEYS (or _FILE)",
        ),
        (
            {"SAGA_RELAY_INTERVAL_MS": "-3", "SAGA_DATABASE_URL": "postgresql://secret@x/db"},
            "invalid settings: SAGA_RELAY_INTERVAL_MS: Input should be greater than 0",
        ),
    ],
)
def test_invalid_settings_are_a_one_line_error_without_their_values(
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["resolve", "o-1", "--reason", "why"]) == 1
    assert capsys.readouterr().err == f"saga: error: {says}\n"
