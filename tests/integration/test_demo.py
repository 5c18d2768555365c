"""`make demo` (`python -m services.demo`): a real saga system, then nothing left running."""

from __future__ import annotations

import re
import subprocess
import sys

import psutil


def step_line(out: str, saga: str, step: str) -> list[str]:
    block = out.split(f"saga      {saga}", 1)[1].split("\n\n", 1)[0]
    return next(line.split()[:2] for line in block.splitlines() if line.startswith(step + " "))


def test_demo_completes_compensates_times_out_shows_a_trace_then_stops_everything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    pids = [int(p) for p in re.findall(r"^  \w+ +pid (\d+)", out, re.M)]
    assert len(pids) == 9, "broker, postgres, coordinator, five services and the console"
    assert re.search(r"^  console +http://127\.0\.0\.1:\d+/  \(sign in with \S+\)$", out, re.M)
    assert "progress: " in out

    summary = re.search(r"^summary: (.*)$", out, re.M)
    assert summary is not None, out
    counts = dict((state, int(n)) for n, state in re.findall(r"(\d+) (\w+)", summary.group(1)))
    assert counts["completed"] >= 1 and counts["compensated"] >= 4, summary.group(0)
    assert sum(counts.values()) == 20, "every order of the batch ended"
    assert "compensated because step reserve failed: 1" in out  # the SKU that always fails
    assert "compensated because step ship timed out: 1" in out  # the step that never answers
    for step in ("reserve", "charge", "ship", "notify", "saga"):
        assert re.search(rf"^{step} +\d+ +[\d.]+ +[\d.]+ +[\d.]+$", out, re.M), step

    [nowhere] = re.findall(r"placed (nowhere-\S+) ", out)
    assert f"saga      {nowhere}\ntype      order\nstate     compensated" in out
    assert step_line(out, nowhere, "ship") == ["ship", "failed"]
    assert step_line(out, nowhere, "charge") == ["charge", "compensated"]
    assert step_line(out, nowhere, "reserve") == ["reserve", "compensated"]
    trace_id = re.search(r"^trace id  ([0-9a-f]{32})$", out, re.M)
    assert trace_id is not None
    tree = out.split(f"its trace {trace_id.group(1)}: ", 1)[1]
    for span in (
        "POST /orders  [orders]",
        "process orders.events  [inventory]",
        "compensate charge  [coordinator]",
        "process payment.commands  [payment]",
        "process inventory.commands  [inventory]",
        "process saga.events  [orders]",
    ):
        assert span in tree, span

    assert "demo finished; nothing left running" in out
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
