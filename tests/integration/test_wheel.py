"""The built wheel is the library alone: ``saga`` and its command, no example packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def test_the_wheel_installs_saga_and_its_command_and_no_example(tmp_path: Path) -> None:
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path, ROOT, cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("kafka_saga-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"saga"}
    assert "saga/py.typed" in zipfile.ZipFile(wheel).namelist()
    assert {"saga/console/static/console.js", "saga/console/static/console.css"} <= set(
        zipfile.ZipFile(wheel).namelist()
    ), "the console's assets are package data"

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    imported = run(
        python, "-c", "import saga; print(saga.__version__, len(saga.__all__))", cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    helped = run(venv / "bin" / "saga", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "run a step service" in helped.stdout
    for example in ("contracts", "services"):
        absent = run(python, "-c", f"import {example}", cwd=tmp_path)
        assert absent.returncode == 1
        assert f"No module named '{example}'" in absent.stderr
