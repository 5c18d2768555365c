"""kafka-saga: reliable multi-step workflows for Python microservices on Kafka.

The public API is what ``__all__`` lists; everything else may change.
"""

from saga.errors import (
    ConfigurationError,
    DevStackError,
    IdempotenceUnsupported,
    MessageTooLarge,
    SagaError,
)
from saga.kafka.consumer import Consumer, Handler
from saga.kafka.dead_letter import DeadLetter
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Published, Publisher
from saga.participant.routes import BadRequest, HttpRequest, HttpResponse, RequestContext
from saga.participant.runtime import ServiceRuntime
from saga.participant.service import Service, StepContext, StepFailure
from saga.participant.step_runner import Outcome, StepTimeout
from saga.resilience.circuit import CircuitBreaker, CircuitOpen, CircuitState
from saga.resilience.faults import FaultRule
from saga.resilience.retry import NonRetryableError, RetryPolicy
from saga.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "ConfigurationError",
    "Consumer",
    "DeadLetter",
    "DevStackError",
    "FaultRule",
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "IdempotenceUnsupported",
    "MessageTooLarge",
    "NonRetryableError",
    "Outcome",
    "Published",
    "Publisher",
    "RequestContext",
    "RetryPolicy",
    "SagaError",
    "Service",
    "ServiceRuntime",
    "Settings",
    "StepContext",
    "StepFailure",
    "StepTimeout",
    "__version__",
    "ensure_topics",
]
