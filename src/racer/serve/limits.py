"""Per-key rate limits and spend caps (the ``limits:`` section of the configuration).

Before a request is routed, :meth:`KeyLimits.admit` refuses it with 429 and
``Retry-After`` when its key has used its requests of the last 60 seconds or its
dollars of the current UTC day; every finished decision's cost is added with
:meth:`KeyLimits.charge`. Counters are kept in this process's memory (see
:class:`~racer.serve.config.LimitsConfig`: per instance and per worker).
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Callable

from racer.serve.auth import key_fingerprint
from racer.serve.config import ConfigError, Limit, LimitsConfig
from racer.serve.errors import GatewayError

WINDOW_S = 60.0
DAY_S = 86_400.0
ANONYMOUS = "anonymous"  # the one counter of unauthenticated callers


def resolve_key_limits(config: LimitsConfig) -> dict[str, Limit]:
    """Each listed key's limits, by key fingerprint (``key_env`` read now).

    Raises
    ------
    ConfigError
        When a ``key_env`` variable is not set.
    """
    by_owner: dict[str, Limit] = {}
    for entry in config.keys:
        fingerprint = entry.fingerprint
        if entry.key_env is not None:
            key = os.environ.get(entry.key_env, "").strip()
            if not key:
                raise ConfigError(
                    f"limits.keys: environment variable {entry.key_env} (key_env) is not set; "
                    "set it to the gateway key it limits, or name the key by its fingerprint."
                )
            fingerprint = key_fingerprint(key)
        by_owner[str(fingerprint)] = Limit(
            requests_per_minute=entry.requests_per_minute, max_usd_per_day=entry.max_usd_per_day
        )
    return by_owner


class KeyLimits:
    """Requests in the last minute and dollars today, per key; 429 beyond the limits.

    Parameters
    ----------
    config : LimitsConfig
        The default limits and the keys with their own.
    clock : callable, default time.time
        Unix seconds (tests pass a fake clock).
    """

    def __init__(self, config: LimitsConfig, clock: Callable[[], float] = time.time):
        self.default = config.default
        self.by_owner = resolve_key_limits(config)
        self.clock = clock
        self.recent: dict[str, deque[float]] = {}
        self.spent: dict[str, tuple[int, float]] = {}  # owner -> (UTC day, dollars)

    def limit_of(self, owner: str | None) -> Limit:
        """The limits that apply to the key with fingerprint ``owner``."""
        return self.by_owner.get(owner or ANONYMOUS, self.default)

    def admit(self, owner: str | None) -> None:
        """Count one request of ``owner``, or refuse it.

        Raises
        ------
        GatewayError
            429 with ``Retry-After`` when the key's daily spend cap is reached or its
            requests of the last minute are at the rate limit.
        """
        key, limit, now = owner or ANONYMOUS, self.limit_of(owner), self.clock()
        if limit.max_usd_per_day is not None:
            day, dollars = self.spent.get(key, (int(now // DAY_S), 0.0))
            if day == int(now // DAY_S) and dollars >= limit.max_usd_per_day:
                raise GatewayError(
                    429,
                    f"This key has spent ${dollars:.4g} today, its cap is max_usd_per_day = "
                    f"{limit.max_usd_per_day:g}; it resets at 00:00 UTC.",
                    "rate_limit_error",
                    "spend_cap_exceeded",
                    headers={"Retry-After": str(max(1, math.ceil((day + 1) * DAY_S - now)))},
                )
        if limit.requests_per_minute is None:
            return
        recent = self.recent.setdefault(key, deque())
        while recent and recent[0] <= now - WINDOW_S:
            recent.popleft()
        if len(recent) >= limit.requests_per_minute:
            raise GatewayError(
                429,
                f"This key made {len(recent)} requests in the last minute, its limit is "
                f"requests_per_minute = {limit.requests_per_minute}.",
                "rate_limit_error",
                "rate_limit_exceeded",
                headers={"Retry-After": str(max(1, math.ceil(recent[0] + WINDOW_S - now)))},
            )
        recent.append(now)

    def charge(self, owner: str | None, cost_usd: float | None) -> None:
        """Add a finished decision's dollars to ``owner``'s spend of today."""
        if not cost_usd:
            return
        key, today = owner or ANONYMOUS, int(self.clock() // DAY_S)
        day, dollars = self.spent.get(key, (today, 0.0))
        self.spent[key] = (today, (dollars if day == today else 0.0) + cost_usd)
