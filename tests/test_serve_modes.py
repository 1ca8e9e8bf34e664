"""The gateway serves the abstention semantics its artifact was calibrated for (issue 8):
strict abstentions call no backend, flag answers carry ``racer.abstain_flag``, the log
keeps the mode and column 0, feedback feeds the mode's served loss to the monitor, and
an artifact calibrated for another mode is refused at start-up.

End to end over loopback on RouterBench ARC: feedback on every routed query of the
calibration pool makes the monitor's realised risk equal ``RACER.risk`` on the same
queries, for flag and strict, and the correctly calibrated route raises no alarm."""

from __future__ import annotations

import asyncio
import warnings

import httpx
import numpy as np
import pytest
import yaml
from serve_fakes import MODELS, FixedThreshold, TableRouter, answering, chat, counting, serving

from racer.artifact import save_artifact
from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.routers.embeddings import TfidfEmbedder
from racer.routers.linear import LogisticRouter
from racer.serve.app import app_from_config
from racer.serve.config import ConfigError, load_config
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.route import load_route
from racer.serve.runner import ServerThread

A, B, C = MODELS
UNSURE = TableRouter({}, default=[0.45, 0.3, 0.2])  # abstain score 1 - 0.45 = 0.55
KEY = "modes-key"


def handlers():
    return {m: answering(f"{m} answer") for m in MODELS}


@pytest.mark.asyncio
async def test_strict_abstention_calls_no_backend_and_flag_mode_calls_the_set():
    calls: dict[str, int] = {}
    counted = {m: counting(h, calls, m) for m, h in handlers().items()}
    strict = FixedThreshold(0.6, mode="strict", abstain_threshold=0.5)
    async with serving(counted, UNSURE, calibration=strict) as (client, gateway):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        stored = await gateway.decision_log.find(body["id"])
    assert calls == {} and body["racer"]["abstained"] and body["racer"]["set"] == []
    assert body["racer"]["abstention"] == "strict"
    reason = (
        f"the abstain score 0.550 reached the calibrated abstention threshold 0.500 (best: {A} "
        "0.450)"
    )
    assert body["racer"]["refused"] and body["racer"]["refusal_reason"] == reason
    assert body["choices"][0]["message"]["content"] == f"I cannot answer this reliably: {reason}."
    assert stored.mode == "strict" and stored.abstain_flag is True and stored.abstained

    flag = FixedThreshold(0.6, mode="flag")
    async with serving(counted, UNSURE, calibration=flag) as (client, gateway):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        stored = await gateway.decision_log.find(body["id"])
        # A flagged answer to a query no model can answer is not a misroute ...
        nobody = {"id": body["id"], "models_correct": {A: False, B: False, C: False}}
        loss = (await client.post("/v1/feedback", json=nobody)).json()["loss"]
    assert calls == {A: 1} and body["racer"]["abstain_flag"] is True
    assert body["racer"]["flagged"] and not body["racer"]["refused"]
    assert body["choices"][0]["message"]["content"] == f"{A} answer"
    assert stored.mode == "flag" and stored.abstain_flag is True and loss == 0.0

    off = FixedThreshold(0.6, mode="off")
    async with serving(handlers(), UNSURE, calibration=off) as (client, _):
        body = (await client.post("/v1/chat/completions", json=chat("q"))).json()
        nobody = {"id": body["id"], "models_correct": {A: False, B: False, C: False}}
        some = {"id": body["id"], "models_correct": {A: False, B: True, C: False}}
        assert (await client.post("/v1/feedback", json=nobody)).json()["loss"] == 0.0
        assert (await client.post("/v1/feedback", json=some)).status_code == 409
    assert body["racer"]["abstain_flag"] is None


