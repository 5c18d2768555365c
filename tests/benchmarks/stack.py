"""The broker and PostgreSQL every benchmark runs on, and its settings.

:func:`embedded` starts the embedded stack; :func:`bench_stack` uses a cluster and
a PostgreSQL server given by address where there are, the embedded ones for the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from saga.dev import DevStack
from saga.settings import Settings

#: The bench's PostgreSQL counts its statements (``pg_stat_statements``).
BENCH_POSTGRES_OPTIONS = {"shared_preload_libraries": "pg_stat_statements"}


@contextmanager
def embedded(workdir: Path) -> Iterator[Settings]:
    """Start the stack under ``workdir`` (free ports); stop it on exit, by pid."""
    with bench_stack(workdir, count_statements=False) as stack:
        yield stack.settings


@dataclass(frozen=True)
class Stack:
    """Where a benchmark runs: its settings, and the servers' pids where they run here."""

    settings: Settings
    #: ``None``: the server is not one this process started (remote, or given by address).
    broker_pid: int | None
    postgres_pid: int | None


@contextmanager
def bench_stack(
    workdir: Path,
    *,
    bootstrap_servers: str | None = None,
    database_url: str | None = None,
    partitions: int = 6,
    idempotence: bool | None = None,
    fetch_max_wait_ms: int | None = None,
    count_statements: bool = True,
) -> Iterator[Stack]:
    """The broker at ``bootstrap_servers`` and PostgreSQL at ``database_url`` where given,
    else the embedded ones (started under ``workdir`` on free ports, stopped on exit by pid).

    With a cluster given, producers are idempotent and fetches wait as long as the
    product's defaults say (``idempotence``, ``fetch_max_wait_ms`` override both);
    the embedded broker needs neither (5 ms, not idempotent). ``count_statements``:
    the embedded PostgreSQL loads ``pg_stat_statements``.
    """
    external = bootstrap_servers is not None
    product_wait: int = Settings.model_fields["fetch_max_wait_ms"].default
    stack: DevStack | None = None
    if bootstrap_servers is None or database_url is None:
        stack = DevStack(workdir / "stack", detached=False)
    try:
        broker_pid = postgres_pid = None
        if stack is not None:
            info = stack.up(
                kafka_port=None,
                postgres_port=None,
                postgres_options=BENCH_POSTGRES_OPTIONS if count_statements else None,
            )
            if bootstrap_servers is None:
                bootstrap_servers, broker_pid = info.bootstrap_servers, info.broker.pid
            if database_url is None:
                database_url, postgres_pid = info.database_url, info.postgres.pid
        assert bootstrap_servers is not None and database_url is not None
        yield Stack(
            Settings(
                bootstrap_servers=bootstrap_servers,
                database_url=database_url,  # type: ignore[arg-type]
                enable_idempotence=external if idempotence is None else idempotence,
                fetch_max_wait_ms=(
                    fetch_max_wait_ms
                    if fetch_max_wait_ms is not None
                    else product_wait
                    if external
                    else 5
                ),
                topic_partitions=partitions,
                health_port=None,
            ),
            broker_pid,
            postgres_pid,
        )
    finally:
        if stack is not None:
            stack.down()
