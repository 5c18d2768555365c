"""`saga dev up/status/down` run real servers and leave nothing behind."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from saga.dev.broker import kafka_answers
from saga.dev.processes import ServerProcess, stop

SAGA = [sys.executable, "-m", "saga.cli"]
ROOT = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")


def saga(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SAGA, *args], capture_output=True, text=True, timeout=120, check=False)


def servers_under(workdir: Path) -> list[psutil.Process]:
    """Processes whose command line mentions ``workdir`` (PostgreSQL's -D)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(workdir) in part for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def brokers_logging_under(workdir: Path) -> set[int]:
    """Brokers whose log is under ``workdir`` (other tests' brokers come and go meanwhile)."""
    found = set()
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "tansu":
            continue
        try:
            log = os.readlink(f"/proc/{proc.pid}/fd/1")
        except OSError:
            continue
        if log.startswith(str(workdir)):
            found.add(proc.pid)
    return found


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    workdir = tmp_path / "dot-saga"
    yield workdir
    # Whatever happened, stop what the test started, by pid.
    state = workdir / "stack.json"
    if state.exists():
        for entry in json.loads(state.read_text()).values():
            stop(ServerProcess.from_json(entry))


def test_up_status_down_leaves_no_broker_or_database_process(
    workdir: Path, taken_port: int
) -> None:
    up = saga(
        "dev",
        "up",
        "--dir",
        str(workdir),
        "--kafka-port",
        str(taken_port),
        "--postgres-port",
        str(taken_port),
    )
    assert up.returncode == 0, up.stderr
    state = json.loads((workdir / "stack.json").read_text())
    broker, postgres = (ServerProcess.from_json(state[k]) for k in ("broker", "postgres"))
    assert broker.port != taken_port and postgres.port != taken_port, "free ports chosen"
    assert f"export SAGA_BOOTSTRAP_SERVERS=127.0.0.1:{broker.port}" in up.stdout
    assert (
        f"export SAGA_DATABASE_URL=postgresql://postgres@127.0.0.1:{postgres.port}/saga"
        in up.stdout
    )
    assert "export SAGA_ENABLE_IDEMPOTENCE=false" in up.stdout
    assert kafka_answers("127.0.0.1", broker.port)
    assert broker.alive() and postgres.alive()
    assert (workdir / "postgres" / "PG_VERSION").exists(), "data under the dev directory"

    status = saga("dev", "status", "--dir", str(workdir))
    assert status.returncode == 0
    assert f"pid {broker.pid}" in status.stdout and f"pid {postgres.pid}" in status.stdout

    again = saga("dev", "up", "--dir", str(workdir))
    assert again.returncode == 0
    assert f"pid {broker.pid}" in again.stdout, "a running stack is reused, not doubled"

    down = saga("dev", "down", "--dir", str(workdir))
    assert down.returncode == 0, down.stderr
    assert not broker.alive() and not postgres.alive()
    assert not psutil.pid_exists(broker.pid) or psutil.Process(broker.pid).status() == "zombie"
    assert servers_under(workdir) == [], "no PostgreSQL worker left"
    assert not kafka_answers("127.0.0.1", broker.port)

    assert saga("dev", "status", "--dir", str(workdir)).returncode == 3
    assert "was not running" in saga("dev", "down", "--dir", str(workdir)).stdout


def test_stack_comes_back_up_on_existing_data(workdir: Path) -> None:
    assert saga("dev", "up", "--dir", str(workdir), "--kafka-port", "0").returncode == 0
    assert saga("dev", "down", "--dir", str(workdir)).returncode == 0
    again = saga("dev", "up", "--dir", str(workdir))
    assert again.returncode == 0, again.stderr
    assert saga("dev", "down", "--dir", str(workdir)).returncode == 0
    assert servers_under(workdir) == []


def test_a_killed_server_is_reported_and_the_stack_recovers_over_its_stale_lock(
    workdir: Path,
) -> None:
    assert (
        saga(
            "dev", "up", "--dir", str(workdir), "--kafka-port", "0", "--postgres-port", "0"
        ).returncode
        == 0
    )
    state = json.loads((workdir / "stack.json").read_text())
    postgres = ServerProcess.from_json(state["postgres"])
    psutil.Process(postgres.pid).kill()  # SIGKILL: postmaster.pid stays behind
    psutil.Process(postgres.pid).wait(10)
    assert (workdir / "postgres" / "postmaster.pid").exists()

    status = saga("dev", "status", "--dir", str(workdir))
    assert status.returncode == 1
    assert "half up (postgres not running): run `saga dev down`" in status.stderr

    assert saga("dev", "down", "--dir", str(workdir)).returncode == 0
    again = saga("dev", "up", "--dir", str(workdir), "--kafka-port", "0", "--postgres-port", "0")
    assert again.returncode == 0, again.stderr
    assert saga("dev", "status", "--dir", str(workdir)).returncode == 0
    assert saga("dev", "down", "--dir", str(workdir)).returncode == 0
    assert servers_under(workdir) == []


def test_up_refuses_a_data_directory_another_postgres_still_uses(workdir: Path) -> None:
    assert (
        saga(
            "dev", "up", "--dir", str(workdir), "--kafka-port", "0", "--postgres-port", "0"
        ).returncode
        == 0
    )
    state_file = workdir / "stack.json"
    saved = state_file.read_text()
    state_file.unlink()  # forget the stack, but leave its servers running
    brokers_before = brokers_logging_under(workdir)
    assert len(brokers_before) == 1
    try:
        second = saga(
            "dev", "up", "--dir", str(workdir), "--kafka-port", "0", "--postgres-port", "0"
        )
        assert second.returncode == 1
        assert "already runs on" in second.stderr
        assert not state_file.exists(), "the failed start left no state behind"
        assert brokers_logging_under(workdir) == brokers_before, (
            "the broker it had started was stopped"
        )
    finally:
        state_file.write_text(saved)
    assert saga("dev", "down", "--dir", str(workdir)).returncode == 0
    assert servers_under(workdir) == []


def _python_for_another_user() -> str | None:
    """A Python of our version that a non-root user can run (ours may sit under /root)."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        probe = (
            subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
                user="nobody",
            )
            if Path(candidate).exists()
            else None
        )
        if probe is not None and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_a_normal_user_runs_the_stack_as_itself() -> None:
    python = _python_for_another_user()
    if python is None:
        pytest.skip("no Python of this version that user nobody can run")
    # pytest's own tmp_path sits in a directory only root may enter.
    home = Path(tempfile.mkdtemp(prefix="saga-user-"))
    home.chmod(0o755)
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    workdir = home / ".saga"
    site = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}"}

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [python, "-m", "saga.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            user=NOBODY.pw_uid,
            group=NOBODY.pw_gid,
            extra_groups=[],
        )

    try:
        up = as_nobody(
            "dev", "up", "--dir", str(workdir), "--kafka-port", "0", "--postgres-port", "0"
        )
        assert up.returncode == 0, up.stderr
        state = json.loads((workdir / "stack.json").read_text())
        for entry in state.values():
            server = ServerProcess.from_json(entry)
            assert psutil.Process(server.pid).uids().real == NOBODY.pw_uid, server.name
        down = as_nobody("dev", "down", "--dir", str(workdir))
        assert down.returncode == 0, down.stderr
        for entry in state.values():
            assert not ServerProcess.from_json(entry).alive()
        assert servers_under(workdir) == []
    finally:
        if (workdir / "stack.json").exists():
            for entry in json.loads((workdir / "stack.json").read_text()).values():
                stop(ServerProcess.from_json(entry))
        shutil.rmtree(home, ignore_errors=True)
