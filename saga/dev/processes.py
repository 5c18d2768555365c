"""Start server processes and stop them by pid, never by name."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from saga.errors import DevStackError


@dataclass(frozen=True, slots=True)
class ServerProcess:
    """A server we started: enough to find it again and to be sure it is ours."""

    name: str
    pid: int
    create_time: float
    port: int
    log: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerProcess:
        return cls(**data)

    def process(self) -> psutil.Process | None:
        """The live process, or ``None`` if it ended (or the pid was reused)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            return None
        return proc

    def alive(self) -> bool:
        return self.process() is not None


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else a port the OS says is free."""
    if preferred and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def as_user(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with only that user's group.

    Dropping root's group matters: with gid 0 kept, a root-owned 0700 directory
    would deny access through its group bits even when "others" may pass.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that ties a child's life to ours (Linux), else ``None``."""
    return _die_with_parent if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    # Linux: the server gets SIGKILL when the process that started it dies, so a
    # killed test run leaves nothing behind. Runs in the child, after setuid.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log: Path,
    detached: bool,
    user: str | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start ``argv``; ``detached`` servers outlive us, others die with us (Linux)."""
    preexec = None if detached else die_with_parent()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=detached,
            preexec_fn=preexec,
            env=env,
            **as_user(user),
        )
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        raise DevStackError(f"{name} exited at once; see {log}") from None
    return ServerProcess(name=name, pid=proc.pid, create_time=created, port=port, log=str(log))


def wait_until(
    ready: Callable[[], bool], server: ServerProcess, *, timeout_s: float = 30.0
) -> None:
    """Poll ``ready`` until true; on failure stop the server and raise."""
    with stopped_on_failure(server):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if not server.alive():
                raise DevStackError(f"{server.name} exited during start-up; see {server.log}")
            time.sleep(0.05)
        raise DevStackError(f"{server.name} not ready after {timeout_s}s; see {server.log}")


@contextlib.contextmanager
def stopped_on_failure(server: ServerProcess) -> Iterator[None]:
    """Stop ``server`` if the block fails in any way (Ctrl-C included), then re-raise."""
    try:
        yield
    except BaseException:
        stop(server)
        raise


def stop(server: ServerProcess, *, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
    """Stop ``server`` (and any children it left) by pid: ``sig``, then SIGKILL."""
    proc = server.process()
    if proc is None:
        _reap(server.pid)
        return
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
    _, alive = psutil.wait_procs([proc], timeout=timeout_s)
    for straggler in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            straggler.kill()
    psutil.wait_procs([proc], timeout=5)
    _, alive = psutil.wait_procs(children, timeout=5)
    for straggler in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            straggler.kill()
    _reap(server.pid)


def _reap(pid: int) -> None:
    # If we are the parent (attached servers), collect the exit status.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
