"""How long a consumer's fetches wait for data: longer and longer while it is idle.

A broker that answers a waiting fetch as soon as data arrives (Apache Kafka) makes a
long ``fetch_max_wait_ms`` free. One that does not (the embedded dev broker, Tansu)
answers only when the wait is over, so a short wait is needed to keep hops fast, and
an idle consumer then sends a fetch every few milliseconds, which costs the broker
and the client CPU with nothing to do.

:class:`FetchWait` lets the wait grow while a consumer has nothing to handle: after
``step_s`` without a record it doubles, and again after each further ``step_s``, up
to ``idle_ms``; the first record back sets it to ``base_ms`` again. A record that
arrives after an idle spell of ``t`` seconds is thus delayed by at most the wait of
that moment, which the schedule keeps small next to ``t``. With ``idle_ms`` at or
below ``base_ms`` (e.g. against Apache Kafka with its 500 ms wait) the wait never
changes.

>>> wait = FetchWait(base_ms=5, idle_ms=100, step_s=1.0)
>>> [wait.update(busy=False, now=t) for t in (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 9.0)]
[5, 5, 10, 20, 40, 80, 100, 100]
>>> wait.update(busy=True, now=9.1)
5
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FetchWait:
    """The fetch wait (ms) to use next, from whether the consumer had work and when."""

    base_ms: int
    idle_ms: int
    step_s: float = 1.0
    _idle_since: float | None = field(default=None, init=False, repr=False)

    @property
    def adapts(self) -> bool:
        """Whether the wait ever grows (it does not when the bound is not above the base)."""
        return self.idle_ms > self.base_ms and self.step_s > 0

    def update(self, *, busy: bool, now: float) -> int:
        """The wait after a poll at ``now``: ``busy`` if records came or are being
        handled (the idle spell ends), else the idle spell goes on (or starts)."""
        if busy or not self.adapts:
            self._idle_since = None
            return self.base_ms
        if self._idle_since is None:
            self._idle_since = now
        return self.wait_after(now - self._idle_since)

    def wait_after(self, idle_s: float) -> int:
        """The wait after ``idle_s`` seconds without work."""
        if not self.adapts or idle_s < self.step_s:
            return self.base_ms
        doublings = int(idle_s / self.step_s)
        wait = max(self.base_ms, 1)
        for _ in range(doublings):
            wait *= 2
            if wait >= self.idle_ms:
                return self.idle_ms
        return wait