@pytest.fixture(scope="module")
def arc(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = load_dataset(shared_data / "routerbench" / "arc_challenge_train.csv")
    cut = int(0.6 * train.n_queries)
    names = list(train.model_names)
    embedder = TfidfEmbedder(n_components=32, max_features=4000, progress=False)
    router = LogisticRouter(C=1.0, embedder=embedder).fit(
        list(train.queries[:cut]), train.labels[:cut], model_names=names
    )
    pool = train.subset(np.arange(cut, train.n_queries))
    return train, router, pool, router.predict_proba(list(pool.queries))


def test_a_route_refuses_an_artifact_calibrated_for_another_mode(arc, tmp_path):
    _, router, pool, scores = arc
    racer = RACER(alpha=0.2, delta=0.1, abstention="flag").fit(
        scores, pool.labels, model_names=list(pool.model_names)
    )
    save_artifact(tmp_path / "flag", router, racer)
    config = {
        "backends": [{"name": m, "base_url": "http://127.0.0.1:9/v1"} for m in pool.model_names],
        "routes": [{"name": "r", "artifact": "flag", "abstention": "strict"}],
        "auth": {"api_keys": [KEY]},
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    route = load_config(tmp_path / "gateway.yaml").routes[0]
    with pytest.raises(ConfigError, match="calibrated for abstention 'flag'.*asks for .*'strict'"):
        load_route(route, 0.05)
    assert load_route(route.model_copy(update={"abstention": "flag"}), 0.05).mode == "flag"


@pytest.mark.parametrize("mode", ["flag", "strict"])
def test_feedback_on_every_routed_query_gives_the_monitor_racers_served_risk(arc, mode, tmp_path):
    train, router, pool, scores = arc
    pool, scores = pool.subset(np.arange(220)), scores[:220]  # calibration and traffic
    names = list(pool.model_names)
    racer = RACER(alpha=0.2, delta=0.1, abstention=mode).fit(scores, pool.labels, model_names=names)
    save_artifact(tmp_path / "artifact", router, racer)
    expected = racer.risk(scores, pool.labels)
    book = ReplayBook(train)
    with ServerThread([create_replay_app(book, m) for m in names]) as replays:
        config = {
            "backend_defaults": {"timeout_s": 20, "retries": 1, "backoff_s": 0.01},
            "backends": [
                {"name": m, "base_url": f"{u}/v1"} for m, u in zip(names, replays.urls, strict=True)
            ],
            "routes": [{"name": "racer", "artifact": "artifact", "abstention": mode}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": "sqlite:///decisions.sqlite3"},
        }
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        with ServerThread([app_from_config(load_config(tmp_path / "gateway.yaml"))]) as front:
            monitor, flags, abstentions = asyncio.run(
                _replay_with_feedback(front.urls[0], pool, names)
            )
    decision = racer.predict(scores, include_abstain=True)
    print(
        f"{mode}: RACER.risk {expected:.4f}, monitor {monitor['misrouting_rate']:.4f} over "
        f"{monitor['n_feedback']} feedbacks, lower bound {monitor['risk_lower_bound']:.3f}, "
        f"flags {flags}, strict abstentions {abstentions}"
    )
    assert monitor["n_feedback"] == pool.n_queries
    assert monitor["misrouting_rate"] == pytest.approx(expected, abs=1e-12)
    assert not monitor["alarm"]
    if mode == "strict":
        assert abstentions == int(decision[:, 0].sum()) and flags == 0
    else:
        assert flags == int(decision[:, 0].sum())


async def _replay_with_feedback(url: str, pool, names: list[str]) -> tuple[dict, int, int]:
    limit = asyncio.Semaphore(8)
    flags = abstentions = 0
    monitor: dict = {}

    async def one(client: httpx.AsyncClient, row: int) -> None:
        nonlocal flags, abstentions, monitor
        async with limit:
            body = chat(str(pool.queries[row]))
            answer = (await client.post("/v1/chat/completions", json=body)).json()
            racer = answer["racer"]
            flags += bool(racer["abstain_flag"])
            abstentions += racer["abstained"] and racer["abstention"] == "strict"
            labels = pool.labels[row]
            known = {m: bool(v) for m, v in zip(names, labels, strict=True) if not np.isnan(v)}
            response = await client.post(
                "/v1/feedback", json={"id": answer["id"], "models_correct": known}
            )
            assert response.status_code == 200, response.text
            state = response.json()["monitor"]
            if state["n_feedback"] >= monitor.get("n_feedback", 0):
                monitor = state

    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        await asyncio.gather(*(one(client, row) for row in range(pool.n_queries)))
    return monitor, flags, abstentions
