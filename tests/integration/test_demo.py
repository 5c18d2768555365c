"""`saga demo` (what `make demo` runs): a real saga system, then nothing left running."""

from __future__ import annotations

import re
import subprocess
import sys

import psutil


def step_line(out: str, saga: str, step: str) -> list[str]:
    block = out.split(f"saga      {saga}", 1)[1].split("\n\n", 1)[0]
    return next(line.split()[:2] for line in block.splitlines() if line.startswith(step + " "))


def test_demo_runs_a_saga_system_that_completes_and_compensates_then_stops_everything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "saga.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    pids = [int(p) for p in re.findall(r"^  \w+ +pid (\d+)", out, re.M)]
    assert len(pids) == 6, "broker, postgres, coordinator and three services"
    ok, declined, nowhere = re.findall(r"placed (\S+) ", out)
    assert re.search(rf"saga      {ok}\ntype      order\nstate     completed", out)
    assert f"saga      {declined}\ntype      order\nstate     compensated" in out
    assert step_line(out, declined, "charge") == ["charge", "failed"]
    assert step_line(out, declined, "reserve") == ["reserve", "compensated"]
    assert step_line(out, nowhere, "ship") == ["ship", "failed"]
    assert step_line(out, nowhere, "charge") == ["charge", "compensated"]
    assert step_line(out, nowhere, "reserve") == ["reserve", "compensated"]
    assert "demo finished; nothing left running" in out
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
