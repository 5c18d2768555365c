"""``make bench``: the saga system beside the physical floor and its peers, in one run.

Starts the embedded broker and PostgreSQL once, then measures, one after the
other on this machine:

* the floor: a raw aiokafka chain of 4 hops (no saga logic);
* ours: the 4-step order saga through 4 service processes and the coordinator;
  and the coordinator alone on a backlog (events/s);
* peers doing the same 4 trivial steps, each in its own process: FastStream
  (same broker), DBOS (same PostgreSQL), Temporal (its dev server). A peer
  that is not installed (``pip install -e '.[bench]'``) is a row saying so.

All of it ``--runs`` times (3), interleaved, so that a slow minute of the
machine does not decide a row: each figure is the median of its runs, and the
ratios are taken between those medians. Prints a table with the ratios, and
writes ``bench-results/results.json`` (every run's rows too) and
``bench-results/results.png``. Asserts nothing: the targets are printed as met
or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saga.settings import Settings
from tests.benchmarks import coordinator, floor, hops, sagas
from tests.benchmarks.figures import Figures
from tests.benchmarks.stack import embedded
from tests.system_helpers import ROOT, fresh_database

TARGET_SAGAS_PER_S = 1000
TARGET_SHARE_OF_FLOOR = 0.25
TARGET_P50_TIMES_FLOOR = 2.0


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``args.runs`` rounds of every row on one stack; each figure is the median of its runs."""
    with embedded(workdir) as settings:
        logdir = workdir / "logs"
        logdir.mkdir()
        runs: list[list[Figures]] = []
        hop_runs: list[hops.Measured] = []
        for number in range(1, args.runs + 1):
            say(f"run {number} of {args.runs}")
            runs.append(await one_run(args, settings, logdir, hop_runs))
    results = report([median(row) for row in zip(*runs, strict=True)])
    results["runs"] = [[asdict(r) for r in rows] for rows in runs]
    if hop_runs:
        results["hops"] = hops.result_of(hop_runs)
    return results


async def one_run(
    args: argparse.Namespace, settings: Settings, logdir: Path, hop_runs: list[hops.Measured]
) -> list[Figures]:
    rows: list[Figures] = []
    say("floor: raw aiokafka chain ...")
    rows.append(await floor.measure(settings, args.count, args.rounds))
    say("ours: order saga through processes ...")
    ours = await sagas.measure(settings, logdir, args.count, args.rounds, args.failures)
    say("ours: coordinator on a backlog ...")
    ours.extra["coordinator_events_per_s"] = await coordinator.events_per_second(
        settings, args.count
    )
    rows.append(ours)
    rows += await hops.after_ours(args, settings, logdir, hop_runs)
    if not args.no_peers:
        peer_db = fresh_database(settings.database_url.get_secret_value())
        for module, extra in (
            ("faststream_chain", ["--kafka", settings.bootstrap_servers]),
            ("dbos_workflow", ["--database", peer_db]),
            ("temporal_workflow", []),
        ):
            say(f"peer: {module} ...")
            rows.append(peer(module, [*extra, "--count", str(args.peer_count)], args.rounds))
    return rows


