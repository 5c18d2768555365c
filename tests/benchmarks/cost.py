"""What a unit of work costs: CPU per process, PostgreSQL statements, commits and WAL.

A :class:`Meter` watches named processes (by pid) and, optionally, one
PostgreSQL database through SQL. Around a phase of work it gives, per completed
saga (chain, workflow):

* ``cpu_ms_<process>``: ms of user + system CPU of that process (a process
  ``tree``, such as PostgreSQL's postmaster, with all its children: those
  present at both ends by their difference, those started meanwhile in full,
  and those that ended meanwhile through the CPU their parent reaped);
  ``cpu_ms_total``: all of them but the bench driver; ``remote_<process>``: 1 for
  a process that runs elsewhere (not measured);
* ``pg_statements`` (``pg_stat_statements`` calls in the database, where the
  extension is loaded; else ``pg_rows``: rows returned, fetched, inserted,
  updated and deleted from ``pg_stat_database``), ``pg_commits``
  (``pg_stat_database.xact_commit``), ``pg_wal_bytes`` (the server's WAL
  position moved, all databases).

:meth:`Meter.idle` gives each process's CPU as % of one core over an idle spell.
Peers run the same meter in their own process (``--meter JSON``, :meth:`Meter.from_json`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import psutil

#: The process that drives a benchmark: measured, but not part of the total.
DRIVER = "driver"


@dataclass(frozen=True)
class Watched:
    """A process to measure: ``pid`` ``None`` when it runs elsewhere (a remote server)."""

    name: str
    pid: int | None
    #: With all its descendants (PostgreSQL: the postmaster and its backends, walwriter...).
    tree: bool = False


@dataclass(frozen=True)
class Sample:
    """CPU seconds of a process (tree) at one moment."""

    #: user + system seconds of each live process (the root and, for a tree, its descendants).
    own: Mapping[int, float]
    #: user + system seconds of the root's children that ended and were reaped by it.
    reaped: float = 0.0


def cpu_seconds(start: Sample, end: Sample) -> float:
    """CPU spent between two samples of one process tree.

    Processes present at both ends count their difference; processes new at the
    end count in full; processes that ended in between count through the CPU
    their parent reaped (which holds their whole life: what they had spent at
    the start is taken off again).
    """
    spent = sum(cpu - start.own.get(pid, 0.0) for pid, cpu in end.own.items())
    gone = sum(cpu for pid, cpu in start.own.items() if pid not in end.own)
    return max(0.0, spent + (end.reaped - start.reaped) - gone)


def sample(watched: Watched) -> Sample | None:
    """The process's CPU now, or ``None`` if it is not here (remote, or gone)."""
    if watched.pid is None:
        return None
    try:
        root = psutil.Process(watched.pid)
        times = root.cpu_times()
        own = {root.pid: times.user + times.system}
        reaped = 0.0
        if watched.tree:
            reaped = times.children_user + times.children_system
            for child in root.children(recursive=True):
                try:
                    t = child.cpu_times()
                except psutil.Error:
                    continue
                own[child.pid] = t.user + t.system
    except psutil.Error:
        return None
    return Sample(own, reaped)


@dataclass
class DatabaseSample:
    statements: float | None
    rows: float
    commits: float
    wal_lsn: str


async def database_sample(url: str) -> DatabaseSample | None:
    """The URL's database's ``pg_stat_database`` and ``pg_stat_statements`` figures, and
    the server's WAL position."""
    try:
        db = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        row = await db.fetchrow(
            "SELECT xact_commit, tup_returned + tup_fetched + tup_inserted + tup_updated"
            " + tup_deleted AS rows, pg_current_wal_lsn()::text AS lsn"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
        statements: float | None
        try:
            statements = await db.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            )
        except asyncpg.PostgresError:
            statements = None
    except asyncpg.PostgresError:
        return None
    finally:
        await db.close()
    if row is None:
        return None
    return DatabaseSample(
        None if statements is None else float(statements),
        float(row["rows"]),
        float(row["xact_commit"]),
        row["lsn"],
    )


async def wal_bytes(url: str, start: str, end: str) -> float | None:
    try:
        db = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        value = await db.fetchval(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", end, start
        )
    finally:
        await db.close()
    return float(value)


