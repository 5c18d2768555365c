"""``saga definition list|show|diff``: the saga definitions this process loads.

Definitions come from ``SAGA_DEFINITIONS``; ``diff`` also takes a
``module:attribute`` reference, to compare with one not loaded yet.
"""

from __future__ import annotations

import argparse

from saga.coordinator.runtime import load_definitions
from saga.coordinator.state import SagaState
from saga.definition.saga import SagaDefinition
from saga.settings import Settings


def show_definition(args: argparse.Namespace) -> int:
    try:
        definition = find_definition(args.name)
    except LookupError as missing:
        known = ", ".join(sorted({d.name for d in loaded_definitions()}))
        print(f"{missing.args[0]}; known: {known}")
        return 2
    print(definition.describe())
    print()
    print("```mermaid")
    print(definition.mermaid())
    print("```")
    return 0


def list_definitions(args: argparse.Namespace) -> int:
    for definition in loaded_definitions():
        print(f"{definition.name}@{definition.version}\t{definition.description}")
    return 0


def diff_definitions(args: argparse.Namespace) -> int:
    from saga.definition.diff import diff

    try:
        old, new = find_definition(args.old), find_definition(args.new)
    except LookupError as missing:
        print(f"saga: error: {missing.args[0]}")
        return 2
    changes = diff(old, new)
    print(f"{old.name}@{old.version} -> {new.name}@{new.version}")
    print("\n".join(changes) if changes else "no change")
    return 0


def find_definition(ref: str) -> SagaDefinition:
    """``NAME@VERSION`` among the loaded definitions, or ``module:attribute[@NAME]``."""
    if ":" in ref:
        spec, _, name = ref.partition("@")
        found = load_definitions(spec)
        chosen = [d for d in found if not name or d.name == name]
        if len(chosen) != 1:
            raise LookupError(f"{ref}: {len(chosen)} definitions; name one with @NAME")
        return chosen[0]
    name, _, version = ref.partition("@")
    loaded = [d for d in loaded_definitions() if d.name == name]
    if not loaded:
        raise LookupError(f"no saga definition {name!r} loaded (SAGA_DEFINITIONS)")
    if not version:
        return max(loaded, key=lambda d: d.version)
    for definition in loaded:
        if str(definition.version) == version:
            return definition
    versions = ", ".join(str(d.version) for d in loaded)
    raise LookupError(f"{name} has no version {version} (loaded: {versions})")


def definition_of(state: SagaState) -> SagaDefinition | None:
    """The loaded definition a saga runs on (its version, else the latest)."""
    loaded = [d for d in loaded_definitions() if d.name == state.saga_type]
    same = [d for d in loaded if d.version == state.definition_version]
    if same:
        return same[0]
    return max(loaded, key=lambda d: d.version) if loaded else None


def loaded_definitions() -> list[SagaDefinition]:
    """The definitions of ``SAGA_DEFINITIONS``."""
    return load_definitions(Settings().definitions)
