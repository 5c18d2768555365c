"""The message registry: ``(ce_type, schema version) -> current model``.

A record written with an older schema version is upcast, one version at a
time, by the model's ``upcasters`` before validation, so handlers only ever see
the current shape. A version newer than the model's, or an old one with a gap
in the upcaster chain, is an :class:`~saga.messages.errors.UnknownSchemaVersion`.

>>> from typing import ClassVar
>>> from saga import Event
>>> class OrderPlaced(Event):
...     message_type: ClassVar[str] = "orders.OrderPlaced"
...     schema_version: ClassVar[int] = 2
...     upcasters = {1: lambda v1: {"order_id": v1["order_id"], "cents": v1["amount"] * 100}}
...     order_id: str
...     cents: int
>>> registry = MessageRegistry([OrderPlaced])
>>> registry.load("orders.OrderPlaced", 1, {"order_id": "o-1", "amount": 5})
OrderPlaced(order_id='o-1', cents=500)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import ValidationError

from saga.errors import InvalidMessageModel
from saga.messages.base import Message
from saga.messages.errors import PayloadValidationFailed, UnknownMessageType, UnknownSchemaVersion


class MessageRegistry:
    """Maps CloudEvents types to payload models, and reads any known version."""

    def __init__(self, models: Iterable[type[Message]] = ()) -> None:
        self._models: dict[str, type[Message]] = {}
        for model in models:
            self.register(model)

    def register(self, model: type[Message]) -> type[Message]:
        """Add ``model``; usable as a class decorator. Checks its upcaster chain."""
        message_type = getattr(model, "message_type", None)
        if not isinstance(message_type, str) or not message_type:
            raise InvalidMessageModel(f"{model.__name__} must declare a non-empty message_type")
        if model.schema_version < 1:
            raise InvalidMessageModel(f"{model.__name__}.schema_version must be >= 1")
        for version in model.upcasters:
            if not 1 <= version < model.schema_version:
                raise InvalidMessageModel(
                    f"{model.__name__} has an upcaster from version {version}, "
                    f"outside 1..{model.schema_version - 1}"
                )
        existing = self._models.get(message_type)
        if existing is not None and existing is not model:
            raise InvalidMessageModel(
                f"message type {message_type!r} is already registered to {existing.__name__}"
            )
        self._models[message_type] = model
        return model

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._models

    def __iter__(self) -> Iterator[type[Message]]:
        return iter(self._models.values())

    def model_for(self, message_type: str) -> type[Message]:
        """The current model for ``message_type``; ``UnknownMessageType`` if none."""
        try:
            return self._models[message_type]
        except KeyError:
            raise UnknownMessageType(message_type) from None

    def upcast(self, message_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        """Lift ``data`` written at ``version`` to the model's current version."""
        model = self.model_for(message_type)
        current = model.schema_version
        if version > current:
            raise UnknownSchemaVersion(
                message_type, version, f"newer than the newest known version {current}"
            )
        if version < 1:
            raise UnknownSchemaVersion(message_type, version, "versions start at 1")
        for step in range(version, current):
            upcaster = model.upcasters.get(step)
            if upcaster is None:
                raise UnknownSchemaVersion(
                    message_type, version, f"no upcaster from version {step} to {step + 1}"
                )
            try:
                data = upcaster(dict(data))
            except Exception as exc:  # an upcaster is user code: any failure is the record's
                raise PayloadValidationFailed(
                    f"{message_type!r} version {step} could not be upcast: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return data

    def load(self, message_type: str, version: int, data: object) -> Message:
        """Validate ``data`` (a decoded JSON value) as the current model."""
        if not isinstance(data, dict):
            raise PayloadValidationFailed(
                f"{message_type!r} payload must be a JSON object, not {type(data).__name__}"
            )
        model = self.model_for(message_type)
        lifted = self.upcast(message_type, version, data)
        try:
            return model.model_validate(lifted)
        except ValidationError as exc:
            raise PayloadValidationFailed(_describe(message_type, exc)) from exc


def _describe(message_type: str, exc: ValidationError) -> str:
    # Field locations and messages only: input values may hold secrets.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in exc.errors(include_url=False, include_input=False)
    )
    return f"{message_type!r} payload failed validation: {problems}"
