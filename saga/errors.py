"""Errors the framework raises: one tree under :class:`SagaError`.

::

    SagaError
    ├── ConfigurationError             a setting or a definition does not fit; the message names it
    │   ├── IdempotenceUnsupported     the broker rejected the idempotent producer
    │   ├── DefinitionError            a saga definition is inconsistent (every problem listed)
    │   ├── ContractMismatch           a handler does not fit the step contract it is bound to
    │   ├── ServiceMisconfigured       a service's handlers, store or routes do not fit together
    │   └── InvalidMessageModel        a message class cannot be registered
    ├── MessageTooLarge                a record exceeds SAGA_MAX_MESSAGE_BYTES (never sent)
    ├── DevStackError                  the embedded broker or PostgreSQL could not be run
    ├── InvalidMessage                 a record is not a valid enveloped message: dead-lettered
    │   ├── MissingHeader, InvalidHeader, NotJson
    │   ├── UnknownMessageType, UnknownSchemaVersion
    │   └── PayloadValidationFailed
    ├── SignatureError                 a record's signature is missing or wrong: dead-lettered
    ├── NonRetryableError              a step error retrying cannot fix: the step fails now
    │   ├── StepFailure                a business failure raised by a handler
    │   ├── NoDatabase                 ``ctx.db`` in a service without a store
    │   ├── TokenRejected              the identity provider refused the service's credentials
    │   └── ConnectionRevoked, ProviderRefusedClient   a user's connection cannot be used
    │       └── ConnectionNotOwned     the handle is another user's connection
    ├── StepTimeout                    an attempt ran past its ``attempt_timeout`` (retried)
    ├── CircuitOpen                    a dependency's circuit is open (retried later)
    ├── StoreUnavailable               the service's database cannot be reached (retried)
    ├── RecordRefused                  the database refuses a record's data: dead-lettered at once
    ├── TokenUnavailable, ConnectionUnavailable, VaultError   credentials cannot be had now
    ├── Unauthenticated                no bearer token, or not a valid one (HTTP 401)
    ├── Forbidden                      a caller without the role, or not the assignee (HTTP 403)
    └── BadRequest                     an HTTP request a route cannot take (400)

Content errors (:class:`InvalidMessage` and its subclasses, :class:`SignatureError`)
are dead-lettered with their reason, not raised to the caller of a consumer.
``except SagaError`` catches everything the framework raises on purpose.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


class SagaError(Exception):
    """Base of the framework's own errors."""


class ConfigurationError(SagaError):
    """A setting does not fit the broker or database in use. The message names it."""


class IdempotenceUnsupported(ConfigurationError):
    """The broker refused to give this producer an id (``InitProducerId``)."""

    def __init__(self, bootstrap_servers: str, detail: str) -> None:
        super().__init__(
            f"the broker at {bootstrap_servers} rejected the idempotent producer "
            f"({detail}). This broker does not support idempotence or transactions; "
            "set SAGA_ENABLE_IDEMPOTENCE=false (Settings.enable_idempotence=False) to run "
            "without it. Producer retries may then duplicate records, which consumers "
            "absorb by message id."
        )


class ServiceMisconfigured(ConfigurationError, ValueError):
    """A service's handlers, store or routes do not fit together; the message says how."""


class InvalidMessageModel(ConfigurationError, TypeError):
    """A message class cannot be registered (no type name, a bad schema version, ...)."""


class MessageTooLarge(SagaError, ValueError):
    """A record is larger than the configured limit; it was not sent."""

    def __init__(
        self, topic: str, message_type: str, size: int, limit: int, *, by_broker: bool = False
    ) -> None:
        where = (
            f"was rejected by the broker as too large (about {size} bytes; the broker's "
            f"message.max.bytes or the topic's max.message.bytes is below "
            f"SAGA_MAX_MESSAGE_BYTES={limit})"
            if by_broker
            else f"is {size} bytes, over the limit of {limit} bytes (SAGA_MAX_MESSAGE_BYTES)"
        )
        super().__init__(
            f"{message_type!r} record for topic {topic!r} {where}; it was not sent. Shrink "
            "the payload (store large data elsewhere and send a reference) or raise the limit "
            "on producers, consumers and the broker together."
        )
        self.topic = topic
        self.size = size
        self.limit = limit


def import_named(module: str, setting: str) -> ModuleType:
    """Import ``module`` for ``setting``; a missing one is a one-line :class:`ConfigurationError`.

    The current directory is searched first, as ``python -m`` does, so that a system's
    own packages are found when it is run from the folder holding them.
    """
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise  # the module exists; something it imports is missing
        raise ConfigurationError(
            f"{setting}: no module named {module!r} (from {os.getcwd()}): run it from the"
            f" folder holding the package {module.split('.')[0]!r}, or install that package"
        ) from None


class DevStackError(SagaError):
    """The embedded development broker or database failed to start or stop."""
