"""Test kits: a saga's decisions, a step service, and whole sagas, without a broker.

* :class:`SagaScenario`: a saga definition on the coordinator's pure decisions,
  fact by fact; a timeout is a call (:mod:`saga.testing.scenario`). What it
  records are the coordinator's own :class:`Decision`, :class:`CommandToSend`,
  :class:`EventToPublish` and :class:`TaskChange`.
* :class:`ServiceTestKit`: one step service's handlers, run as in production
  (:mod:`saga.testing.service_kit`).
* :class:`InMemorySagaSystem`: the coordinator and services together, in one
  process, over :class:`InMemoryTransport` (:mod:`saga.testing.system`).
* The pytest plugin (:mod:`saga.testing.pytest_plugin`, loaded by pytest when
  the package is installed): fixtures ``saga_database_url`` and ``saga_stack``.
"""

from saga.coordinator.decide import CommandToSend, Decision, EventToPublish, TaskChange
from saga.testing.scenario import SagaScenario
from saga.testing.service_kit import ServiceTestKit
from saga.testing.system import InMemorySagaSystem
from saga.testing.transport import InMemoryTransport

__all__ = [
    "CommandToSend",
    "Decision",
    "EventToPublish",
    "InMemorySagaSystem",
    "InMemoryTransport",
    "SagaScenario",
    "ServiceTestKit",
    "TaskChange",
]
