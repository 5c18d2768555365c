"""kafka-saga: reliable multi-step workflows for Python microservices on Kafka.

The public API is what ``__all__`` lists; everything else may change.
"""

from saga.consumer import Consumer, Handler
from saga.dead_letter import DeadLetter
from saga.errors import (
    ConfigurationError,
    DevStackError,
    IdempotenceUnsupported,
    MessageTooLarge,
    SagaError,
)
from saga.provisioning import ensure_topics
from saga.publisher import Published, Publisher
from saga.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "Consumer",
    "DeadLetter",
    "DevStackError",
    "Handler",
    "IdempotenceUnsupported",
    "MessageTooLarge",
    "Published",
    "Publisher",
    "SagaError",
    "Settings",
    "__version__",
    "ensure_topics",
]
