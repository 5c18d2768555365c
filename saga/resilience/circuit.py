"""Circuit breakers: stop calling a dependency that keeps failing, probe it later.

>>> bank = CircuitBreaker("bank", failure_threshold=3, window=timedelta(seconds=30),
...                       reset_timeout=timedelta(seconds=10))
>>> async def charge() -> None:
...     async with bank:          # raises CircuitOpen at once while the circuit is open
...         ...                   # call the bank here

States: **closed** (calls go through; failures within ``window`` are counted),
**open** after ``failure_threshold`` of them (calls fail fast with
:class:`CircuitOpen`, a retryable error, so the step's retry policy tries again
later instead of hammering the dependency), **half-open** once
``reset_timeout`` has passed (one probe call goes through: success closes the
circuit, failure opens it again). Transitions are logged and counted in the
``saga.circuit.transitions`` metric; the current state is the
``saga.circuit.state`` gauge (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from types import TracebackType

from opentelemetry import metrics

from saga.errors import SagaError

log = logging.getLogger(__name__)
_meter = metrics.get_meter("saga")
_transitions = _meter.create_counter(
    "saga.circuit.transitions", description="Circuit breaker state changes"
)


class CircuitState(Enum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


_GAUGE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class CircuitOpen(SagaError):
    """The dependency's circuit is open: the call was not made. Retryable."""

    def __init__(self, name: str, retry_in: timedelta) -> None:
        super().__init__(f"circuit {name!r} is open; next probe in {retry_in.total_seconds():.1f}s")
        self.name = name
        #: Read by the retry policy: the next attempt waits at least this long.
        self.retry_after = retry_in


@dataclass
class BreakerLogic:
    """The pure state machine: every decision takes the current time as input."""

    failure_threshold: int
    window: float
    reset_timeout: float
    state: CircuitState = CircuitState.CLOSED
    failures: deque[float] = field(default_factory=deque)
    opened_at: float = 0.0
    probing: bool = False

    def allow(self, now: float) -> bool:
        """May a call go through now? In half-open, only one probe at a time."""
        if self.state is CircuitState.OPEN and now - self.opened_at >= self.reset_timeout:
            self.state = CircuitState.HALF_OPEN
            self.probing = False
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def success(self, now: float) -> None:
        if self.state is CircuitState.HALF_OPEN:
            # The probe worked: close, and start counting afresh.
            self.failures.clear()
            self.state = CircuitState.CLOSED
        # While closed, failures within the window keep counting across successes.
        self.probing = False

    def release(self) -> None:
        """A granted probe did not happen (the attempt stopped before the call)."""
        self.probing = False

    def failure(self, now: float) -> None:
        if self.state is CircuitState.HALF_OPEN:
            self._open(now)
            return
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.window:
            self.failures.popleft()
        if len(self.failures) >= self.failure_threshold:
            self._open(now)

    def retry_in(self, now: float) -> float:
        return max(0.0, self.opened_at + self.reset_timeout - now)

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = now
        self.failures.clear()
        self.probing = False


class CircuitBreaker:
    """A named breaker for one downstream dependency; use as ``async with breaker:``."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        window: timedelta = timedelta(seconds=60),
        reset_timeout: timedelta = timedelta(seconds=30),
        counts_as_failure: Callable[[BaseException], bool] = lambda error: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.name = name
        self._logic = BreakerLogic(
            failure_threshold, window.total_seconds(), reset_timeout.total_seconds()
        )
        self._counts_as_failure = counts_as_failure
        self._clock = clock
        _known[name] = self

    @property
    def state(self) -> CircuitState:
        """The state as of now (an open circuit past its timeout reads half-open)."""
        logic = self._logic
        if (
            logic.state is CircuitState.OPEN
            and self._clock() - logic.opened_at >= logic.reset_timeout
        ):
            return CircuitState.HALF_OPEN
        return logic.state

    def check(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go through now."""
        now = self._clock()
        before = self._logic.state
        allowed = self._logic.allow(now)
        self._changed(before)
        if not allowed:
            raise CircuitOpen(self.name, timedelta(seconds=self._logic.retry_in(now)))

    def record(self, error: BaseException | None) -> None:
        before = self._logic.state
        if error is None:
            self._logic.success(self._clock())
        elif self._counts_as_failure(error):
            self._logic.failure(self._clock())
        else:
            # Not the dependency's fault (e.g. a business refusal): a working call.
            self._logic.success(self._clock())
        self._changed(before)

    def release(self) -> None:
        """Give back a probe granted by :meth:`check` when no call was made after all."""
        self._logic.release()

    async def __aenter__(self) -> CircuitBreaker:
        self.check()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception) or exc is None:
            self.record(exc)

    def _changed(self, before: CircuitState) -> None:
        after = self._logic.state
        if after is before:
            return
        level = logging.WARNING if after is CircuitState.OPEN else logging.INFO
        log.log(level, "circuit %r: %s -> %s", self.name, before.value, after.value)
        _transitions.add(1, {"circuit": self.name, "from": before.value, "to": after.value})

    @classmethod
    def states(cls, names: Iterable[str] | None = None) -> dict[str, str]:
        """Current state of each known breaker (for health output)."""
        chosen = dict(_known) if names is None else {n: _known[n] for n in names if n in _known}
        return {name: breaker.state.value for name, breaker in chosen.items()}


# Breakers by name, for the gauge and health output; gone when their owner is.
_known: weakref.WeakValueDictionary[str, CircuitBreaker] = weakref.WeakValueDictionary()


def _observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
    for name, breaker in list(_known.items()):
        yield metrics.Observation(_GAUGE_VALUE[breaker.state], {"circuit": name})


_meter.create_observable_gauge(
    "saga.circuit.state",
    callbacks=[_observe],
    description="Circuit breaker state: 0 closed, 1 half-open, 2 open",
)
