"""Watching the calibrated promise in production: is the misrouting rate still <= alpha?

Feedback arrives one loss at a time (1 = misrouted, 0 = not). For every level m on a
grid in (0, 1) the monitor bets against the null hypothesis "the misrouting rate is
at most m" with the wealth process

    K_t(m) = prod_{i <= t} (1 + lambda_i(m) * (L_i - m)),   0 <= lambda_i(m) <= c / m,

which is a non-negative supermartingale under that null whatever the bets, as long
as each bet uses only earlier losses (Waudby-Smith and Ramdas, 2024, "Estimating
means of bounded random variables by betting"; the aGRAPA bet). By Ville's
inequality, P(K_t(m) >= 1/delta at any time t) <= delta under the null, so the levels
whose wealth has ever reached 1/delta form an anytime-valid lower confidence sequence
on the misrouting rate: it may be looked at after every feedback, forever, and
still be wrong with probability at most delta. When alpha itself is rejected, "risk
<= alpha" is no longer supported by the feedback and the gateway raises the alarm
(it stays raised: the time to recalibrate has come).

Feedback must be a fair sample of the traffic: feedback given mostly on bad answers
raises the alarm early.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_MAX_BET_FRACTION = 0.5


class RiskMonitor:
    """Anytime-valid one-sided test of "misrouting rate <= alpha" from streamed losses.

    Parameters
    ----------
    alpha : float
        The promised risk level (the route's calibrated alpha).
    delta : float, default 0.05
        The false-alarm probability over the whole unbounded stream.
    grid_size : int, default 999
        How many levels in (0, 1) the lower confidence bound is resolved on.

    Examples
    --------
    >>> monitor = RiskMonitor(alpha=0.1, delta=0.05)
    >>> for loss in [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]:
    ...     monitor.update(loss)
    >>> monitor.alarm
    True
    """

    def __init__(self, alpha: float, delta: float = 0.05, grid_size: int = 999):
        if not 0 < alpha < 1 or not 0 < delta < 1:
            raise ValueError(f"alpha and delta must be in (0, 1), got {alpha} and {delta}.")
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.levels = np.union1d(np.linspace(0, 1, grid_size + 2)[1:-1], [self.alpha])
        self._alpha_index = int(np.searchsorted(self.levels, self.alpha))
        self._log_wealth = np.zeros_like(self.levels)
        self._rejected = np.zeros(self.levels.shape, dtype=bool)
        self._threshold = math.log(1 / self.delta)
        self.n = 0
        self.total_loss = 0.0
        self._total_squares = 0.0

    def _bets(self) -> np.ndarray:
        """aGRAPA bets from the losses seen so far (predictable: before the new loss)."""
        mean = (0.5 + self.total_loss) / (self.n + 1)
        squares = self._total_squares - 2 * mean * self.total_loss + self.n * mean**2
        variance = (0.25 + squares) / (self.n + 1)
        gap = mean - self.levels
        raw = gap / (max(variance, 1e-6) + gap**2)
        return np.clip(raw, 0.0, _MAX_BET_FRACTION / self.levels)

    def update(self, loss: float) -> bool:
        """Add one loss in [0, 1]; return True when this loss raised the alarm."""
        loss = float(loss)
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"A loss must be in [0, 1], got {loss}.")
        was_alarmed = self.alarm
        self._log_wealth += np.log1p(self._bets() * (loss - self.levels))
        self._rejected |= self._log_wealth >= self._threshold
        self.n += 1
        self.total_loss += loss
        self._total_squares += loss * loss
        return self.alarm and not was_alarmed

    @property
    def alarm(self) -> bool:
        """Whether "misrouting rate <= alpha" has been rejected (at level delta)."""
        return bool(self._rejected[self._alpha_index])

    @property
    def mean_loss(self) -> float | None:
        """The realised misrouting rate, None before any feedback."""
        return self.total_loss / self.n if self.n else None

    @property
    def lower_bound(self) -> float:
        """Anytime-valid lower confidence bound on the misrouting rate (0 when none)."""
        not_rejected = np.flatnonzero(~self._rejected)
        first_kept = not_rejected[0] if not_rejected.size else self.levels.size
        return float(self.levels[first_kept - 1]) if first_kept > 0 else 0.0

    def state(self) -> dict[str, Any]:
        """A JSON-ready summary for health checks and metrics."""
        return {
            "alpha": self.alpha,
            "delta": self.delta,
            "n_feedback": self.n,
            "misrouting_rate": self.mean_loss,
            "risk_lower_bound": self.lower_bound,
            "alarm": self.alarm,
        }
