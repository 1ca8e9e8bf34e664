"""Per-key rate limits and spend caps: 429 with Retry-After beyond them, per key."""

from __future__ import annotations

import pytest
from serve_fakes import KEY, MODELS, TableRouter, answering, chat, serving

from racer.serve.auth import key_fingerprint
from racer.serve.config import ConfigError, LimitsConfig
from racer.serve.errors import GatewayError
from racer.serve.limits import KeyLimits

ONLY_A = TableRouter({}, default=[0.9, 0.1, 0.1])


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_rate_limit_counts_a_sliding_minute_per_key():
    clock = Clock(1_000.0)
    limits = KeyLimits(LimitsConfig(default={"requests_per_minute": 2}), clock)
    limits.admit("k1")
    clock.now += 20
    limits.admit("k1")
    limits.admit("k2")  # another key has its own counter
    with pytest.raises(GatewayError) as refused:
        limits.admit("k1")
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers == {"Retry-After": "40"}  # the first request leaves at +60
    clock.now += 40
    limits.admit("k1")


def test_the_spend_cap_holds_until_utc_midnight(monkeypatch):
    monkeypatch.setenv("TEAM_KEY", "team-secret")
    team = key_fingerprint("team-secret")
    clock = Clock(86_400.0 * 100 + 3_600)  # 01:00 UTC
    config = LimitsConfig(keys=[{"key_env": "TEAM_KEY", "max_usd_per_day": 1.0}])
    limits = KeyLimits(config, clock)
    limits.admit(team)
    limits.charge(team, 0.6)
    limits.admit(team)
    limits.charge(team, 0.6)  # the request that crosses the cap was answered
    with pytest.raises(GatewayError) as refused:
        limits.admit(team)
    assert refused.value.code == "spend_cap_exceeded"
    assert refused.value.headers == {"Retry-After": str(23 * 3_600)}
    limits.admit("someone-else")  # the default: no cap
    clock.now += 23 * 3_600
    limits.admit(team)  # a new UTC day


def test_a_key_env_that_is_not_set_is_a_config_error(monkeypatch):
    monkeypatch.delenv("MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="MISSING_KEY"):
        KeyLimits(LimitsConfig(keys=[{"key_env": "MISSING_KEY", "requests_per_minute": 1}]))


@pytest.mark.asyncio
async def test_over_its_limits_a_key_gets_429_with_retry_after():
    upstreams = {m: answering(m) for m in MODELS}
    # each answer costs 10 * 0.001 + 5 * 0.002 = $0.02
    limits = {"keys": [{"fingerprint": key_fingerprint(KEY), "max_usd_per_day": 0.03}]}
    async with serving(upstreams, ONLY_A, limits=limits) as (client, _):
        answered = [await client.post("/v1/chat/completions", json=chat("q")) for _ in range(2)]
        streamed = await client.post("/v1/chat/completions", json=chat("q", stream=True))
    assert [r.status_code for r in answered] == [200, 200]
    assert streamed.status_code == 429
    assert int(streamed.headers["Retry-After"]) >= 1
    assert streamed.json()["error"]["code"] == "spend_cap_exceeded"


def test_a_key_limit_names_its_key_exactly_once():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of key_env and fingerprint"):
        LimitsConfig(keys=[{"key_env": "K", "fingerprint": "0" * 32, "requests_per_minute": 1}])
