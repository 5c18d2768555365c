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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from saga.dev.broker import kafka_answers, start_broker
from saga.dev.postgres import database_url, start_postgres
from saga.dev.processes import ServerProcess, free_port, stop, stopped_on_failure
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
        postgres_options: Mapping[str, str] | None = None,
    ) -> StackInfo:
        """Start both servers (free ports if the preferred ones are taken) and wait for them.

        ``postgres_options``: more PostgreSQL settings (``-c name=value``) for this start.
        """
        running = self.status()
        if running is not None:
            return running
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The state is saved as soon as each server runs, so that `down` finds it
        # even if `up` is interrupted half-way.
        broker = start_broker(self.workdir, free_port(kafka_port), detached=self.detached)
        self._save([broker])
        try:
            with stopped_on_failure(broker):
                postgres = start_postgres(
                    self.workdir,
                    free_port(postgres_port),
                    detached=self.detached,
                    options=postgres_options,
                )
        except BaseException:
            self.state_file.unlink(missing_ok=True)
            raise
        self._save([broker, postgres])
        self._info = StackInfo(broker=broker, postgres=postgres, workdir=self.workdir)
        return self._info

    def status(self) -> StackInfo | None:
        """The running stack, or ``None``. A half-dead stack is an error naming the fix."""
        servers = self._servers()
        alive = {s.name: s.alive() for s in servers}
        if not any(alive.values()):
            self.state_file.unlink(missing_ok=True)
            self._info = None
            return None
        info = self._load()
        if info is not None and all(alive.values()):
            if kafka_answers("127.0.0.1", info.broker.port):
                return info
            raise DevStackError(
                f"the broker (pid {info.broker.pid}) runs but does not answer on port "
                f"{info.broker.port}: run `saga dev down`, then `saga dev up`"
            )
        missing = [name for name in ("broker", "postgres") if not alive.get(name)]
        raise DevStackError(
            f"dev stack is half up ({', '.join(missing)} not running): run `saga dev down`"
        )

    def down(self) -> list[str]:
        """Stop both servers by their recorded pids; returns what was stopped."""
        stopped = []
        for server in self._servers():
            if server.alive():
                stopped.append(f"{server.name} (pid {server.pid})")
            # SIGINT is PostgreSQL's fast shutdown: clients are cut, data is kept.
            stop(server, sig=signal.SIGINT if server.name == "postgres" else signal.SIGTERM)
        self.state_file.unlink(missing_ok=True)
        self._info = None
        return stopped

    def _save(self, servers: list[ServerProcess]) -> None:
        state = {server.name: server.to_json() for server in servers}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _servers(self) -> list[ServerProcess]:
        if not self.state_file.exists():
            return []
        state = json.loads(self.state_file.read_text())
        return [ServerProcess.from_json(entry) for entry in state.values()]

    def _load(self) -> StackInfo | None:
        if self._info is not None:
            return self._info
        servers = {server.name: server for server in self._servers()}
        if set(servers) != {"broker", "postgres"}:
            return None
        return StackInfo(servers["broker"], servers["postgres"], self.workdir)
