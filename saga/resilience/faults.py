"""Fault injection from settings: make every path of a saga happen on purpose.

``SAGA_FAULTS`` holds a JSON list of rules; each rule picks deliveries by step
name and payload fields (shell-style patterns) and by a rate, then:

* ``fail``: the step fails at once with ``error_type="InjectedFault"`` (its
  failure event is emitted, so the saga compensates);
* ``never_answer``: the delivery is taken and nothing is ever emitted (the
  coordinator's step timeout has to notice);
* ``delay``: the handler starts ``delay_ms`` later.

>>> rules = [
...     {"step": "charge", "action": "fail", "rate": 0.1},
...     {"step": "reserve", "action": "fail", "when": {"sku": "sku-broken"}},
...     {"step": "ship", "action": "never_answer", "when": {"order_id": "slow-*"}},
...     {"step": "*", "action": "delay", "delay_ms": 20},
... ]

Which deliveries a rate picks depends only on the message id, so a
redelivered message meets the same fate. Compensations are steps too, and can
be given rules by their step name.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FaultAction = Literal["fail", "never_answer", "delay"]
Verdict = Literal["run", "fail", "never_answer"]


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str = Field(default="*", description="Step name pattern.")
    action: FaultAction
    rate: float = Field(default=1.0, ge=0.0, le=1.0, description="Share of matching deliveries.")
    when: dict[str, str] = Field(
        default_factory=dict, description="Payload field -> pattern its value must match."
    )
    delay_ms: int = Field(default=0, ge=0, description="For action=delay.")

    def picks(self, step: str, message_id: str, payload: dict[str, Any], salt: int) -> bool:
        if not fnmatchcase(step, self.step):
            return False
        for name, pattern in self.when.items():
            if name not in payload or not fnmatchcase(str(payload[name]), pattern):
                return False
        return self.rate >= 1.0 or _share(f"{salt}:{message_id}") < self.rate


def _share(key: str) -> float:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Faults:
    """The rules of one process, applied by the step runner before each handler call."""

    def __init__(self, rules: Sequence[FaultRule] = ()) -> None:
        self.rules = tuple(rules)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def verdict(self, step: str, message_id: str, payload: dict[str, Any]) -> tuple[Verdict, float]:
        """What happens to this delivery, and the delay (seconds) before it."""
        delay = 0.0
        verdict: Verdict = "run"
        for salt, rule in enumerate(self.rules):
            if not rule.picks(step, message_id, payload, salt):
                continue
            if rule.action == "delay":
                delay += rule.delay_ms / 1000
            elif verdict == "run":
                verdict = rule.action
        return verdict, delay

    async def apply(self, step: str, message_id: str, payload: dict[str, Any]) -> Verdict:
        verdict, delay = self.verdict(step, message_id, payload)
        if delay:
            await asyncio.sleep(delay)
        return verdict
