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

Each row also says where the CPU goes (:mod:`tests.benchmarks.cost`): ms of CPU
per completed saga by process while many are in flight, each process's CPU when
idle, and PostgreSQL's statements, commits and WAL per saga.
``--bootstrap-servers`` / ``--database-url`` run it on a cluster and a PostgreSQL
server of one's own; ``--baseline REV`` runs ours a second time from revision
REV's source, interleaved, for a before/after in one run.
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
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks import breakdown, coordinator, floor, hops, sagas
from tests.benchmarks.cost import Meter, Watched
from tests.benchmarks.figures import Figures
from tests.benchmarks.revision import resolve, source_tree
from tests.benchmarks.stack import Stack, bench_stack
from tests.system_helpers import ROOT, fresh_database


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """``args.runs`` rounds of every row on one stack; each figure is the median of its runs."""
    with (
        bench_stack(
            workdir,
            bootstrap_servers=args.bootstrap_servers,
            database_url=args.database_url,
            partitions=args.partitions,
            idempotence=args.idempotence,
            fetch_max_wait_ms=args.fetch_max_wait_ms,
        ) as stack,
        ExitStack() as cleanup,
    ):
        baseline: tuple[Path, str] | None = None
        if args.baseline:
            baseline = cleanup.enter_context(source_tree(args.baseline))
            say(f"ours at {args.baseline}: {baseline[1][:10]}'s source in {baseline[0]}")
        logdir = workdir / "logs"
        logdir.mkdir()
        runs: list[list[Figures]] = []
        hop_runs: list[hops.Measured] = []
        for number in range(1, args.runs + 1):
            say(f"run {number} of {args.runs}")
            runs.append(await one_run(args, stack, logdir, baseline, hop_runs))
    results = report([median(row) for row in zip(*runs, strict=True)])
    results["runs"] = [[asdict(r) for r in rows] for rows in runs]
    results["stack"] = {
        "bootstrap_servers": stack.settings.bootstrap_servers,
        "embedded_broker": stack.broker_pid is not None,
        "embedded_postgres": stack.postgres_pid is not None,
        "enable_idempotence": stack.settings.enable_idempotence,
        "fetch_max_wait_ms": stack.settings.fetch_max_wait_ms,
        "partitions": stack.settings.topic_partitions,
    }
    if baseline is not None:
        results["baseline"] = {"rev": args.baseline, "commit": baseline[1]}
    if hop_runs:
        results["hops"] = hops.result_of(hop_runs)
    return results


