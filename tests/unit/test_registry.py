"""The registry reads every known version as the current model and refuses the rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from saga.messages.base import Event, Upcaster
from saga.messages.errors import PayloadValidationFailed, UnknownMessageType, UnknownSchemaVersion
from saga.messages.registry import MessageRegistry


def _v1_to_v2(v1: dict[str, Any]) -> dict[str, Any]:
    return {"name": v1["full_name"]}


def _v2_to_v3(v2: dict[str, Any]) -> dict[str, Any]:
    first, _, last = v2["name"].partition(" ")
    return {"first": first, "last": last}


class CustomerRenamed(Event):
    message_type: ClassVar[str] = "test.CustomerRenamed"
    schema_version: ClassVar[int] = 3
    upcasters: ClassVar[Mapping[int, Upcaster]] = {1: _v1_to_v2, 2: _v2_to_v3}

    first: str
    last: str


def test_current_version_is_validated_as_is() -> None:
    got = MessageRegistry([CustomerRenamed]).load(
        "test.CustomerRenamed", 3, {"first": "A", "last": "B"}
    )
    assert got == CustomerRenamed(first="A", last="B")


def test_upcasters_chain_from_the_oldest_version() -> None:
    registry = MessageRegistry([CustomerRenamed])
    assert registry.load(
        "test.CustomerRenamed", 1, {"full_name": "Ada Lovelace"}
    ) == CustomerRenamed(first="Ada", last="Lovelace")
    assert registry.load("test.CustomerRenamed", 2, {"name": "Alan Turing"}) == CustomerRenamed(
        first="Alan", last="Turing"
    )


def test_gap_in_upcaster_chain_is_an_unknown_version() -> None:
    class Gappy(Event):
        message_type: ClassVar[str] = "test.Gappy"
        schema_version: ClassVar[int] = 3
        upcasters: ClassVar[Mapping[int, Upcaster]] = {2: lambda d: d}

    with pytest.raises(UnknownSchemaVersion, match="no upcaster from version 1 to 2"):
        MessageRegistry([Gappy]).load("test.Gappy", 1, {})


def test_newer_and_zero_versions_are_unknown() -> None:
    registry = MessageRegistry([CustomerRenamed])
    with pytest.raises(UnknownSchemaVersion, match="newer"):
        registry.load("test.CustomerRenamed", 4, {})
    with pytest.raises(UnknownSchemaVersion, match="start at 1"):
        registry.load("test.CustomerRenamed", 0, {})


def test_upcaster_that_fails_on_bad_old_data_is_a_validation_failure() -> None:
    with pytest.raises(PayloadValidationFailed, match="could not be upcast: KeyError"):
        MessageRegistry([CustomerRenamed]).load("test.CustomerRenamed", 1, {"wrong": 1})


def test_payload_must_be_an_object() -> None:
    with pytest.raises(PayloadValidationFailed, match="JSON object, not list"):
        MessageRegistry([CustomerRenamed]).load("test.CustomerRenamed", 3, [1, 2])


def test_unknown_type() -> None:
    with pytest.raises(UnknownMessageType):
        MessageRegistry().model_for("nope")


def test_extra_fields_are_rejected() -> None:
    with pytest.raises(PayloadValidationFailed, match="card_number: Extra inputs"):
        MessageRegistry([CustomerRenamed]).load(
            "test.CustomerRenamed", 3, {"first": "a", "last": "b", "card_number": "4111"}
        )


def test_registration_checks_declarations() -> None:
    class NoType(Event):
        pass

    class BadUpcaster(Event):
        message_type: ClassVar[str] = "test.Bad"
        schema_version: ClassVar[int] = 2
        upcasters: ClassVar[Mapping[int, Upcaster]] = {2: lambda d: d}

    class Twin(Event):
        message_type: ClassVar[str] = "test.CustomerRenamed"

    registry = MessageRegistry([CustomerRenamed])
    with pytest.raises(TypeError, match="message_type"):
        registry.register(NoType)
    with pytest.raises(TypeError, match=r"outside 1\.\.1"):
        registry.register(BadUpcaster)
    with pytest.raises(TypeError, match="already registered"):
        registry.register(Twin)
    assert registry.register(CustomerRenamed) is CustomerRenamed  # same model twice is fine
    assert "test.CustomerRenamed" in registry
    assert list(registry) == [CustomerRenamed]


def test_an_upcaster_that_crashes_is_a_validation_failure_not_a_crash() -> None:
    def broken(v1: dict[str, Any]) -> dict[str, Any]:
        return v1["name"].missing_attribute  # type: ignore[no-any-return]

    class Fragile(Event):
        message_type: ClassVar[str] = "test.Fragile"
        schema_version: ClassVar[int] = 2
        upcasters: ClassVar[Mapping[int, Upcaster]] = {1: broken}

    with pytest.raises(PayloadValidationFailed, match="could not be upcast: AttributeError"):
        MessageRegistry([Fragile]).load("test.Fragile", 1, {"name": "x"})
