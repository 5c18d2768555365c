"""The pytest plugin starts an embedded PostgreSQL for a session that names none, and
stops it at the end."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration


def test_a_session_without_a_database_gets_an_embedded_one_stopped_at_the_end(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAGA_TEST_DATABASE_URL", raising=False)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import asyncpg
        from pathlib import Path

        async def test_it_answers(saga_database_url):
            Path("url.txt").write_text(saga_database_url)
            connection = await asyncpg.connect(saga_database_url)
            try:
                assert await connection.fetchval("SELECT 1") == 1
            finally:
                await connection.close()

        def test_it_is_one_server_for_the_session(saga_database_url):
            assert Path("url.txt").read_text() == saga_database_url
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    url = urlsplit((pytester.path / "url.txt").read_text())
    assert url.hostname is not None and url.port is not None
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect((url.hostname, url.port))  # stopped: nothing listens any more
