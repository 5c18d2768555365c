"""Which timer of a saga: its kind and the step it is about, as a value.

A timer is stored (``saga_timers.name``) and logged under its text form,
``"step-timeout:charge"`` or ``"deadline"``; :class:`TimerKey` parses and formats exactly
that form, so timers set by earlier versions still fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, cast, get_args

TimerKind = Literal[
    "step-timeout",
    "step-retry",
    "compensation-timeout",
    "compensation-retry",
    "deadline",
    "approval-sla",
    "approval-deadline",
]

#: A step's answer is due (its ``reply_timeout``), or the data a waiting alternative needs.
STEP_TIMEOUT: Final = "step-timeout"
#: A step that must go forward (the pivot, a step after it) is started again.
STEP_RETRY: Final = "step-retry"
#: The confirmation of a step's compensation is due.
COMPENSATION_TIMEOUT: Final = "compensation-timeout"
#: A step's compensation is sent again (after a failure, or once its data may be there).
COMPENSATION_RETRY: Final = "compensation-retry"
#: The saga's deadline: the one timer that is about no step.
DEADLINE: Final = "deadline"
#: An approval task's SLA passed: it is escalated to the next assignee.
APPROVAL_SLA: Final = "approval-sla"
#: An approval task's deadline passed: it is rejected.
APPROVAL_DEADLINE: Final = "approval-deadline"

_KINDS: Final = frozenset(get_args(TimerKind))


@dataclass(frozen=True)
class TimerKey:
    """A timer of a saga: its kind, and its step (``None`` for the deadline only).

    ``str(key)`` is the name it is stored under; :meth:`parse` reads it back.

    >>> TimerKey.parse("compensation-retry:reserve")
    TimerKey(kind='compensation-retry', step='reserve')
    >>> str(TimerKey(DEADLINE)), str(TimerKey(STEP_TIMEOUT, "charge"))
    ('deadline', 'step-timeout:charge')
    """

    kind: TimerKind
    step: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == DEADLINE) != (self.step is None) or self.step == "":
            raise ValueError(
                f"a {self.kind} timer is about {'no' if self.kind == DEADLINE else 'one'} step"
                f" (got step={self.step!r})"
            )

    def __str__(self) -> str:
        return self.kind if self.step is None else f"{self.kind}:{self.step}"

    @classmethod
    def parse(cls, name: str) -> TimerKey | None:
        """The key stored as ``name``, or ``None`` for a timer this coordinator does not
        know (a kind added by a later version, say): the caller notes it, never fails."""
        kind, colon, step = name.partition(":")
        if kind not in _KINDS:
            return None
        try:
            return cls(cast(TimerKind, kind), step if colon else None)
        except ValueError:  # a step where none belongs, or none where one does
            return None
