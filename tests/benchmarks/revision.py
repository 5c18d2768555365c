"""Another revision's source tree, for a before/after in one bench run (``--baseline REV``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.system_helpers import ROOT


@contextmanager
def source_tree(rev: str) -> Iterator[tuple[Path, str]]:
    """The files of ``rev`` (``git archive``) in a temporary directory, and its commit.

    Processes started there with it as their working directory import its ``saga``,
    ``services`` and ``contracts`` (the current directory comes first on their
    ``sys.path``, before the editable install): checked once, here. Removed on exit,
    whatever happens.
    """
    commit = resolve(rev)
    tmp = Path(tempfile.mkdtemp(prefix="saga-bench-rev-"))
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        subprocess.run(
            ["tar", "-x", "-C", str(tmp)],
            input=archive.stdout,
            check=True,
        )
        imported = imported_saga(tmp)
        if not imported.is_relative_to(tmp.resolve()):
            raise RuntimeError(f"a process in {tmp} imports saga from {imported}, not from {rev}")
        yield tmp, commit
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(rev: str) -> str:
    """The commit ``rev`` names; ``ValueError`` if it names none."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except subprocess.CalledProcessError:
        raise ValueError(f"{rev!r} names no commit of this repository") from None


def imported_saga(cwd: Path) -> Path:
    """Where ``saga`` comes from for a process started in ``cwd``."""
    done = subprocess.run(
        [sys.executable, "-c", "import saga; print(saga.__file__)"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip()).resolve()


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
