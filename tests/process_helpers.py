"""Run a test helper in its own process, read its lines, signal or kill it by pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """A child process whose stdout lines can be awaited."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def wait_for_line(self, line: str, timeout_s: float = 60) -> None:
        async with asyncio.timeout(timeout_s):
            while line not in self.lines:
                assert self.proc.stdout is not None
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(
                        f"exited ({self.proc.returncode}) before {line!r}: {self.lines}"
                    )
                self.lines.append(raw.decode().rstrip("\n"))

    async def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    async def wait(self, timeout_s: float = 60) -> int:
        async with asyncio.timeout(timeout_s):
            assert self.proc.stdout is not None
            async for raw in self.proc.stdout:
                self.lines.append(raw.decode().rstrip("\n"))
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def child(module: str, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Child]:
    """Run ``python -m module args``; SIGKILL it by pid on exit if it still runs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
        env={**os.environ, **env} if env is not None else None,
    )
    try:
        yield Child(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
