"""Slices of traffic at the gateway: a request's group picks its certificate, is logged,
and has its own monitor in /healthz and /metrics."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from serve_fakes import ADMIN, MODELS, TableRouter, answering, chat, serving

from racer.estimator import RACER
from racer.groups import POOLED

A, B, C = MODELS
SCORES = [0.8, 0.6, 0.3]
ROUTER = TableRouter({}, default=SCORES)


def _fitted(small_groups: str = "raise", tiny: bool = False) -> RACER:
    """RACER per group: on "easy" the top model is always right (small sets), on "hard"
    it is right half the time (larger sets); ``tiny`` adds two groups too small to certify
    on their own."""
    rng = np.random.default_rng(0)
    n = 600
    scores = np.tile(SCORES, (2 * n, 1)) + rng.uniform(-0.05, 0.05, size=(2 * n, 3))
    labels = np.zeros((2 * n, 3))
    labels[:n, 0] = 1.0
    labels[n:] = rng.uniform(size=(n, 3)) < 0.6
    groups = np.array(["easy"] * n + ["hard"] * n, dtype=object)
    if tiny:
        groups[:8], groups[8:16] = "tiny-1", "tiny-2"
    return RACER(0.2, 0.1, abstention="off", small_groups=small_groups).fit(
        scores, labels, groups=groups
    )


def _expected_set(racer: RACER, group: str) -> list[str]:
    row = racer.predict(np.array([SCORES]), groups=[group])[0]
    return [MODELS[k] for k in np.argsort(SCORES)[::-1] if row[k]]


def _upstreams(seen: list[dict]) -> dict:
    def recording(text):
        answer = answering(text)

        async def handle(request: httpx.Request) -> httpx.Response:
            seen.append(json.loads(request.content))
            return await answer(request)

        return handle

    return {m: recording(f"{m}-answer") for m in MODELS}


@pytest.mark.asyncio
async def test_each_group_gets_its_own_set_logged_and_monitored():
    racer = _fitted()
    easy, hard = _expected_set(racer, "easy"), _expected_set(racer, "hard")
    assert easy != hard  # the groups' certificates differ, so the test can tell them apart
    seen: list[dict] = []
    async with serving(_upstreams(seen), ROUTER, calibration=racer) as (client, gateway):
        by_metadata = await client.post(
            "/v1/chat/completions", json=chat("q", metadata={"racer_group": "hard", "k": "v"})
        )
        by_header = await client.post(
            "/v1/chat/completions", json=chat("q"), headers={"x-racer-group": "easy"}
        )
        hard_racer, easy_racer = by_metadata.json()["racer"], by_header.json()["racer"]
        feedback = await client.post(
            "/v1/feedback", json={"id": hard_racer["id"], "correct": False}
        )
        assert feedback.status_code == 200
        metrics = (await client.get("/metrics", headers=ADMIN)).text
        health = (await client.get("/healthz", headers=ADMIN)).json()
        logged = await gateway.decision_log.find(hard_racer["id"])
    assert by_metadata.status_code == 200 and by_header.status_code == 200
    assert hard_racer["set"] == hard and hard_racer["group"] == "hard"
    assert hard_racer["threshold"] == racer.groups_["hard"].threshold
    assert easy_racer["set"] == easy and easy_racer["group"] == "easy"
    assert logged is not None and logged.group_name == "hard"
    # the gateway's metadata entry is not forwarded; the caller's other entries are
    assert all(body.get("metadata", {}) in ({}, {"k": "v"}) for body in seen)
    assert any(body.get("metadata") == {"k": "v"} for body in seen)
    assert 'racer_group_monitor_feedback{group="hard",route="racer"} 1.0' in metrics
    assert 'racer_group_requests_total{group="easy",outcome="answered",route="racer"} 1.0' in (
        metrics
    )
    groups = health["routes"]["racer"]["groups"]
    assert groups["hard"]["monitor"]["misrouting_rate"] == 1.0 and groups["hard"]["above_alpha"]
    assert groups["hard"]["note"] == (
        "hard: misrouting rate 1.00 from feedback under a certificate of 0.1"
    )
    assert groups["easy"]["monitor"]["n_feedback"] == 0 and not groups["easy"]["above_alpha"]
    assert groups["easy"]["certificate"]["n"] == racer.groups_["easy"].n


@pytest.mark.asyncio
async def test_an_unknown_or_missing_group_is_400_naming_the_known_groups():
    async with serving(_upstreams([]), ROUTER, calibration=_fitted()) as (client, _):
        unknown = await client.post(
            "/v1/chat/completions", json=chat("q", metadata={"racer_group": "tenant-7"})
        )
        missing = await client.post("/v1/chat/completions", json=chat("q"))
        not_text = await client.post(
            "/v1/chat/completions", json=chat("q", metadata={"racer_group": 7})
        )
    assert unknown.status_code == 400
    assert "certifies the groups ['easy', 'hard']" in unknown.json()["error"]["message"]
    assert unknown.json()["error"]["code"] == "unknown_group"
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_group"
    assert not_text.status_code == 400


@pytest.mark.asyncio
async def test_an_unknown_group_is_served_by_the_pooled_certificate_when_there_is_one():
    racer = _fitted(small_groups="pool", tiny=True)
    assert POOLED in racer.groups_
    async with serving(_upstreams([]), ROUTER, calibration=racer) as (client, _):
        response = await client.post(
            "/v1/chat/completions", json=chat("q", metadata={"racer_group": "tenant-7"})
        )
    body = response.json()["racer"]
    assert response.status_code == 200
    assert body["group"] == "tenant-7" and body["certificate_group"] == POOLED
    assert body["set"] == _expected_set(racer, "tenant-7") == _expected_set(racer, POOLED)
    assert body["threshold"] == racer.groups_[POOLED].threshold
