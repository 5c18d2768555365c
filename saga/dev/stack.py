"""Bring the embedded broker and database up, report on them, and take them down.

>>> stack = DevStack(Path(".saga"))
>>> info = stack.up()            # doctest: +SKIP
>>> info.bootstrap_servers       # doctest: +SKIP
'127.0.0.1:9092'
>>> stack.down()                 # doctest: +SKIP

State (pids, ports, logs) lives in ``<workdir>/stack.json`` so ``status`` and
``down`` in another process find exactly the processes ``up`` started.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

from saga.dev.broker import kafka_answers, start_broker
from saga.dev.postgres import database_url, start_postgres
from saga.dev.processes import ServerProcess, free_port, stop
from saga.errors import DevStackError

DEFAULT_KAFKA_PORT = 9092
DEFAULT_POSTGRES_PORT = 5432
#: The embedded broker answers waiting fetches only when they time out.
DEV_FETCH_MAX_WAIT_MS = 5


@dataclass(frozen=True, slots=True)
class StackInfo:
    """Where the running stack listens, and the settings that point at it."""

    broker: ServerProcess
    postgres: ServerProcess
    workdir: Path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    @property
    def database_url(self) -> str:
        return database_url(self.postgres.port)

    def environment(self) -> dict[str, str]:
        """``SAGA_*`` variables for services and tools to use this stack."""
        return {
            "SAGA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "SAGA_DATABASE_URL": self.database_url,
            "SAGA_ENABLE_IDEMPOTENCE": "false",
            "SAGA_FETCH_MAX_WAIT_MS": str(DEV_FETCH_MAX_WAIT_MS),
        }


@dataclass
class DevStack:
    """The embedded stack whose data and state live under ``workdir``."""

    workdir: Path
    detached: bool = True
    _info: StackInfo | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()

    @property
    def state_file(self) -> Path:
        return self.workdir / "stack.json"

    def up(
        self,
        *,
        kafka_port: int | None = DEFAULT_KAFKA_PORT,
        postgres_port: int | None = DEFAULT_POSTGRES_PORT,
    ) -> StackInfo:
        """Start both servers (free ports if the preferred ones are taken) and wait for them."""
        running = self.status()
        if running is not None:
            return running
        self.workdir.mkdir(parents=True, exist_ok=True)
        broker = start_broker(self.workdir, free_port(kafka_port), detached=self.detached)
        try:
            postgres = start_postgres(
                self.workdir, free_port(postgres_port), detached=self.detached
            )
        except BaseException:
            stop(broker)
            raise
        info = StackInfo(broker=broker, postgres=postgres, workdir=self.workdir)
        self.state_file.write_text(
            json.dumps({"broker": broker.to_json(), "postgres": postgres.to_json()}, indent=2)
        )
        self._info = info
        return info

    def status(self) -> StackInfo | None:
        """The running stack, or ``None``. A half-dead stack is an error naming the fix."""
        info = self._load()
        if info is None:
            return None
        alive = {s.name: s.alive() for s in (info.broker, info.postgres)}
        if all(alive.values()) and kafka_answers("127.0.0.1", info.broker.port):
            return info
        if not any(alive.values()):
            self.state_file.unlink(missing_ok=True)
            return None
        dead = ", ".join(name for name, up in alive.items() if not up)
        raise DevStackError(f"dev stack is half up ({dead} not running): run `saga dev down`")

    def down(self) -> list[str]:
        """Stop both servers by their recorded pids; returns what was stopped."""
        info = self._load()
        if info is None:
            return []
        stopped = []
        for server, sig in ((info.broker, signal.SIGTERM), (info.postgres, signal.SIGINT)):
            if server.alive():
                stopped.append(f"{server.name} (pid {server.pid})")
            # SIGINT is PostgreSQL's fast shutdown: clients are cut, data is kept.
            stop(server, sig=sig)
        self.state_file.unlink(missing_ok=True)
        self._info = None
        return stopped

    def _load(self) -> StackInfo | None:
        if self._info is not None:
            return self._info
        if not self.state_file.exists():
            return None
        data = json.loads(self.state_file.read_text())
        return StackInfo(
            broker=ServerProcess.from_json(data["broker"]),
            postgres=ServerProcess.from_json(data["postgres"]),
            workdir=self.workdir,
        )