async def one_run(
    args: argparse.Namespace,
    stack: Stack,
    logdir: Path,
    baseline: tuple[Path, str] | None,
    hop_runs: list[hops.Measured],
) -> list[Figures]:
    settings = stack.settings
    broker = Watched("broker", stack.broker_pid)
    postgres = Watched("postgres", stack.postgres_pid, tree=True)
    idle_s = args.idle_seconds
    rows: list[Figures] = []
    say("floor: raw aiokafka chain ...")
    rows.append(
        await floor.measure(settings, args.count, args.rounds, servers=[broker], idle_s=idle_s)
    )
    say("ours: order saga through processes ...")
    ours = await sagas.measure(
        settings,
        logdir,
        args.count,
        args.rounds,
        args.failures,
        servers=[broker, postgres],
        idle_s=idle_s,
    )
    say("ours: coordinator on a backlog ...")
    ours.extra["coordinator_events_per_s"] = await coordinator.events_per_second(
        settings, args.count
    )
    rows.append(ours)
    if baseline is not None:
        tree, commit = baseline
        say(f"ours at {args.baseline} ({commit[:10]}): order saga through processes ...")
        try:
            rows.append(
                await sagas.measure(
                    settings,
                    logdir,
                    args.count,
                    args.rounds,
                    args.failures,
                    servers=[broker, postgres],
                    idle_s=idle_s,
                    cwd=tree,
                    name=f"ours at {args.baseline}: order saga, 4 services + coordinator",
                )
            )
        except Exception as e:
            rows.append(Figures(f"ours at {args.baseline}", note=f"not measured: {e!r}"[:200]))
    rows += await hops.after_ours(args, settings, logdir, hop_runs, servers=[broker, postgres])
    if not args.no_peers:
        peer_db = fresh_database(settings.database_url.get_secret_value())
        faststream = ["--kafka", settings.bootstrap_servers, "--partitions"]
        faststream += [str(settings.topic_partitions), "--fetch-max-wait-ms"]
        faststream += [str(settings.fetch_max_wait_ms)]
        faststream += ["--idempotence"] if settings.enable_idempotence else []
        for module, extra, meter in (
            ("faststream_chain", faststream, Meter([broker])),
            ("dbos_workflow", ["--database", peer_db], Meter([postgres], peer_db)),
            ("temporal_workflow", [], Meter([])),
        ):
            say(f"peer: {module} ...")
            extra += ["--meter", meter.to_json(), "--idle-seconds", str(idle_s)]
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
        "ours/floor CPU per unit": _ratio(
            ours.extra.get("cpu_ms_total"), floor_row.extra.get("cpu_ms_total")
        ),
    }
    ratios.update(hops.tracing_ratios(rows))
    for row in (r for r in rows[2:] if not r.name.startswith("ours, traced")):
        ratios[f"ours/{row.name.split(',')[0]} throughput"] = _ratio(
            ours.throughput, row.throughput
        )
        ratios[f"ours/{row.name.split(',')[0]} p50"] = _ratio(ours.p50_ms, row.p50_ms)
        ratios[f"ours/{row.name.split(',')[0]} CPU per unit"] = _ratio(
            ours.extra.get("cpu_ms_total"), row.extra.get("cpu_ms_total")
        )
    targets = breakdown.targets(asdict(floor_row), asdict(ours))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "targets": {t.name: t.as_dict() for t in targets},
        "baseline_cpu_ms_per_saga": breakdown.BASELINE_CPU_MS_PER_SAGA,
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
        f" p99 {num(ours.get('compensate_p99_ms'), '{:.1f}')} ms"
        " (undos at once: p50"
        f" {num(ours.get('compensate_parallel_p50_ms'), '{:.1f}')} ms, p99"
        f" {num(ours.get('compensate_parallel_p99_ms'), '{:.1f}')} ms);"
        f" coordinator {num(ours.get('coordinator_events_per_s'))} events/s;"
        f" completed {num(100 * ours.get('completed_share', 0), '{:.1f}')}%",
        "ours: RSS MB "
        + ", ".join(
            f"{k.removeprefix('rss_mb_')} {v:.0f}" for k, v in ours.items() if k.startswith("rss")
        ),
        "",
    ]
    lines += breakdown.cpu_lines(results["rows"])
    lines.append("")
    lines += [f"{name:<40} {num(value, '{:.2f}')}" for name, value in results["ratios"].items()]
    lines.append("")
    lines += breakdown.target_lines(
        [breakdown.Target.from_dict(name, t) for name, t in results["targets"].items()]
    )
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
    fig, (left, right, cpu) = plt.subplots(1, 3, figsize=(18, 4.5))
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
    breakdown.cpu_panel(cpu, results["rows"])
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
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10,
        help="how long each system's idle CPU is sampled (0: not at all)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("SAGA_BENCH_BOOTSTRAP_SERVERS"),
        help="a Kafka cluster to run on instead of the embedded broker",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SAGA_BENCH_DATABASE_URL"),
        help="a PostgreSQL server (URL of a database whose user may create databases) to"
        " run on instead of the embedded one",
    )
    parser.add_argument("--partitions", type=int, default=6, help="of each topic created")
    parser.add_argument(
        "--idempotence",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="idempotent producers (default: on with --bootstrap-servers, else off)",
    )
    parser.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=None,
        help="consumers' fetch wait (default: the product's with --bootstrap-servers, else 5)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run ours from git revision REV's source, interleaved (before/after)",
    )
    hops.add_arguments(parser)
    args = parser.parse_args()
    if args.baseline:
        try:
            resolve(args.baseline)
        except ValueError as e:
            parser.error(str(e))
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
