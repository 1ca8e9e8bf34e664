"""A per-backend circuit breaker: a dead or hung upstream costs one probe per cooldown.

States: *closed* (calls go through), *open* (calls fail at once, for the cooldown),
*half-open* (the cooldown is over: exactly one call, the probe, goes through; the
others still fail at once). The probe's success closes the breaker, its failure opens
it again for twice the last cooldown (at most ``max_cooldown_s``), so a backend that
comes back is probed early and one that stays down is probed ever more rarely.
``failures`` consecutive failures open a closed breaker.

Only the backend's own failures count (see :class:`racer.serve.backends.Backend`): a
call that ends with a client error, a refusal or a cancellation is *released*, telling
nothing about the backend. Every transition is logged (logger ``racer.serve``) and
passed to the breaker's listeners (the gateway's metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("racer.serve")

# The breaker state as a number, for the ``racer_breaker_state`` gauge.
STATE_CODES = {"closed": 0, "half_open": 1, "open": 2}
# Called with (backend name, old state, new state) on every transition.
Listener = Callable[[str, str, str], None]


class CircuitBreaker:
    """Consecutive-failure circuit breaker with a growing cooldown and a single probe.

    Parameters
    ----------
    failures : int
        Consecutive failures that open the breaker.
    cooldown_s : float
        How long the breaker stays open the first time before one probe is let through.
    max_cooldown_s : float, optional
        The longest cooldown: each failed probe doubles the last one up to this.
        Unset: every cooldown is ``cooldown_s``.
    name : str, default ""
        The backend's name, for the log and the listeners.
    clock : callable, default time.monotonic
        The time source (for tests).

    Examples
    --------
    >>> now = [0.0]
    >>> breaker = CircuitBreaker(2, 1.0, 4.0, clock=lambda: now[0])
    >>> breaker.failure(); breaker.failure(); breaker.admit()
    False
    >>> now[0] = 1.0
    >>> breaker.admit(), breaker.admit()  # one probe per cooldown window
    (True, False)
    >>> breaker.failure(); breaker.retry_in()  # the probe failed: twice the cooldown
    2.0
    """

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        max_cooldown_s: float | None = None,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max(cooldown_s, max_cooldown_s or cooldown_s)
        self.name = name
        self.listeners: list[Listener] = []
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._cooldown = cooldown_s
        self._probing = False
        self.probes = 0

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (a probe may go or is in flight)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    @property
    def state_code(self) -> int:
        """The state as a number: 0 closed, 1 half-open, 2 open."""
        return STATE_CODES[self.state]

    def retry_in(self) -> float:
        """Seconds until the next probe may go (0 when a call may go now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def admit(self) -> bool:
        """Whether a call may go now; a True in half-open state makes it the probe."""
        if self._opened_at is None:
            return True
        if self._probing or self._clock() - self._opened_at < self._cooldown:
            return False
        self._probing = True
        self.probes += 1
        self._moved("open", "half_open")
        return True

    @property
    def probing(self) -> bool:
        """Whether the call in flight is the half-open probe."""
        return self._probing

    def success(self) -> None:
        """A call answered: close the breaker."""
        old = self.state
        self._consecutive = 0
        self._opened_at = None
        self._cooldown = self.cooldown_s
        self._probing = False
        if old != "closed":
            self._moved(old, "closed")

    def failure(self) -> None:
        """A call failed: count it; open at the limit, again when the probe failed.

        A failure once the cooldown is over is the probe's (or as good as); one that
        comes while the breaker is open (a call sent before it opened) changes nothing.
        """
        self._consecutive += 1
        if self._opened_at is None:
            if self._consecutive >= self.failures:
                self._opened_at = self._clock()
                self._moved("closed", "open")
        elif self.state == "half_open":
            self._cooldown = min(2 * self._cooldown, self.max_cooldown_s)
            self._opened_at = self._clock()
            self._probing = False
            self._moved("half_open", "open")

    def release(self) -> None:
        """A call ended without telling anything about the backend (cancelled, client error)."""
        if self._probing:  # let the next call probe, the cooldown being over
            self._probing = False

    def _moved(self, old: str, new: str) -> None:
        if new == "open":
            logger.warning(
                "backend %r: circuit open after %d consecutive failure(s); next probe in %.3g s",
                self.name,
                self._consecutive,
                self._cooldown,
            )
        elif new == "half_open":
            logger.info("backend %r: circuit half-open, probing", self.name)
        else:
            logger.info("backend %r: circuit closed, the backend answered", self.name)
        for listener in self.listeners:
            listener(self.name, old, new)

    def describe(self) -> dict[str, Any]:
        """The JSON-ready state for health checks."""
        return {
            "state": self.state,
            "consecutive_failures": self._consecutive,
            "retry_in_s": round(self.retry_in(), 3),
            "cooldown_s": self._cooldown,
            "probes": self.probes,
        }
