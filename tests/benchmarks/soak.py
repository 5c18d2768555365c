"""``make soak``: the order saga under steady load for 10 minutes; is memory flat?

Starts the embedded stack, the coordinator and the four step services, places
sagas at a steady rate, and prints every process's RSS at the start (after a
warm-up minute), every minute, and at the end, with the growth over the whole
run and over its second half (flat memory grows early, while caches fill, and
then stops). Asserts nothing; prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from saga.kafka.publisher import Publisher
from saga.settings import Settings
from tests.benchmarks.sagas import PROCESSES, order, running_system
from tests.benchmarks.stack import embedded


async def soak(
    settings: Settings, logdir: Path, minutes: float, rate: float, *, trace_memory: bool = False
) -> None:
    async with running_system(settings, logdir, trace_memory=trace_memory) as running:
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
                    shown = ", ".join(f"{k} {v:.0f} MB" for k, v in sample.items())
                    print(f"minute {minute:4.1f}: {shown}", flush=True)
                    next_sample += 60
            await running.finished.wait_for({f"soak-{i}" for i in range(1, n + 1)}, 300)
        last = running.rss_mb()
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
        "--trace-memory",
        action="store_true",
        help="run every process under tracemalloc and print where its memory grew",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-soak-") as tmp, embedded(Path(tmp)) as settings:
        logs = Path(tmp) / "logs"
        logs.mkdir()
        asyncio.run(soak(settings, logs, args.minutes, args.rate, trace_memory=args.trace_memory))


if __name__ == "__main__":
    main()
