"""The saga coordinator: a pure decision function wrapped by a durable I/O shell.

Public here: a saga's state as the coordinator keeps it (:class:`SagaState`,
:class:`StepState`) and :func:`render_timeline`, for tools that show sagas.
"""

from saga.coordinator.state import SagaState, StepState
from saga.coordinator.timeline import render_timeline

__all__ = ["SagaState", "StepState", "render_timeline"]
