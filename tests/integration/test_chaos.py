"""The short chaos run (``make chaos`` is the full one): it must find no violation.

It runs as its own process with a broker and a PostgreSQL of its own (both
stopped by pid on any outcome): 200 order sagas with 10% injected step failures,
delayed and duplicated deliveries and poison records, while step services are
SIGKILLed and restarted, the coordinator is SIGKILLed twice and PostgreSQL is
restarted once.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.system_helpers import ROOT


def test_the_short_chaos_run_loses_nothing_and_doubles_nothing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.run", "--short", "--seed", "2026"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    summary = dict(re.findall(r"^([a-z_]+) +(\d+)$", out, flags=re.MULTILINE))
    assert summary["sagas"] == "200"
    assert int(summary["completed"]) + int(summary["compensated"]) == 200
    assert int(summary["compensated"]) > 0, "injected failures compensated some"
    assert summary["coordinator_kills"] == "2"
    assert summary["postgres_restarts"] == "1"
    assert int(summary["kills"]) >= 3
    assert summary["poison"] == summary["dead_lettered_poison"] != "0"
    assert "every saga terminal; none lost; no double effect" in out
