"""Session-wide real broker and PostgreSQL, and per-test unique names.

By default the session starts the embedded broker (Tansu) and PostgreSQL on
free ports and stops both by pid at the end, whatever the outcome. To run the
same suite against your own Apache Kafka and PostgreSQL, set
``SAGA_TEST_BOOTSTRAP_SERVERS`` and ``SAGA_TEST_DATABASE_URL`` (or pass
``--kafka`` and ``--database-url``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from saga.dev import DevStack
from saga.settings import Settings
from tests.http_helpers import AUTH_TOKENS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("saga")
    group.addoption(
        "--kafka",
        default=os.environ.get("SAGA_TEST_BOOTSTRAP_SERVERS"),
        help="bootstrap servers of an external Kafka (default: start the embedded broker)",
    )
    group.addoption(
        "--database-url",
        default=os.environ.get("SAGA_TEST_DATABASE_URL"),
        help="URL of an external PostgreSQL (default: start the embedded one)",
    )


@dataclass(frozen=True)
class Infra:
    """Where the tests' broker and database are, and whether we started them."""

    bootstrap_servers: str
    database_url: str
    embedded_broker: bool
    workdir: Path


@pytest.fixture(scope="session")
def infra(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Infra]:
    kafka: str | None = request.config.getoption("--kafka")
    database: str | None = request.config.getoption("--database-url")
    workdir = tmp_path_factory.mktemp("stack")
    if kafka and database:
        yield Infra(kafka, database, embedded_broker=False, workdir=workdir)
        return
    if kafka or database:
        pytest.exit("give both --kafka and --database-url, or neither", returncode=4)
    stack = DevStack(workdir, detached=False)
    try:
        info = stack.up(kafka_port=None, postgres_port=None)
        yield Infra(
            info.bootstrap_servers, info.database_url, embedded_broker=True, workdir=workdir
        )
    finally:
        stack.down()


@pytest.fixture
def settings(infra: Infra) -> Settings:
    """Settings for the tests' broker: fast fetches and commits, short sessions."""
    return Settings(
        bootstrap_servers=infra.bootstrap_servers,
        database_url=infra.database_url,  # type: ignore[arg-type]
        enable_idempotence=not infra.embedded_broker,
        fetch_max_wait_ms=5 if infra.embedded_broker else 100,
        commit_interval_ms=20,
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        topic_partitions=3,
        handler_retry_initial_ms=5,
        handler_retry_max_ms=20,
        client_id=f"test-{uuid.uuid4().hex[:6]}",
        auth_tokens=AUTH_TOKENS,  # type: ignore[arg-type]
    )


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("orders.events")`` -> a topic or group name no other test uses."""
    run = uuid.uuid4().hex[:10]
    return lambda name: f"t{run}.{name}"
