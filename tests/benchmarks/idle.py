"""What the example system costs while idle, and what its polling buys in latency.

One embedded stack (broker + PostgreSQL) serves all runs; each run starts the order
system (coordinator + 4 step services) with topics and a database
of its own, then, per process (CPU time from psutil, which drifts far less than
throughput on a shared machine):

* idle: % of a core over ``--idle-seconds`` with nothing to do (after
  ``--settle-seconds`` of quiet), then again with the
  bench's own ``Finished`` reader paused (the difference is that reader's cost,
  client and broker);
* the first saga after each idle window: publish to finished, ms;
* load: CPU ms per saga over ``--count`` sagas all in flight;
* one at a time: p50 over ``--rounds`` sagas;
* waking up: ``--wake-cycles`` times, ``--wake-idle-seconds`` of idle, then one saga
  (what an idle spell costs the first saga after it).

A variant is ``name:SAGA_X=1,SAGA_Y=2``; ``SAGA_FETCH_MAX_WAIT_MS`` and
``SAGA_TOPIC_PARTITIONS`` also set the bench's reader and the created topics. Variants
run interleaved (A B A B ...) so that drift shows::

    python -m tests.benchmarks.idle --repeat 2 p6:SAGA_TOPIC_PARTITIONS=6 \\
        p1:SAGA_TOPIC_PARTITIONS=1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psutil

from saga.kafka.publisher import Publisher
from saga.settings import Settings
from tests.benchmarks.sagas import PROCESSES, Running, order, running_system
from tests.benchmarks.stack import embedded

Cpu = dict[str, float]


def _tree_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in family:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _own_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class Meter:
    """CPU seconds so far of every process of the run."""

    def __init__(self, running: Running, broker: int, postgres: int) -> None:
        self.pids = {name: running.system.running[name][0].pid for name in PROCESSES}
        self.pids["broker"] = broker
        self.pids["postgres"] = postgres

    def read(self) -> Cpu:
        out = {name: _tree_seconds(pid) for name, pid in self.pids.items()}
        out["bench"] = _own_seconds()
        return out

    @staticmethod
    def delta(before: Cpu, after: Cpu) -> Cpu:
        return {name: after[name] - before[name] for name in before}


@contextmanager
def _environment(extra: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _one(running: Running, publisher: Publisher, saga_id: str, i: int) -> float:
    sent = time.perf_counter()
    await publisher.publish(running.topic, order(saga_id, i))
    await running.finished.wait_for({saga_id})
    return (running.finished.seen[saga_id][1] - sent) * 1000


async def run_variant(
    base: Settings,
    workdir: Path,
    env: Mapping[str, str],
    *,
    idle_s: float,
    count: int,
    rounds: int,
    wakes: tuple[int, float] = (0, 0.0),
    settle_s: float = 1.0,
) -> dict[str, object]:
    """One run of one variant on the running stack (topics and database of its own)."""
    with _environment(env), tempfile.TemporaryDirectory(prefix="logs-", dir=workdir) as logs:
        settings = base.model_copy(
            update={
                "fetch_max_wait_ms": int(env.get("SAGA_FETCH_MAX_WAIT_MS", "5")),
                "topic_partitions": int(env.get("SAGA_TOPIC_PARTITIONS", "6")),
            }
        )
        async with running_system(settings, Path(logs)) as running:
            meter = Meter(running, *_stack_pids(workdir))
            return await _measure(
                running,
                meter,
                idle_s=idle_s,
                count=count,
                rounds=rounds,
                wakes=wakes,
                settle_s=settle_s,
            )


def _stack_pids(workdir: Path) -> tuple[int, int]:
    state = json.loads((workdir / "stack" / "stack.json").read_text())
    return int(state["broker"]["pid"]), int(state["postgres"]["pid"])


async def _measure(
    running: Running,
    meter: Meter,
    *,
    idle_s: float,
    count: int,
    rounds: int,
    wakes: tuple[int, float],
    settle_s: float,
) -> dict[str, object]:
    async with Publisher(running.config) as publisher:
        warm = {f"warm-{i}" for i in range(50)}
        await publisher.publish_many([(running.topic, order(s, i)) for i, s in enumerate(warm)])
        await running.finished.wait_for(warm)
        await asyncio.sleep(settle_s)

        before = meter.read()
        await asyncio.sleep(idle_s)
        idle = _percent(Meter.delta(before, meter.read()), idle_s)
        first = [await _one(running, publisher, "first-0", 0)]

        reader = running.finished.consumer
        await asyncio.sleep(settle_s)
        reader.pause(*reader.assignment())
        before = meter.read()
        await asyncio.sleep(idle_s)
        unread = _percent(Meter.delta(before, meter.read()), idle_s)
        reader.resume(*reader.assignment())
        first.append(await _one(running, publisher, "first-1", 1))

        ids = [f"load-{i}" for i in range(count)]
        before = meter.read()
        for chunk in range(0, count, 500):
            batch = ids[chunk : chunk + 500]
            await publisher.publish_many(
                [(running.topic, order(s, chunk + i)) for i, s in enumerate(batch)]
            )
        await running.finished.wait_for(set(ids))
        per_saga = {k: v * 1000 / count for k, v in Meter.delta(before, meter.read()).items()}

        samples = [await _one(running, publisher, f"one-{i}", i) for i in range(rounds)]

        woken = []
        cycles, quiet_s = wakes
        for i in range(cycles):
            await asyncio.sleep(quiet_s)
            woken.append(await _one(running, publisher, f"wake-{i}", i))
    return {
        "wake_ms": woken,
        "idle_pct": idle,
        "idle_pct_without_reader": unread,
        "first_after_idle_ms": first,
        "cpu_ms_per_saga": per_saga,
        "p50_ms": statistics.median(samples),
        "one_ms": [round(x) for x in samples],
    }


def _percent(seconds: Cpu, window_s: float) -> Cpu:
    return {name: round(value / window_s * 100, 2) for name, value in seconds.items()}


def _parse(variant: str) -> tuple[str, dict[str, str]]:
    name, _, spec = variant.partition(":")
    env = dict(item.split("=", 1) for item in spec.split(",") if item)
    return name, env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("variants", nargs="+", help="name:SAGA_X=1,SAGA_Y=2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--settle-seconds", type=float, default=1, help="quiet before each idle window"
    )
    parser.add_argument("--wake-cycles", type=int, default=0)
    parser.add_argument("--wake-idle-seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    variants = [_parse(v) for v in args.variants]
    with tempfile.TemporaryDirectory(prefix="saga-idle-") as tmp, embedded(Path(tmp)) as base:
        for repeat in range(args.repeat):
            for name, env in variants:
                figures = asyncio.run(
                    run_variant(
                        base,
                        Path(tmp),
                        env,
                        idle_s=args.idle_seconds,
                        count=args.count,
                        rounds=args.rounds,
                        wakes=(args.wake_cycles, args.wake_idle_seconds),
                        settle_s=args.settle_seconds,
                    )
                )
                line = json.dumps({"variant": name, "repeat": repeat, "env": env, **figures})
                print(line, flush=True)
                if args.out is not None:
                    with args.out.open("a") as out:
                        out.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
