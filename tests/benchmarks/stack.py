"""The embedded broker and PostgreSQL every benchmark runs on, and its settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from saga.dev import DevStack
from saga.settings import Settings


@contextmanager
def embedded(workdir: Path) -> Iterator[Settings]:
    """Start the stack under ``workdir`` (free ports); stop it on exit, by pid."""
    stack = DevStack(workdir / "stack", detached=False)
    info = stack.up(kafka_port=None, postgres_port=None)
    try:
        yield Settings(
            bootstrap_servers=info.bootstrap_servers,
            database_url=info.database_url,  # type: ignore[arg-type]
            enable_idempotence=False,
            fetch_max_wait_ms=5,
            topic_partitions=6,
            health_port=None,
        )
    finally:
        stack.down()
