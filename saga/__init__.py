"""kafka-saga: reliable multi-step workflows for Python microservices on Kafka.

What a system is written with, in one namespace::

    from saga import Event, Service, StepContext, StepContract, SagaDefinition, Step

* messages: :class:`Command`, :class:`Event`, :class:`StepFailed`, and the
  lifecycle events the coordinator announces (:class:`SagaFinished`, tasks);
* the saga definition: :class:`StepContract` (a step's messages, declared once),
  :class:`SagaDefinition` and :class:`Step`, :class:`Join`, :class:`Approval`;
* step services: :class:`Service`, :class:`StepContext`, :class:`StepFailure`,
  :class:`RetryPolicy`, :class:`CircuitBreaker`, HTTP routes, :func:`run_service`;
* transport and settings: :class:`Publisher`, :class:`Consumer`, :class:`Settings`;
* errors: one tree under :class:`SagaError` (drawn in :mod:`saga.errors`).

Documented subpackages: :mod:`saga.testing` (test kits and the pytest plugin),
:mod:`saga.security` (vault, tokens, signatures), :mod:`saga.dev` (the embedded
stack). The public API is what these ``__all__`` list; every other module is
internal and may change.
"""

from saga.definition.contract import StepContract
from saga.definition.saga import (
    Approval,
    DefinitionError,
    Join,
    OnTimeout,
    SagaDefinition,
    SagaMode,
    Step,
    StepDefinition,
)
from saga.errors import (
    ConfigurationError,
    DevStackError,
    IdempotenceUnsupported,
    InvalidMessageModel,
    MessageTooLarge,
    SagaError,
    ServiceMisconfigured,
)
from saga.http.outbox import outbox_relay, saga_transaction
from saga.kafka.consumer import Consumer, Handler
from saga.kafka.dead_letter import DeadLetter
from saga.kafka.provisioning import ensure_topics
from saga.kafka.publisher import Published, Publisher
from saga.messages.base import Command, Event, Message, Upcaster
from saga.messages.envelope import Envelope, new_message_id
from saga.messages.errors import (
    InvalidHeader,
    InvalidMessage,
    MissingHeader,
    NotJson,
    PayloadValidationFailed,
    UnknownMessageType,
    UnknownSchemaVersion,
)
from saga.messages.lifecycle import (
    CancelRefused,
    CancelRequested,
    SagaFinished,
    SagaOutcome,
    TaskApproved,
    TaskEscalated,
    TaskOpened,
    TaskRejected,
)
from saga.messages.registry import MessageRegistry
from saga.messages.steps import CompensationFailed, StepFailed
from saga.messages.topics import commands_topic, dead_letter_topic, events_topic, prefixed
from saga.participant.context import NoDatabase, StepContext
from saga.participant.routes import BadRequest, HttpRequest, HttpResponse, RequestContext
from saga.participant.runtime import ServiceRuntime, run_service
from saga.participant.service import ContractMismatch, Service, StepFailure
from saga.participant.step_runner import Outcome, StepTimeout, StoreUnavailable
from saga.resilience.circuit import CircuitBreaker, CircuitOpen, CircuitState
from saga.resilience.faults import FaultRule
from saga.resilience.retry import NonRetryableError, RetryPolicy
from saga.security.auth import Forbidden, Principal, Unauthenticated
from saga.security.vault import Connection
from saga.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Approval",
    "BadRequest",
    "CancelRefused",
    "CancelRequested",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "Command",
    "CompensationFailed",
    "ConfigurationError",
    "Connection",
    "Consumer",
    "ContractMismatch",
    "DeadLetter",
    "DefinitionError",
    "DevStackError",
    "Envelope",
    "Event",
    "FaultRule",
    "Forbidden",
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "IdempotenceUnsupported",
    "InvalidHeader",
    "InvalidMessage",
    "InvalidMessageModel",
    "Join",
    "Message",
    "MessageRegistry",
    "MessageTooLarge",
    "MissingHeader",
    "NoDatabase",
    "NonRetryableError",
    "NotJson",
    "OnTimeout",
    "Outcome",
    "PayloadValidationFailed",
    "Principal",
    "Published",
    "Publisher",
    "RequestContext",
    "RetryPolicy",
    "SagaDefinition",
    "SagaError",
    "SagaFinished",
    "SagaMode",
    "SagaOutcome",
    "Service",
    "ServiceMisconfigured",
    "ServiceRuntime",
    "Settings",
    "Step",
    "StepContext",
    "StepContract",
    "StepDefinition",
    "StepFailed",
    "StepFailure",
    "StepTimeout",
    "StoreUnavailable",
    "TaskApproved",
    "TaskEscalated",
    "TaskOpened",
    "TaskRejected",
    "Unauthenticated",
    "UnknownMessageType",
    "UnknownSchemaVersion",
    "Upcaster",
    "__version__",
    "commands_topic",
    "dead_letter_topic",
    "ensure_topics",
    "events_topic",
    "new_message_id",
    "outbox_relay",
    "prefixed",
    "run_service",
    "saga_transaction",
]
