"""docs/settings.md documents every field of ``Settings``, with its default, and no other."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from saga.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def variable(field: str) -> str:
    return f"SAGA_{field.upper()}"


def shown(default: Any) -> str:
    """A default as the page writes it."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, SecretStr):
        return default.get_secret_value()
    if default == "":
        return "empty"
    return str(default)


def rows() -> dict[str, list[str]]:
    """The settings tables' rows: variable -> its cells."""
    found: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `(SAGA_[A-Z0-9_]+)` \|", line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} is documented twice"
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            found[match.group(1)] = cells
    return found


def test_every_setting_is_documented_with_its_default() -> None:
    documented = rows()
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        cells = documented.get(variable(name))
        assert cells is not None, f"{variable(name)} is not in docs/settings.md"
        assert cells[1] == f"`{shown(default)}`", f"{variable(name)}: default {cells[1]}"
        assert cells[2], f"{variable(name)} has no description"


def test_the_tables_document_no_setting_that_does_not_exist() -> None:
    known = {variable(name) for name in Settings.model_fields}
    assert set(rows()) <= known, set(rows()) - known
