"""How a failing step is retried: a documented, frozen :class:`RetryPolicy`.

>>> policy = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=4)
>>> [round(policy.backoff(n).total_seconds(), 3) for n in (1, 2, 3)]
[0.2, 0.4, 0.8]

The delay after attempt ``n`` is ``initial_interval * backoff_coefficient ** (n - 1)``,
capped at ``maximum_interval``, then spread by ``jitter`` (a fraction: 0.2 means
anywhere within ±20%). Errors whose type (or a base type) is listed in
``non_retryable_error_types`` fail at once. Policies are executed with tenacity
(:func:`run_with_retry`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from saga.errors import SagaError

T = TypeVar("T")


class NonRetryableError(SagaError):
    """Raise (or subclass) this to fail a step at once, whatever the policy says."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """When and how often a failed attempt is tried again.

    Attributes:
        initial_interval: delay after the first failed attempt.
        backoff_coefficient: each further delay is this many times the previous.
        maximum_interval: no delay is longer (default: 100 x ``initial_interval``).
        maximum_attempts: attempts in all, the first included; 0 means no limit.
        jitter: random spread of each delay, as a fraction of it (0 to 1).
        non_retryable_error_types: exception types (or their names) that fail at once.
            :class:`NonRetryableError` and its subclasses always do.
    """

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 5
    jitter: float = 0.2
    non_retryable_error_types: tuple[type[BaseException] | str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.initial_interval < timedelta(0):
            raise ValueError("initial_interval must not be negative")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be at least 1")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval must not be below initial_interval")
        if self.maximum_attempts < 0:
            raise ValueError("maximum_attempts must be 0 (no limit) or more")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within 0..1")

    @property
    def cap(self) -> timedelta:
        return self.maximum_interval or self.initial_interval * 100

    def backoff(self, attempt: int) -> timedelta:
        """Delay after failed attempt ``attempt`` (1-based), before jitter."""
        seconds = self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1)
        return min(timedelta(seconds=seconds), self.cap)

    def delay(
        self,
        attempt: int,
        rand: Callable[[], float] = random.random,
        error: BaseException | None = None,
    ) -> timedelta:
        """Delay after failed attempt ``attempt``, with jitter applied.

        An error carrying ``retry_after`` (a ``timedelta``, e.g. an open
        circuit's time to its next probe) stretches the delay to at least that.
        """
        base = self.backoff(attempt).total_seconds()
        spread = base * self.jitter * (2 * rand() - 1)
        delay = timedelta(seconds=max(0.0, base + spread))
        after = getattr(error, "retry_after", None)
        return max(delay, after) if isinstance(after, timedelta) else delay

    def is_retryable(self, error: BaseException) -> bool:
        if isinstance(error, NonRetryableError):
            return False
        names = {t for t in self.non_retryable_error_types if isinstance(t, str)}
        types = tuple(t for t in self.non_retryable_error_types if not isinstance(t, str))
        if types and isinstance(error, types):
            return False
        return not any(cls.__name__ in names for cls in type(error).__mro__)

    def gives_up_after(self, attempt: int) -> bool:
        return self.maximum_attempts != 0 and attempt >= self.maximum_attempts


#: Retries nothing: one attempt.
NO_RETRY = RetryPolicy(maximum_attempts=1)


async def run_with_retry(
    policy: RetryPolicy,
    attempt_fn: Callable[[int], Awaitable[T]],
    *,
    keep_going: Callable[[], bool] = lambda: True,
    before_sleep: Callable[[int, BaseException, timedelta], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    first_failed: Exception | None = None,
) -> T:
    """Call ``attempt_fn(attempt)`` until it succeeds or ``policy`` gives up.

    Raises the last error when attempts are exhausted, at once for a
    non-retryable error, and as soon as ``keep_going()`` turns false. The first
    attempt runs without retry machinery (the common case costs nothing); the
    retries run under tenacity. ``first_failed``: the first attempt was made
    elsewhere and failed with this error; go on from the second.
    """

    def retry(error: BaseException) -> bool:
        return policy.is_retryable(error) and keep_going()

    if first_failed is None:
        try:
            return await attempt_fn(1)
        except Exception as error:
            first_failed = error
    if not retry(first_failed) or policy.gives_up_after(1):
        raise first_failed
    delay = policy.delay(1, error=first_failed)
    if before_sleep is not None:
        before_sleep(1, first_failed, delay)
    await sleep(delay.total_seconds())

    # tenacity counts its own attempts from 1; ours continue from 2.
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return policy.delay(state.attempt_number + 1, error=error).total_seconds()

    def stop(state: RetryCallState) -> bool:
        return policy.gives_up_after(state.attempt_number + 1)

    def notify(state: RetryCallState) -> None:
        if before_sleep is not None and state.outcome is not None and state.next_action:
            error = state.outcome.exception()
            assert error is not None
            before_sleep(
                state.attempt_number + 1, error, timedelta(seconds=state.next_action.sleep)
            )

    retrying = AsyncRetrying(
        wait=wait,
        retry=retry_if_exception(retry),
        stop=stop,
        before_sleep=notify,
        sleep=sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_fn(attempt.retry_state.attempt_number + 1)
    raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover
