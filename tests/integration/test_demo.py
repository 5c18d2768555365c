"""`saga demo` (what `make demo` runs) succeeds and leaves no process running."""

from __future__ import annotations

import re
import subprocess
import sys

import psutil


def test_demo_round_trips_upcasts_dead_letters_and_stops_everything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "saga.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, result.stdout + result.stderr
    pids = [int(p) for p in re.findall(r"(?:broker|postgres) +pid (\d+)", out)]
    assert len(pids) == 2
    assert "SAGA_ENABLE_IDEMPOTENCE=false" in out
    assert "consumer handled orders.OrderPlaced (schema v2) saga=order-1" in out
    assert "consumer handled orders.OrderPlaced (schema v2) saga=order-2" in out
    assert "'amount_cents': 700" in out, "the version-1 payload was upcast"
    assert "dlq_reason: NotJson" not in out
    assert "dlq_reason: record value is not JSON" in out
    assert "demo finished; nothing left running" in out
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
