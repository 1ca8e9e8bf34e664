"""A per-backend circuit breaker: a dead or hung upstream costs one probe per cooldown.

States: *closed* (calls go through), *open* (calls fail at once, for ``cooldown_s``),
*half-open* (the cooldown is over: exactly one call, the probe, goes through; the
others still fail at once). The probe's success closes the breaker, its failure opens
it for another cooldown. ``failures`` consecutive failures open a closed breaker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a cooldown and a single probe.

    Parameters
    ----------
    failures : int
        Consecutive failures that open the breaker.
    cooldown_s : float
        How long the breaker stays open before one probe is let through.
    clock : callable, default time.monotonic
        The time source (for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> breaker = CircuitBreaker(2, 10.0, clock=lambda: now[0])
    >>> breaker.failure(); breaker.failure(); breaker.admit()
    False
    >>> now[0] = 10.0
    >>> breaker.admit(), breaker.admit()  # one probe per cooldown window
    (True, False)
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ):
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.probes = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (a probe may go or is in flight)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def retry_in(self) -> float:
        """Seconds until the next probe may go (0 when a call may go now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_s - self._clock())

    def admit(self) -> bool:
        """Whether a call may go now; a True in half-open state makes it the probe."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self.cooldown_s:
            return False
        self._probing = True
        self.probes += 1
        return True

    @property
    def probing(self) -> bool:
        """Whether the call in flight is the half-open probe."""
        return self._probing

    def success(self) -> None:
        """A call answered: close the breaker."""
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A call failed: count it; open (again) at the limit or when the probe failed."""
        self._consecutive += 1
        if self._probing or self._consecutive >= self.failures:
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """A call ended without telling anything about the backend (cancelled, 429)."""
        if self._probing:  # let the next call probe, the cooldown being over
            self._probing = False

    def describe(self) -> dict[str, Any]:
        """The JSON-ready state for health checks."""
        return {
            "state": self.state,
            "consecutive_failures": self._consecutive,
            "retry_in_s": round(self.retry_in(), 3),
            "probes": self.probes,
        }
