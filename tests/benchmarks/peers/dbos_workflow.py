"""Peer: DBOS, a workflow of 4 steps on the same PostgreSQL (its own database).

``python -m tests.benchmarks.peers.dbos_workflow --database URL`` prints its
figures as the last line (JSON). ``--meter``: what else to meter with this process
(:mod:`tests.benchmarks.cost`); its PostgreSQL figures are the database's.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from dbos import DBOS, DBOSConfig

from tests.benchmarks.cost import Meter, Watched
from tests.benchmarks.figures import Figures, latencies


@DBOS.step()
async def step_one(x: int) -> int:
    return x + 1


@DBOS.step()
async def step_two(x: int) -> int:
    return x + 1


@DBOS.step()
async def step_three(x: int) -> int:
    return x + 1


@DBOS.step()
async def step_four(x: int) -> int:
    return x + 1


@DBOS.workflow()
async def four_steps(x: int) -> int:
    return await step_four(await step_three(await step_two(await step_one(x))))


async def measure(
    database_url: str, count: int, rounds: int, *, meter: Meter, idle_s: float = 0
) -> Figures:
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": database_url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    try:
        await four_steps(0)  # warm-up
        idle = await meter.idle(idle_s) if idle_s > 0 else {}
        await meter.start()
        start = time.perf_counter()
        handles = [await DBOS.start_workflow_async(four_steps, i) for i in range(count)]
        for handle in handles:
            await handle.get_result()
        throughput = count / (time.perf_counter() - start)
        cost = await meter.stop(count)
        samples = []
        for i in range(rounds):
            sent = time.perf_counter()
            await four_steps(i)
            samples.append(time.perf_counter() - sent)
    finally:
        DBOS.destroy()
    figures = latencies("DBOS 3.4, 4-step workflow", samples, throughput)
    figures.extra = {**cost, **idle}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--meter", default="", help="processes to meter too (JSON)")
    parser.add_argument("--idle-seconds", type=float, default=0)
    args = parser.parse_args()
    meter = Meter.from_json(args.meter, Watched("process", os.getpid()))
    meter.database = args.database
    figures = asyncio.run(
        measure(args.database, args.count, args.rounds, meter=meter, idle_s=args.idle_seconds)
    )
    figures.print_json()


if __name__ == "__main__":
    main()