async def enable_statements(url: str) -> bool:
    """Create ``pg_stat_statements`` in the URL's database if the server preloads it."""
    try:
        db = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await db.fetchval("SELECT count(*) FROM pg_stat_statements")
    except asyncpg.PostgresError:
        return False
    finally:
        await db.close()
    return True


#: ``pg_stat_database`` counters reach the view when a backend has been idle or done
#: for a second; this long after the phase, its transactions are in the figures.
STATS_SETTLE_S = 1.2


@dataclass
class Meter:
    """CPU of ``watched`` processes and the PostgreSQL figures of ``database`` over a phase."""

    watched: Sequence[Watched]
    database: str | None = None
    _cpu: dict[str, Sample | None] = field(default_factory=dict, repr=False)
    _db: DatabaseSample | None = field(default=None, repr=False)

    def to_json(self) -> str:
        return json.dumps({"watched": [asdict(w) for w in self.watched], "database": self.database})

    @classmethod
    def from_json(cls, text: str, *more: Watched) -> Meter:
        spec: dict[str, Any] = json.loads(text) if text else {}
        watched = [Watched(**w) for w in spec.get("watched", [])]
        return cls([*more, *watched], spec.get("database"))

    async def start(self) -> None:
        if self.database is not None:
            await enable_statements(self.database)
            self._db = await database_sample(self.database)
        self._cpu = {w.name: sample(w) for w in self.watched}

    async def stop(self, completed: int) -> dict[str, float]:
        """Figures per completed unit since :meth:`start`."""
        cpu = {w.name: sample(w) for w in self.watched}
        figures = per_unit(self._cpu, cpu, completed)
        figures.update({f"remote_{w.name}": 1.0 for w in self.watched if w.pid is None})
        if self.database is not None and self._db is not None:
            await asyncio.sleep(STATS_SETTLE_S)
            end = await database_sample(self.database)
            if end is not None:
                figures.update(database_per_unit(self._db, end, completed))
                wal = await wal_bytes(self.database, self._db.wal_lsn, end.wal_lsn)
                if wal is not None:
                    figures["pg_wal_bytes"] = wal / completed
        return figures

    async def idle(self, seconds: float) -> dict[str, float]:
        """Each process's CPU as % of one core over ``seconds`` with no load."""
        start = {w.name: sample(w) for w in self.watched}
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        end = {w.name: sample(w) for w in self.watched}
        wall = time.perf_counter() - began
        return idle_percent(start, end, wall)


def per_unit(
    start: Mapping[str, Sample | None], end: Mapping[str, Sample | None], completed: int
) -> dict[str, float]:
    """``cpu_ms_<name>`` per unit for each process measured at both ends, and their total
    (the driver left out)."""
    return _cpu_shares(start, end, "cpu_ms", 1000 / completed if completed > 0 else 0)


def idle_percent(
    start: Mapping[str, Sample | None], end: Mapping[str, Sample | None], wall_s: float
) -> dict[str, float]:
    """``idle_pct_<name>``: each process's CPU as % of one core over ``wall_s``, and
    their total (the driver left out)."""
    return _cpu_shares(start, end, "idle_pct", 100 / wall_s if wall_s > 0 else 0)


def _cpu_shares(
    start: Mapping[str, Sample | None],
    end: Mapping[str, Sample | None],
    prefix: str,
    scale: float,
) -> dict[str, float]:
    """``<prefix>_<name>``: the CPU seconds each process spent between its samples times
    ``scale`` (none when ``scale`` is 0), and ``<prefix>_total`` without the driver."""
    figures: dict[str, float] = {}
    for name, first in start.items():
        last = end.get(name)
        if first is None or last is None or scale <= 0:
            continue
        figures[f"{prefix}_{name}"] = scale * cpu_seconds(first, last)
    parts = [v for k, v in figures.items() if k != f"{prefix}_{DRIVER}"]
    if parts:
        figures[f"{prefix}_total"] = sum(parts)
    return figures


def database_per_unit(
    start: DatabaseSample, end: DatabaseSample, completed: int
) -> dict[str, float]:
    if completed <= 0:
        return {}
    figures = {"pg_commits": (end.commits - start.commits) / completed}
    if start.statements is not None and end.statements is not None:
        figures["pg_statements"] = (end.statements - start.statements) / completed
    else:
        figures["pg_rows"] = (end.rows - start.rows) / completed
    return figures
