"""``make soak``: the order saga under steady load for 10 minutes; is memory flat?

Starts the embedded stack, the coordinator and the four step services, places
sagas at a steady rate, and prints every process's RSS at the start (after a
warm-up minute), every minute, and at the end, with the growth. Asserts
nothing; prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from pydantic import SecretStr

from saga.dev import DevStack
from saga.dev.system import LocalSystem
from saga.provisioning import ensure_topics
from saga.publisher import Publisher
from saga.settings import Settings
from tests.benchmarks.sagas import PROCESSES, Finished, order, system_env
from tests.system_helpers import ROOT, fresh_database


def rss_mb(system: LocalSystem) -> dict[str, float]:
    return {
        name: psutil.Process(system.running[name][0].pid).memory_info().rss / 2**20
        for name in PROCESSES
    }


async def soak(settings: Settings, logdir: Path, minutes: float, rate: float) -> None:
    prefix = f"s{uuid.uuid4().hex[:6]}."
    database = fresh_database(settings.database_url.get_secret_value())
    config = settings.model_copy(
        update={"topic_prefix": prefix, "database_url": SecretStr(database)}
    )
    system = LocalSystem(system_env(settings, prefix, database), logdir, cwd=ROOT)
    topic = f"{prefix}orders.events"
    await ensure_topics(config, [topic, f"{prefix}saga.events"])
    finished = Finished(config, f"{prefix}saga.events")
    try:
        for name in PROCESSES:
            await asyncio.to_thread(system.start, name)
        await finished.start()
        async with Publisher(config) as publisher:
            n = 0
            started = time.monotonic()
            warm_until = started + 60
            end = warm_until + minutes * 60
            first: dict[str, float] | None = None
            next_sample = warm_until
            while time.monotonic() < end:
                n += 1
                await publisher.publish(topic, order(f"soak-{n}", n))
                await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
                if time.monotonic() >= next_sample:
                    sample = rss_mb(system)
                    first = first or sample
                    minute = (time.monotonic() - warm_until) / 60
                    print(
                        f"minute {minute:4.1f}: "
                        + ", ".join(f"{k} {v:.0f} MB" for k, v in sample.items()),
                        flush=True,
                    )
                    next_sample += 60
            await finished.wait_for({f"soak-{i}" for i in range(1, n + 1)}, timeout_s=300)
        last = rss_mb(system)
        assert first is not None
        print(f"\n{n} sagas in {minutes:g} minutes at {rate:g}/s, all finished")
        print(f"{'process':<14} {'start MB':>9} {'end MB':>8} {'growth':>8}")
        for name in PROCESSES:
            growth = last[name] - first[name]
            print(f"{name:<14} {first[name]:>9.1f} {last[name]:>8.1f} {growth:>+8.1f}")
    finally:
        await finished.stop()
        system.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="sagas placed per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="saga-soak-") as tmp:
        stack = DevStack(Path(tmp) / "stack", detached=False)
        info = stack.up(kafka_port=None, postgres_port=None)
        try:
            settings = Settings(
                bootstrap_servers=info.bootstrap_servers,
                database_url=info.database_url,  # type: ignore[arg-type]
                enable_idempotence=False,
                fetch_max_wait_ms=5,
                topic_partitions=6,
                health_port=None,
            )
            logs = Path(tmp) / "logs"
            logs.mkdir()
            asyncio.run(soak(settings, logs, args.minutes, args.rate))
        finally:
            stack.down()


if __name__ == "__main__":
    main()
