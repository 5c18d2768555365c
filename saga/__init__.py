"""kafka-saga: reliable multi-step workflows for Python microservices on Kafka.

The public API is what ``__all__`` lists; everything else may change.
"""

from saga.circuit import CircuitBreaker, CircuitOpen, CircuitState
from saga.consumer import Consumer, Handler
from saga.dead_letter import DeadLetter
from saga.errors import (
    ConfigurationError,
    DevStackError,
    IdempotenceUnsupported,
    MessageTooLarge,
    SagaError,
)
from saga.faults import FaultRule
from saga.provisioning import ensure_topics
from saga.publisher import Published, Publisher
from saga.retry import NonRetryableError, RetryPolicy
from saga.routes import BadRequest, HttpRequest, HttpResponse, RequestContext
from saga.service import Service, StepContext, StepFailure
from saga.service_runtime import ServiceRuntime
from saga.settings import Settings
from saga.step_runner import Outcome, StepTimeout

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
