"""Fixtures for the tests of a system built on saga, loaded by pytest by itself.

Installed with the package (the ``pytest11`` entry point ``saga``); ``-p no:saga``
turns it off. Two session fixtures:

* ``saga_database_url``: a PostgreSQL URL for
  ``ServiceTestKit(service, database_url=...)`` and
  ``InMemorySagaSystem(..., database_url=...)``. From ``--saga-database-url``
  or ``SAGA_TEST_DATABASE_URL`` when given; otherwise an embedded PostgreSQL
  (the ``embedded`` extra) is started once for the session and stopped by its
  pid at the end.
* ``saga_stack``: the embedded broker and PostgreSQL
  (:class:`saga.dev.StackInfo`: ``bootstrap_servers``, ``database_url``,
  ``environment()``), started once for the session and stopped at the end, for
  tests that run real processes.

::

    async def test_an_order_completes(saga_database_url: str) -> None:
        async with InMemorySagaSystem(
            ORDER_SAGA, SERVICES, database_url=saga_database_url
        ) as system:
            ...

Each fixture starts its own servers: a session using both runs two PostgreSQL
servers (use ``saga_stack.database_url`` alone to avoid that).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from saga.dev import StackInfo

#: The variable naming an external PostgreSQL for the tests.
DATABASE_URL_VARIABLE = "SAGA_TEST_DATABASE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("saga", "saga test kits")
    group.addoption(
        "--saga-database-url",
        default=None,
        help=(
            "PostgreSQL for the saga_database_url fixture (default: $SAGA_TEST_DATABASE_URL,"
            " else an embedded PostgreSQL started for the session)"
        ),
    )


@pytest.fixture(scope="session")
def saga_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A PostgreSQL URL: the one given, or an embedded server's for the session."""
    given: str | None = request.config.getoption("--saga-database-url") or os.environ.get(
        DATABASE_URL_VARIABLE
    )
    if given:
        yield given
        return
    # Imported here: the embedded extra is needed only when a server is started.
    from saga.dev.postgres import database_url, start_postgres
    from saga.dev.processes import free_port, stop

    server = start_postgres(tmp_path_factory.mktemp("saga-postgres"), free_port(), detached=False)
    try:
        yield database_url(server.port)
    finally:
        # SIGINT is PostgreSQL's fast shutdown: clients are cut, then it exits.
        stop(server, sig=signal.SIGINT)


@pytest.fixture(scope="session")
def saga_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    """The embedded broker and PostgreSQL, on free ports, for the session."""
    from saga.dev import DevStack

    stack = DevStack(tmp_path_factory.mktemp("saga-stack"), detached=False)
    try:
        yield stack.up(kafka_port=None, postgres_port=None)
    finally:
        stack.down()
