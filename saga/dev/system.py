"""A local saga system: the coordinator and step services as processes.

Used by the example's demo and the tests. Each process gets the shared ``SAGA_*``
environment plus its own health port (the console: its own port), logs to
``<logdir>/<name>.log``, and is ready when its ``/readyz`` answers 200. Every process
is stopped by its pid.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from saga.dev.processes import die_with_parent, free_port
from saga.errors import DevStackError


class LocalSystem:
    """Processes of one saga system: ``processes`` says what ``python -m`` runs for each name,
    e.g. ``{"coordinator": ["saga.cli", "coordinator"], "payment": ["myapp.payment"]}``."""

    def __init__(
        self,
        env: dict[str, str],
        logdir: Path,
        *,
        cwd: Path | None = None,
        processes: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.env = env
        self.logdir = logdir
        self.cwd = cwd
        self.processes = dict(processes or {})
        self.running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(
        self,
        name: str,
        *,
        instance: str = "",
        timeout_s: float = 60,
        env: dict[str, str] | None = None,
        module: list[str] | None = None,
    ) -> int:
        """Start process ``name`` (one more with ``instance``); wait until ready; its pid.

        ``env``: settings for this process only, on top of the shared ones.
        ``module``: what ``python -m`` runs, for a process not in ``processes``.
        """
        key = name + instance
        port = free_port()
        log = self.logdir / f"{key}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *(module or self.processes[name])],
                cwd=self.cwd,
                env={
                    **self.env,
                    **(env or {}),
                    "SAGA_HEALTH_PORT": str(port),
                    "SAGA_HEALTH_HOST": "127.0.0.1",
                    # The console has no health port: its own port answers /readyz.
                    "SAGA_CONSOLE_PORT": str(port),
                    "SAGA_CONSOLE_HOST": "127.0.0.1",
                },
                stdout=out,
                stderr=subprocess.STDOUT,
                # If we are killed, so are they: nothing outlives the demo or a test run.
                preexec_fn=die_with_parent(),
            )
        self.running[key] = (proc, port)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.running.pop(key)
                raise DevStackError(f"{key} exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return proc.pid
            except OSError:
                time.sleep(0.1)
        self.stop(key)
        raise DevStackError(f"{key} not ready after {timeout_s}s; see {log}")

    def url(self, key: str) -> str:
        """Base URL of process ``key``'s HTTP port (health, and routes such as /orders)."""
        return f"http://127.0.0.1:{self.running[key][1]}"

    def kill(self, key: str, sig: int) -> None:
        """Send ``sig`` to process ``key`` and wait for it to end."""
        proc, _ = self.running.pop(key)
        proc.send_signal(sig)
        proc.wait(30)

    def stop(self, key: str) -> None:
        """SIGTERM (graceful), then SIGKILL after 15 s."""
        proc, _ = self.running.pop(key)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for key in list(self.running):
            self.stop(key)
