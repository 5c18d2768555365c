"""Which finished sagas are deleted when, and ``saga purge`` refusing before it touches
a database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from saga.cli import main
from saga.cli.purge import age_text
from saga.coordinator.retention import SagaRetention, not_finished, prunable, prune_sagas
from saga.coordinator.state import FINISHED
from saga.settings import Settings

WEEK, MONTH = timedelta(days=7), timedelta(days=30)
RETENTION = SagaRetention(finished=WEEK, resolved=MONTH)


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        ("completed", WEEK),
        ("compensated", WEEK),
        ("resolved", MONTH),  # closed by a person: looked at again more often
        ("running", None),
        ("compensating", None),
        ("parked", None),  # waits for an operator, however old
    ],
)
def test_a_saga_is_kept_by_its_status(status: str, kept: timedelta | None) -> None:
    assert RETENTION.kept_for(status) == kept


def test_every_finished_status_has_a_retention_and_no_other() -> None:
    assert RETENTION.by_status() == {"completed": WEEK, "compensated": WEEK, "resolved": MONTH}
    assert set(RETENTION.by_status()) == FINISHED
    assert not_finished(["completed", "parked", "running"]) == ["parked", "running"]


def test_the_retention_comes_from_the_settings_and_is_off_with_pruning() -> None:
    settings = Settings(
        finished_saga_retention_hours=2,
        resolved_saga_retention_hours=48,
        prune_interval_ms=30_000,
    )
    assert SagaRetention.of(settings) == SagaRetention(
        finished=timedelta(hours=2), resolved=timedelta(days=2), every=timedelta(seconds=30)
    )
    assert SagaRetention.of(Settings(prune_interval_ms=0)) is None
    defaults = SagaRetention.of(Settings())
    assert defaults is not None
    assert (defaults.finished, defaults.resolved) == (WEEK, MONTH)


@pytest.mark.parametrize("call", [prunable, prune_sagas])
async def test_a_running_or_parked_saga_is_never_asked_to_be_pruned(call: object) -> None:
    with pytest.raises(ValueError, match="only finished sagas are pruned, not parked"):
        await call(None, {"completed": WEEK, "parked": WEEK})  # type: ignore[operator]


def test_purge_without_dry_run_or_yes_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purge", "--older-than", "7d"]) == 1
    err = capsys.readouterr().err
    assert "purge deletes sagas for good: --dry-run to count them, --yes to delete them" in err


@pytest.mark.parametrize("status", ["running", "parked", "compensating", "nonsense"])
def test_purge_refuses_a_status_that_is_not_finished(
    status: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["purge", "--older-than", "7d", "--status", "completed", "--status", status]) == 2
    err = capsys.readouterr().err
    assert f"saga: error: {status}: not a finished saga's status" in err


def test_purge_needs_an_age_it_understands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["purge", "--older-than", "a week", "--dry-run"])
    assert exited.value.code == 2
    assert "argument --older-than: 'a week': use e.g. 90s" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(0), "0s"),
    ],
)
def test_an_age_is_shown_as_the_command_takes_it(age: timedelta, text: str) -> None:
    assert age_text(age) == text
