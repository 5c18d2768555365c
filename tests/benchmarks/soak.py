"""``make soak``: the order saga under steady load for 10 minutes; is memory flat?

Starts the embedded stack, the coordinator and the four step services, places
sagas at a steady rate, and prints every process's RSS at the start (after a
warm-up minute), every minute, and at the end, with the growth over the whole
run and over its second half (flat memory grows early, while caches fill, and
then stops). Asserts nothing; prints figures.

Each minute it also prints what history costs: the coordinator's CPU time per saga
finished in that minute, the database's size and the rows of ``saga_instances`` and
``saga_log``; at the end, whether each was flat over the second half.
``--retention-minutes M`` has the coordinator delete finished sagas, and each
service the ids of the messages it handled, M minutes after, pruning every 30 s
(``SAGA_*_SAGA_RETENTION_HOURS``, ``SAGA_INBOX_RETENTION_HOURS``,
``SAGA_PRUNE_INTERVAL_MS``): with it, rows and CPU per saga stay flat; without it
(the defaults keep sagas and message ids a week), they grow with the run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

from saga.kafka.publisher import Publisher
from saga.settings import Settings
from tests.benchmarks.sagas import PROCESSES, Running, order, running_system
from tests.benchmarks.stack import embedded

#: How often every process prunes with --retention-minutes.
PRUNE_S = 30

#: How much a figure may move over the second half and still be called flat: a
#: tenth of it, or this much (whichever is more).
FLAT: dict[str, tuple[float, str]] = {
    "coordinator MB": (5, "MB"),
    "CPU ms/saga": (0.5, "ms"),
    "database MB": (2, "MB"),
    "saga_instances": (200, "rows"),
    "saga_log": (2_000, "rows"),
}


@dataclass
class Costs:
    """The coordinator's CPU time and the finished sagas at the last reading."""

    cpu_s: float
    finished: int

    @staticmethod
    def cpu_s_of(running: Running) -> float:
        times = psutil.Process(running.system.running["coordinator"][0].pid).cpu_times()
        return float(times.user + times.system)

    async def read(self, running: Running, db: asyncpg.Connection) -> dict[str, float]:
        """What history costs now: CPU per saga finished since the last reading, the
        database's size and the rows of the saga tables."""
        cpu_s, finished = self.cpu_s_of(running), len(running.finished.seen)
        done = finished - self.finished
        per_saga = (cpu_s - self.cpu_s) * 1000 / done if done else float("nan")
        self.cpu_s, self.finished = cpu_s, finished
        row = await db.fetchrow(
            "SELECT pg_database_size(current_database()) AS size,"
            " (SELECT count(*) FROM saga_instances) AS instances,"
            " (SELECT count(*) FROM saga_log) AS log"
        )
        assert row is not None
        return {
            "CPU ms/saga": per_saga,
            "database MB": row["size"] / 2**20,
            "saga_instances": row["instances"],
            "saga_log": row["log"],
        }


def verdict(name: str, first: float, last: float, slack: float = 0) -> str:
    """``flat`` when ``last`` is within a tenth of ``first`` (or FLAT's absolute
    tolerance, or ``slack``), else ``grew`` or ``fell``."""
    tolerance = max(abs(first) * 0.1, FLAT[name][0], slack)
    if abs(last - first) <= tolerance:
        return "flat"
    return "grew" if last > first else "fell"


def shown(name: str, value: float) -> str:
    if name == "CPU ms/saga":
        return f"{value:.2f} ms"
    if name.endswith("MB"):
        return f"{value:.1f} MB"
    return f"{value:.0f}"


