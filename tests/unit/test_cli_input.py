"""Bad command-line input is a usage error naming the argument, never a traceback."""

from __future__ import annotations

import pytest

from saga.cli import main


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
