"""A shadow route decides on live traffic without serving or calling anything; its
decisions are logged and compared with the served ones."""

from __future__ import annotations

import numpy as np
import pytest
from serve_fakes import MODELS, FixedThreshold, TableRouter, answering, chat, counting, serving

from racer.serve.config import RouteConfig
from racer.serve.monitor import RiskMonitor
from racer.serve.route import Route
from racer.serve.shadow_report import compare_sets, compare_shadow

ROUTER = TableRouter(
    {"easy": [0.9, 0.1, 0.1], "hard": [0.9, 0.7, 0.6], "odd": [0.1, 0.2, 0.3]},
    default=[0.9, 0.1, 0.1],
)


def shadow_route(threshold: float) -> Route:
    config = RouteConfig(name="racer.shadow", artifact="unused")
    return Route(config, ROUTER, FixedThreshold(threshold), MODELS, RiskMonitor(0.1, 0.05))


@pytest.mark.asyncio
async def test_shadow_decisions_are_logged_without_calls_and_compared(tmp_path):
    calls: dict[str, int] = {}
    upstreams = {m: counting(answering(m), calls, m) for m in MODELS}
    url = f"sqlite:///{tmp_path / 'decisions.sqlite3'}"
    async with serving(upstreams, ROUTER, log_url=url) as (client, gateway):
        gateway.routes["racer"].shadow = shadow_route(0.2)  # stricter: score >= 0.8 only
        ids = []
        for query in ("easy", "hard", "odd"):
            response = await client.post("/v1/chat/completions", json=chat(query))
            ids.append(response.json()["id"])
        labels = {"alpha-small": False, "beta-medium": True, "gamma-large": False}
        feedback = {"id": ids[1], "models_correct": labels}
        assert (await client.post("/v1/feedback", json=feedback)).status_code == 200
    report = compare_shadow(url, "racer.shadow")  # shut down: its shadows were waited for
    with pytest.raises(ValueError, match="no decision of the shadow route 'nope'"):
        compare_shadow(url, "nope")
    # served: easy {a}, hard {a, b, c}, odd {} ; the shadow: {a}, {a}, {}
    assert calls == {"alpha-small": 2, "beta-medium": 1, "gamma-large": 1}  # served calls only
    assert report["n"] == 3 and report["same_set"] == pytest.approx(2 / 3)
    assert report["served"]["mean_set_size"] == pytest.approx(4 / 3)
    assert report["shadow"]["mean_set_size"] == pytest.approx(2 / 3)
    assert report["shadow"]["call_rate"]["alpha-small"] == pytest.approx(2 / 3)
    # on the one fully labelled query, only beta is right: the shadow's {a} misroutes
    assert report["n_labelled"] == 1
    assert report["served"]["misrouting"] == 0.0 and report["shadow"]["misrouting"] == 1.0


def test_an_empty_set_misroutes_only_when_some_model_was_right():
    empty = np.zeros((2, 2), dtype=bool)
    labels = np.array([[0.0, 1.0], [0.0, 0.0]])
    report = compare_sets(["a", "b"], empty, empty, labels)
    assert report["served"]["misrouting"] == 0.5 and report["served"]["abstained"] == 1.0