def median(runs: Sequence[Figures]) -> Figures:
    """One row from several runs of it: the median of each figure (missing ones left out)."""

    def mid(values: Iterable[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    keys = {key for r in runs for key in r.extra}
    extra = {key: mid(r.extra.get(key) for r in runs) for key in sorted(keys)}
    return Figures(
        runs[0].name,
        mid(r.throughput for r in runs),
        mid(r.p50_ms for r in runs),
        mid(r.p99_ms for r in runs),
        {key: value for key, value in extra.items() if value is not None},
        next((r.note for r in runs if r.note), ""),
    )


def peer(module: str, argv: list[str], rounds: int) -> Figures:
    """Run one peer in its own process; its figures, or a row saying why there are none."""
    command = [sys.executable, "-m", f"tests.benchmarks.peers.{module}", *argv]
    command += ["--rounds", str(min(rounds, 100))]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired:
        return Figures(module, note="not measured: timed out after 900 s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "ModuleNotFoundError" in done.stderr:
            last = f"{last} (pip install -e '.[bench]')"
        return Figures(module, note=f"not measured: {last[:160]}")
    return Figures(**json.loads(lines[-1]))


def report(rows: list[Figures]) -> dict[str, Any]:
    floor_row, ours = rows[0], rows[1]
    ratios: dict[str, float | None] = {
        "ours/floor throughput": _ratio(ours.throughput, floor_row.throughput),
        "ours/floor p50": _ratio(ours.p50_ms, floor_row.p50_ms),
    }
    ratios.update(hops.tracing_ratios(rows))
    for row in (r for r in rows[2:] if not r.name.startswith("ours")):
        ratios[f"ours/{row.name.split(',')[0]} throughput"] = _ratio(
            ours.throughput, row.throughput
        )
        ratios[f"ours/{row.name.split(',')[0]} p50"] = _ratio(ours.p50_ms, row.p50_ms)
    targets = {
        f"sustained >= {TARGET_SAGAS_PER_S} sagas/s": (ours.throughput or 0) >= TARGET_SAGAS_PER_S,
        f">= {TARGET_SHARE_OF_FLOOR} of the floor": (ratios["ours/floor throughput"] or 0)
        >= TARGET_SHARE_OF_FLOOR,
        f"p50 <= {TARGET_P50_TIMES_FLOOR}x the floor's": (ratios["ours/floor p50"] or 99)
        <= TARGET_P50_TIMES_FLOOR,
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "targets": targets,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def table(results: dict[str, Any]) -> str:
    def num(value: float | None, fmt: str = "{:,.0f}") -> str:
        return "-" if value is None else fmt.format(value)

    lines = [
        f"{results['date']}  {results['machine']['cores']} cores  {results['machine']['cpu']}"
        f"  (median of {len(results.get('runs', [])) or 1} run(s) per figure)",
        "",
        f"{'system (4 trivial steps)':<46} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}  note",
    ]
    for row in results["rows"]:
        lines.append(
            f"{row['name']:<46} {num(row['throughput']):>9} {num(row['p50_ms'], '{:.1f}'):>8}"
            f" {num(row['p99_ms'], '{:.1f}'):>8}  {row['note']}"
        )
    ours = results["rows"][1]["extra"]
    lines += [
        "",
        f"ours: failure to compensated p50 {num(ours.get('compensate_p50_ms'), '{:.1f}')} ms,"
        f" p99 {num(ours.get('compensate_p99_ms'), '{:.1f}')} ms;"
        f" coordinator {num(ours.get('coordinator_events_per_s'))} events/s;"
        f" completed {num(100 * ours.get('completed_share', 0), '{:.1f}')}%",
        "ours: RSS MB "
        + ", ".join(
            f"{k.removeprefix('rss_mb_')} {v:.0f}" for k, v in ours.items() if k.startswith("rss")
        ),
        "",
    ]
    lines += [f"{name:<40} {num(value, '{:.2f}')}" for name, value in results["ratios"].items()]
    lines.append("")
    lines += [
        f"target {name}: {'met' if ok else 'MISSED'}" for name, ok in results["targets"].items()
    ]
    if "hops" in results:
        lines += ["", hops.render(results["hops"])]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in results["rows"] if r["throughput"]]
    names = [hops.label(r["name"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh(names, [r["throughput"] for r in rows], color="#4477aa")
    left.set_xscale("log")
    left.set_xlabel("completed per second, many in flight (log)")
    left.invert_yaxis()
    right.barh(names, [r["p50_ms"] for r in rows], color="#66ccee", label="p50")
    right.barh(
        names,
        [r["p99_ms"] - r["p50_ms"] for r in rows],
        left=[r["p50_ms"] for r in rows],
        color="#ccbb44",
        label="p99",
    )
    right.set_xlabel("one at a time, ms")
    right.legend()
    right.invert_yaxis()
    machine_ = results["machine"]
    fig.suptitle(f"4 trivial steps, {results['date'][:10]}, {machine_['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="chains/sagas in flight")
    parser.add_argument("--rounds", type=int, default=200, help="one-at-a-time samples")
    parser.add_argument("--failures", type=int, default=30, help="sagas that compensate")
    parser.add_argument("--peer-count", type=int, default=500, help="workflows per peer")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="rounds; figures are their medians")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    hops.add_arguments(parser)
    args = parser.parse_args()
    # Client noise when the floor's consumers stop mid-commit: not a figure.
    for noisy in ("aiokafka", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    args.out.mkdir(exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print(table(results))
    drawn = chart(results, args.out / "results.png")
    print()
    print(
        f"wrote {args.out / 'results.json'}" + (f" and {args.out / 'results.png'}" if drawn else "")
    )


if __name__ == "__main__":
    main()