async def soak(
    settings: Settings,
    logdir: Path,
    minutes: float,
    rate: float,
    *,
    trace_memory: bool = False,
    retention_minutes: float | None = None,
) -> None:
    # Every process prunes on the interval: the coordinator its finished sagas, each
    # service its inbox (handled message ids, kept as long as the sagas here).
    env = (
        {
            "SAGA_FINISHED_SAGA_RETENTION_HOURS": str(retention_minutes / 60),
            "SAGA_RESOLVED_SAGA_RETENTION_HOURS": str(retention_minutes / 60),
            "SAGA_INBOX_RETENTION_HOURS": str(retention_minutes / 60),
            "SAGA_PRUNE_INTERVAL_MS": str(PRUNE_S * 1000),
        }
        if retention_minutes is not None
        else None
    )
    history: list[dict[str, float]] = []
    async with running_system(settings, logdir, trace_memory=trace_memory, env=env) as running:
        db = await asyncpg.connect(running.config.database_url.get_secret_value())
        costs = Costs(Costs.cpu_s_of(running), 0)

        async def reading(minute: float) -> None:
            figures = await costs.read(running, db)
            history.append(
                {"minute": minute, "coordinator MB": running.rss_mb()["coordinator"], **figures}
            )
            print(
                f"minute {minute:4.1f}: "
                + ", ".join(f"{k} {shown(k, v)}" for k, v in figures.items()),
                flush=True,
            )

        async with Publisher(running.config) as publisher:
            n = 0
            started = time.monotonic()
            warm_until = started + 60
            end = warm_until + minutes * 60
            samples: list[dict[str, float]] = []
            next_sample = warm_until
            while time.monotonic() < end:
                # Every tick, what is due by the clock: the rate holds whatever a publish takes.
                due = int((time.monotonic() - started) * rate)
                batch = [order(f"soak-{i}", i) for i in range(n + 1, due + 1)]
                if batch:
                    await publisher.publish_many([(running.topic, e) for e in batch])
                    n = due
                await asyncio.sleep(0.1)
                if time.monotonic() >= next_sample:
                    sample = running.rss_mb()
                    samples.append(sample)
                    minute = (time.monotonic() - warm_until) / 60
                    rss = ", ".join(f"{k} {v:.0f} MB" for k, v in sample.items())
                    print(f"minute {minute:4.1f}: {rss}", flush=True)
                    await reading(minute)
                    next_sample += 60
            if history[-1]["minute"] < minutes - 0.5:  # the last minute's reading, if missed
                await reading((time.monotonic() - warm_until) / 60)
            await running.finished.wait_for({f"soak-{i}" for i in range(1, n + 1)}, 300)
        last = running.rss_mb()
        await db.close()
    assert samples
    first, middle = samples[0], samples[len(samples) // 2]
    placed_rate = n / (minutes * 60 + 60)
    print(
        f"\n{n} sagas in {minutes:g} minutes after a warm-up minute: {placed_rate:.0f}/s placed"
        f" (asked for {rate:g}/s), all finished"
    )
    print(
        f"{'process':<14} {'start MB':>9} {'middle MB':>10} {'end MB':>8} {'growth':>8}"
        f" {'2nd half':>9}"
    )
    for name in PROCESSES:
        print(
            f"{name:<14} {first[name]:>9.1f} {middle[name]:>10.1f} {last[name]:>8.1f}"
            f" {last[name] - first[name]:>+8.1f} {last[name] - middle[name]:>+9.1f}"
        )
    kept = f"kept {retention_minutes:g} minutes" if retention_minutes else "kept (no retention)"
    half = history[len(history) // 2 :]
    print(
        f"\nover the second half (minute {half[0]['minute']:.1f} to {half[-1]['minute']:.1f};"
        f" finished sagas {kept}):"
    )
    # The rows of the sagas of one prune interval (and a quarter) come and go with
    # each pass: a reading may fall just before a pass or just after it.
    per_saga = max(h["saga_log"] / max(1.0, h["saga_instances"]) for h in history)
    sawtooth = rate * PRUNE_S * 1.25
    slack = (
        {"saga_instances": sawtooth, "saga_log": sawtooth * per_saga} if retention_minutes else {}
    )
    for name in FLAT:
        first_value, last_value = half[0][name], half[-1][name]
        print(
            f"{name:<15} {shown(name, first_value):>10} -> {shown(name, last_value):>10}"
            f"  {verdict(name, first_value, last_value, slack.get(name, 0))}"
        )
    if trace_memory:
        for name in PROCESSES:
            report = logdir / f"{name}.memory"
            if report.exists():
                print(f"\n--- {name}: where traced memory grew\n{report.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="sagas placed per second")
    parser.add_argument(
        "--retention-minutes",
        type=float,
        help="the coordinator deletes finished sagas, and each service its handled"
        " message ids, this long after (pruning every 30 s); default: the settings' (a week)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="run every process under tracemalloc and print where its memory grew",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-soak-") as tmp, embedded(Path(tmp)) as settings:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        asyncio.run(
            soak(
                settings,
                logs,
                args.minutes,
                args.rate,
                trace_memory=args.trace_memory,
                retention_minutes=args.retention_minutes,
            )
        )


if __name__ == "__main__":
    main()
