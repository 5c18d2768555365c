"""Health of a process for container orchestrators, on its HTTP port.

``GET /healthz`` (liveness) answers 200 while the process runs its loop;
``GET /readyz`` answers 200 once the service consumes and 503 before, or
while stopping. Both return a JSON body with details (consumer state, circuit
breakers), and need no token. They are served with the process's other endpoints
by :mod:`saga.http`.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from saga.errors import ConfigurationError

#: (ready, details) of a process.
Report = Callable[[], tuple[bool, dict[str, Any]]]


def check_port_free(host: str, port: int) -> None:
    """Fail now, in one line naming the setting, if ``port`` cannot be bound: before a
    process opens its broker and database connections, not after."""
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"SAGA_HEALTH_HOST={host!r} is not an address of this machine ({exc.strerror})"
        ) from None
    for family, kind, protocol, _, address in found:
        bound(family, kind, protocol, address, host, port).close()


def bound(
    family: int, kind: int, protocol: int, address: Any, host: str, port: int
) -> socket.socket:
    """A socket bound to ``address`` as a server binds it (address reuse, IPv6 sockets for
    IPv6 only); :func:`in_use` when the port is taken."""
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        raise in_use(host, port) from None
    return sock


def in_use(host: str, port: int) -> ConfigurationError:
    return ConfigurationError(
        f"port {port} on {host} is in use: set SAGA_HEALTH_PORT to a free port"
        " (each process of a system on one machine needs its own)"
    )
