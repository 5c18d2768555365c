"""The README's tutorial service is the real file, and is short (it works: tests/integration)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tutorial_code() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Tutorial", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_tutorial_is_the_shipping_service_and_under_30_lines() -> None:
    code = tutorial_code()
    assert code == (ROOT / "services" / "shipping" / "service.py").read_text()
    assert len(code.splitlines()) < 30
