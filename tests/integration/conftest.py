from __future__ import annotations

import pytest

from contracts.catalog import default_registry
from saga.messages.registry import MessageRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> MessageRegistry:
    return default_registry()
