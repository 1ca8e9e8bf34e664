"""The gateway serves a certified answer-level policy (issue 9, item 5), over loopback.

- A cascade certified by ``certify_for_artifact`` (regret against gpt-4-1106-preview,
  alpha 0.03) on RouterBench ARC-Challenge training data, served over the 11 replay
  servers to the first 300 queries of the ARC test split: it calls the cheapest tier first,
  escalates exactly where the policy's ``simulate`` escalates, and its realised regret
  and cost equal the simulated ones, query by query.
- A parallel policy with the judge aggregator, over small loopback servers and a
  rule-based fake judge: the judge's verdict, an unparsable verdict and a failing judge
  (both: best in set), the judge's cost counted; streaming sends the chosen answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings

import httpx
import numpy as np
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from replay_gateway import ask_all, quietly_load, serve_every_query
from serve_fakes import AUTH, KEY, MODELS, FixedThreshold, TableRouter

from racer.artifact import save_artifact
from racer.estimator import RACER
from racer.evaluation.certified import certify_for_artifact, policy_data
from racer.policies import Cascade, ParallelSets, answer_losses, policy_from_state
from racer.routers.prior import PriorRouter
from racer.serve.app import app_from_config, create_app
from racer.serve.backends import Backend
from racer.serve.config import load_config, parse_config
from racer.serve.decision_log import DecisionLog
from racer.serve.gateway import Gateway
from racer.serve.monitor import RiskMonitor
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.route import Route
from racer.serve.runner import ServerThread
from racer.serve.served_policy import served_policy

REFERENCE = "gpt-4-1106-preview"
ALPHA = 0.03


@pytest.fixture(scope="module")
def arc(shared_data, tmp_path_factory):
    """A certified cascade artifact (train: first half, calibration: second half)."""
    folder = shared_data / "routerbench"
    train = quietly_load(folder / "arc_challenge_train.csv")
    test = quietly_load(folder / "arc_challenge_test.csv").subset(np.arange(300))
    cut = train.n_queries // 2
    fit, calibration = train.subset(np.arange(cut)), train.subset(np.arange(cut, train.n_queries))
    state = certify_for_artifact(
        "regret", REFERENCE, fit, calibration, alpha=ALPHA, delta=0.1, learned_stop=False
    )
    names = list(train.model_names)
    router = PriorRouter().fit(list(fit.queries), fit.labels, model_names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        racer = RACER(alpha=0.1, delta=0.1).fit(
            router.predict_proba(list(calibration.queries)), calibration.labels, model_names=names
        )
    out = tmp_path_factory.mktemp("policy") / "arc-policy"
    save_artifact(out, router, racer, policy=state)
    return out, state, test, calibration.n_queries


async def _feedback_all(url: str, ids: list[str], test) -> dict:
    """Feedback with every known label of every answered query; the last monitor state."""
    monitor: dict = {}
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client:
        for row, answer_id in enumerate(ids):
            known = {
                name: bool(test.labels[row, m])
                for m, name in enumerate(test.model_names)
                if not np.isnan(test.labels[row, m])
            }
            response = await client.post(
                "/v1/feedback", json={"id": answer_id, "models_correct": known}
            )
            assert response.status_code == 200, response.text
            monitor = response.json()["monitor"]
    return monitor


def test_cascade_over_replay_servers_equals_the_simulated_policy(arc, tmp_path):
    artifact, state, test, n_calibration = arc
    policy = policy_from_state(state["certificate"]["policy"])
    assert isinstance(policy, Cascade) and state["certificate"]["certified"]
    names = test.model_names
    ref = names.index(REFERENCE)
    data = policy_data(test, None, state["answer_kind"])
    simulated = policy.simulate(data)
    # The cheapest tier comes first, as the policy (training prices) says.
    prices = data.costs.mean(axis=0)
    assert list(policy.chain) == sorted(policy.chain, key=lambda c: prices[c])

    with ServerThread([create_replay_app(ReplayBook(test), m) for m in names]) as replays:
        config = {
            "backend_defaults": {"timeout_s": 20, "retries": 0, "cost_from_upstream": True},
            "backends": [
                {"name": m, "base_url": f"{url}/v1"}
                for m, url in zip(names, replays.urls, strict=True)
            ],
            "routes": [{"name": "arc-policy", "artifact": str(artifact)}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": f"sqlite:///{tmp_path / 'decisions.sqlite3'}"},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with ServerThread([app_from_config(load_config(path))]) as gateway:
            queries = [str(q) for q in test.queries]
            answers = asyncio.run(ask_all(gateway.urls[0], "arc-policy", queries))
            monitor = asyncio.run(
                _feedback_all(gateway.urls[0], [a.json()["id"] for a in answers], test)
            )

    assert all(a.status_code == 200 for a in answers), answers[0].text
    bodies = [a.json() for a in answers]
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    order = [*policy.chain, policy.fallback]
    for row, body in enumerate(bodies):
        report = body["racer"]["policy"]
        expected_calls = [names[c] for c in order if simulated.invoked[row, c]]
        assert report["called"] == expected_calls, row
        assert report["called"][0] == names[policy.chain[0]]  # the cheap tier first
        if simulated.escalated[row]:
            assert report["stopped"] == "escalated to reference"
        else:
            stop = rf"agreement margin (\S+) >= {policy.threshold:g}"
            margin = float(re.fullmatch(stop, report["stopped"])[1])
            assert margin >= policy.threshold
        served[row] = names.index(report["served"])
        assert body["racer"]["chosen"] == report["served"]
        assert body["choices"][0]["message"]["content"] == test.responses[row, served[row]]
        costs[row] = body["racer"]["cost_usd"]
    np.testing.assert_array_equal(served, simulated.served)
    np.testing.assert_allclose(costs, simulated.cost, rtol=1e-12)
    # Escalation happens on disagreement: some escalated queries have called tiers that
    # answered differently, and a query stops only where the called tiers agreeing with
    # the served answer outweigh the others by the stop margin.
    codes = data.codes[:, list(policy.chain)]
    called = simulated.invoked[:, list(policy.chain)]
    disagree = (called & (codes != codes[:, :1])).any(axis=1)
    assert (simulated.escalated & disagree).any()
    served_codes = data.codes[np.arange(test.n_queries), simulated.served][:, None]
    extracted = called & (codes >= 0)
    weights = np.asarray(policy.weights)
    margins = ((extracted & (codes == served_codes)) * weights).sum(axis=1) - (
        (extracted & (codes != served_codes)) * weights
    ).sum(axis=1)
    assert (margins[~simulated.escalated] >= policy.threshold).all()
    assert 0 < simulated.escalated.mean() < 1
    # Realised regret and mean cost over the whole test split: the simulated figures.
    realised = answer_losses("regret", served, None, test.labels, ref).mean()
    expected = answer_losses("regret", simulated.served, None, data.quality, ref).mean()
    assert realised == expected
    assert costs.mean() == pytest.approx(simulated.cost.mean(), rel=1e-12)
    assert costs.mean() < 0.6 * data.costs[:, ref].mean()
    # The monitor watches the certified objective (regret at the certificate's alpha),
    # not the set's misrouting loss: feedback on every query reproduces the realised regret.
    assert monitor["n_feedback"] == test.n_queries
    assert monitor["misrouting_rate"] == pytest.approx(realised, abs=1e-12)
    assert monitor["alpha"] == ALPHA and not monitor["alarm"]
    certificate = bodies[0]["racer"]["policy"]["certificate"]
    assert certificate["objective"] == "regret" and certificate["reference"] == REFERENCE
    assert (certificate["alpha"], certificate["delta"], certificate["n"]) == (
        ALPHA,
        0.1,
        n_calibration,
    )


# --- a judge route over loopback fakes ---------------------------------------------

JUDGE = "judge-model"
MEMBER_COST = {"alpha-small": 0.001, "beta-medium": 0.002, "gamma-large": 0.004, JUDGE: 0.0005}
TEXTS = {
    "alpha-small": "The capital is Paris, CORRECT by the atlas.",
    "beta-medium": "The capital is Lyon.",
    "gamma-large": "The capital is Marseille.",
}


def fake_model(name: str) -> FastAPI:
    """An OpenAI-compatible server answering by rule; the judge names the CORRECT answer.

    The judge answers an unparsable verdict when the question says "undecided" and an
    HTTP 500 when it says "broken judge".
    """
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> JSONResponse:
        prompt = (await request.json())["messages"][-1]["content"]
        if name != JUDGE:
            text = TEXTS[name]
        elif "broken judge" in prompt:
            return JSONResponse({"error": {"message": "judge down"}}, 500)
        elif "undecided" in prompt:
            text = "They all look fine to me."
        else:
            answers = re.findall(r"Answer (\d+):\n([^\n]*)", prompt)
            text = "Best: " + next(k for k, answer in answers if "CORRECT" in answer)
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "cost": MEMBER_COST[name]}
        message = {"role": "assistant", "content": text}
        return JSONResponse(
            {
                "id": "fake",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )

    return app


@pytest.fixture(scope="module")
def fakes():
    with ServerThread([fake_model(m) for m in (*MODELS, JUDGE)]) as servers:
        yield dict(zip((*MODELS, JUDGE), servers.urls, strict=True))


def judge_gateway(urls: dict[str, str], judge: str | None) -> tuple[Gateway, FastAPI]:
    config = parse_config(
        {
            "backend_defaults": {"retries": 0, "cost_from_upstream": True},
            "backends": [{"name": m, "base_url": f"{u}/v1"} for m, u in urls.items()],
            "routes": [{"name": "racer", "artifact": "unused", "judge": judge}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": "sqlite:///:memory:"},
        }
    )
    # The policy's judge is alpha-small; the route names its own judge backend instead.
    policy = ParallelSets("threshold", 0.95, "judge", fallback=2, judge=0)
    state = {
        "certificate": {
            "policy": policy.state(),
            "objective": "error",
            "alpha": 0.2,
            "delta": 0.1,
            "n": 300,
            "certified": True,
            "only_fallback": False,
        },
        "reference": None,
        "answer_kind": None,
    }
    gateway = _policy_gateway(config, state)
    return gateway, create_app(gateway, frozenset({KEY}))


def _policy_gateway(config, state) -> Gateway:
    """A gateway whose one route serves ``state``'s policy over the fake models."""
    route = Route(
        config.routes[0],
        TableRouter({}, [0.6, 0.7, 0.9]),
        FixedThreshold(),
        MODELS,
        RiskMonitor(0.1, 0.05),
        policy=served_policy(state, MODELS),
    )
    backends = {b.name: Backend(b) for b in config.backends}
    return Gateway(config, {"racer": route}, backends, DecisionLog(config.decision_log.url))


async def _judge_answers(
    urls: dict[str, str], questions: list[str], stream: bool = False, judge: str | None = JUDGE
):
    gateway, app = judge_gateway(urls, judge)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=AUTH
        ) as client:
            return [
                await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "racer",
                        "messages": [{"role": "user", "content": q}],
                        "stream": stream,
                    },
                )
                for q in questions
            ]
    finally:
        await gateway.aclose()


def test_judge_route_uses_the_verdict_and_falls_back_to_best_in_set(fakes):
    policy = ParallelSets("threshold", 0.95, "judge", 2, judge=0)
    members = policy.sets(np.array([[0.6, 0.7, 0.9]]))
    assert members.all()  # the whole set is called; best in set is gamma-large
    plain, undecided, broken = asyncio.run(
        _judge_answers(
            fakes, ["Capital of France?", "Capital of France, undecided?", "broken judge?"]
        )
    )
    members_cost = sum(MEMBER_COST[m] for m in MODELS)
    body = plain.json()
    report = body["racer"]["policy"]
    assert body["choices"][0]["message"]["content"] == TEXTS["alpha-small"]
    assert (
        report["served"] == "alpha-small"
        and report["stopped"] == f"judge {JUDGE} chose alpha-small"
    )
    assert report["called"] == ["gamma-large", "beta-medium", "alpha-small"]  # best-scored first
    assert plain.headers["x-racer-models"] == f"gamma-large,beta-medium,alpha-small,{JUDGE}"
    assert plain.headers["x-racer-decision"] == f"policy: judge {JUDGE} chose alpha-small"
    assert body["racer"]["cost_usd"] == pytest.approx(members_cost + MEMBER_COST[JUDGE])
    assert report["judge"]["ok"] and report["certificate"]["objective"] == "error"
    for answer, judge_ok in ((undecided, True), (broken, False)):
        body = answer.json()
        report = body["racer"]["policy"]
        assert body["choices"][0]["message"]["content"] == TEXTS["gamma-large"]
        assert report["stopped"] == f"judge {JUDGE} gave no usable verdict: best in set"
        assert report["judge"]["ok"] is judge_ok
        judge_cost = MEMBER_COST[JUDGE] if judge_ok else 0.0
        assert body["racer"]["cost_usd"] == pytest.approx(members_cost + judge_cost)


def test_without_a_configured_judge_the_policys_judge_model_is_asked(fakes):
    (answer,) = asyncio.run(_judge_answers(fakes, ["Capital of France?"], judge=None))
    body = answer.json()
    # alpha-small (the policy's judge column) answers its own text, not a verdict.
    assert body["racer"]["policy"]["stopped"] == (
        "judge alpha-small gave no usable verdict: best in set"
    )
    assert body["choices"][0]["message"]["content"] == TEXTS["gamma-large"]
    members_cost = sum(MEMBER_COST[m] for m in MODELS)
    assert body["racer"]["cost_usd"] == pytest.approx(members_cost + MEMBER_COST["alpha-small"])


def test_judge_route_streams_the_chosen_answer_once_then_done(fakes):
    (answer,) = asyncio.run(_judge_answers(fakes, ["Capital of France?"], stream=True))
    assert answer.status_code == 200
    events = [line[6:] for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == TEXTS["alpha-small"]
    assert chunks[-1]["racer"]["policy"]["served"] == "alpha-small"


def rule_model(answer) -> FastAPI:
    """An OpenAI-compatible server answering ``answer(prompt)`` (None: HTTP 500)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> JSONResponse:
        text = answer((await request.json())["messages"][-1]["content"])
        if text is None:
            return JSONResponse({"error": {"message": "down"}}, 500)
        message = {"role": "assistant", "content": text}
        return JSONResponse(
            {
                "id": "rule",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cost": 0.01},
            }
        )

    return app


def test_a_cascade_whose_reference_fails_says_so_or_fails_as_its_route_chooses(tmp_path):
    rules = (
        lambda prompt: "A",
        lambda prompt: "A" if "agree" in prompt else "B",
        lambda prompt: None,  # the fallback (the reference) is down
    )
    cascade = Cascade((0, 1), 3.0, 2, weights=(2.0, 1.5))
    state = {
        "certificate": {"policy": cascade.state(), "objective": "error", "alpha": 0.1},
        "answer_kind": "choice",
    }

    async def ask(urls: list[str], choice: str | None) -> tuple[list[httpx.Response], str, list]:
        log = f"sqlite:///{tmp_path / f'{choice}.sqlite3'}"
        config = parse_config(
            {
                "backend_defaults": {"retries": 0, "cost_from_upstream": True},
                "backends": [
                    {"name": m, "base_url": f"{u}/v1"} for m, u in zip(MODELS, urls, strict=True)
                ],
                "routes": [
                    {"name": "racer", "artifact": "unused"}
                    | ({"on_reference_failure": choice} if choice else {})
                ],
                "auth": {"api_keys": [KEY]},
                "decision_log": {"url": log},
            }
        )
        gateway = _policy_gateway(config, state)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(gateway, frozenset({KEY}))),
                base_url="http://gw",
                headers=AUTH,
            ) as client:
                responses = [
                    await client.post(
                        "/v1/chat/completions",
                        json={"model": "racer", "messages": [{"role": "user", "content": q}]},
                    )
                    for q in ("we agree", "we differ")
                ]
            metrics = gateway.metrics.render().decode()
            logged = [
                (await gateway.decision_log.find(r.json()["racer"]["id"])).uncertified
                for r in responses
                if r.status_code == 200
            ]
        finally:
            await gateway.aclose()
        return responses, metrics, logged

    with ServerThread([rule_model(rule) for rule in rules]) as servers:
        (agree, refused), refused_metrics, _ = asyncio.run(ask(servers.urls, None))
        (_, differ), metrics, logged = asyncio.run(ask(servers.urls, "serve"))
    # Agreement: margin 2 + 1.5 = 3.5 >= 3 after the second tier; the fallback is not called.
    assert agree.headers["x-racer-certified"] == "true"
    agree = agree.json()
    assert agree["racer"]["policy"]["called"] == ["alpha-small", "beta-medium"]
    assert agree["racer"]["policy"]["stopped"] == "agreement margin 3.5 >= 3"
    assert agree["racer"]["cost_usd"] == pytest.approx(0.02)
    assert agree["racer"]["certified"] is True and agree["racer"]["uncertified"] is None
    # Disagreement: margin 2 - 1.5 < 3, escalated; the reference failed. By default the
    # route serves nothing outside its certificate: 502, saying why.
    assert refused.status_code == 502
    message = refused.json()["error"]["message"]
    assert message.startswith("The certified policy's reference failed")
    assert "gamma-large: HTTP 500: down" in message and "alpha-small" not in message
    assert "racer_uncertified_answers_total{" not in refused_metrics
    # on_reference_failure: serve: the tiers' weighted vote (alpha-small, weight 2),
    # flagged in the response, its header, the decision log and the metrics.
    assert differ.status_code == 200 and differ.headers["x-racer-certified"] == "false"
    differ = differ.json()
    assert differ["racer"]["policy"]["called"] == ["alpha-small", "beta-medium", "gamma-large"]
    assert differ["racer"]["policy"]["stopped"] == (
        "escalated to gamma-large (failed; the tiers' vote served)"
    )
    assert differ["choices"][0]["message"]["content"] == "A"
    assert differ["racer"]["certified"] is False
    assert differ["racer"]["uncertified"] == "reference_failed"
    assert logged == [None, "reference_failed"]
    assert 'racer_uncertified_answers_total{reason="reference_failed",route="racer"} 1.0' in metrics


def test_a_policy_route_is_refused_at_load_when_it_cannot_be_served(arc, tmp_path):
    from racer.artifact import load_artifact
    from racer.serve.config import ConfigError, RouteConfig
    from racer.serve.route import load_route

    artifact = load_artifact(arc[0])
    judged = {
        "certificate": {"policy": ParallelSets("threshold", 0.5, "judge", 0, judge=30).state()}
    }
    beyond = {"certificate": {"policy": Cascade((0, 30), 1.0, 2).state()}}
    for name, state, message in (
        ("judged", judged, "the policy calls columns [0, 30]; the artifact has 11 models"),
        ("beyond", beyond, "the policy calls columns [0, 30, 2]; the artifact has 11 models"),
    ):
        save_artifact(tmp_path / name, artifact.router, artifact.racer, policy=state)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_route(RouteConfig(name=name, artifact=tmp_path / name), 0.05)


# --- a streamed cascade relays its final tier -------------------------------------


@pytest.mark.asyncio
async def test_a_streamed_cascade_relays_its_final_tier_once_it_is_chosen():
    from serve_fakes import answering

    config = parse_config(
        {
            "backend_defaults": {"retries": 0, "input_cost_per_token": 0.001},
            "backends": [{"name": m, "base_url": f"http://{m}.invalid/v1"} for m in MODELS],
            "routes": [{"name": "racer", "artifact": "unused"}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": "sqlite:///:memory:"},
        }
    )
    # one cheap tier that can never agree enough: every request escalates to gamma-large
    policy = Cascade(chain=(0,), threshold=100.0, fallback=2, weights=(1.0,))
    certificate = {"objective": "error", "alpha": 0.2, "delta": 0.1, "n": 300, "certified": True}
    state = {"certificate": {"policy": policy.state(), **certificate, "only_fallback": False}}
    route = Route(
        config.routes[0],
        TableRouter({}, [0.6, 0.7, 0.9]),
        FixedThreshold(),
        MODELS,
        RiskMonitor(0.1, 0.05),
        policy=served_policy(state | {"reference": MODELS[2], "answer_kind": None}, MODELS),
    )
    backends = {
        b.name: Backend(b, transport=httpx.MockTransport(answering(b.name)))
        for b in config.backends
    }
    gateway = Gateway(config, {"racer": route}, backends, DecisionLog(config.decision_log.url))
    app = create_app(gateway, frozenset({KEY}))
    ask = {"model": "racer", "messages": [{"role": "user", "content": "q"}], "stream": True}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", headers=AUTH
        ) as client:
            response = await client.post("/v1/chat/completions", json=ask)
    finally:
        await gateway.aclose()
    events = [json.loads(line[6:]) for line in response.text.split("\n\n") if line[6:7] == "{"]
    pieces = [e["choices"][0]["delta"].get("content") for e in events if e["choices"]]
    assert pieces[:2] == ["ga", "mma-large"]  # the upstream's own chunks, relayed
    assert response.headers["x-racer-models"] == "alpha-small,gamma-large"
    assert response.headers["x-racer-decision"] == "policy: escalated to reference (relayed)"
    assert response.headers["x-racer-cost-usd"] == "pending"
    racer = events[-1]["racer"]
    assert racer["policy"]["called"] == ["alpha-small", "gamma-large"]
    assert racer["policy"]["served"] == "gamma-large"
    # alpha-small's 10 prompt tokens (called whole) + gamma-large's 3 (its usage chunk)
    assert racer["cost_usd"] == pytest.approx(0.013)
    assert racer["usage_summed"] is True


def test_free_text_cascade_over_replay_servers_equals_its_simulation(shared_data, tmp_path):
    # MBPP answers are code: no answer can be extracted, so the tiers agree by the
    # similarity of their texts; the gateway, seeing only the tiers called so far,
    # stops, escalates, serves and pays exactly as the simulation on recorded answers.
    folder = shared_data / "routerbench"
    train = quietly_load(folder / "mbpp_train.csv")
    test = quietly_load(folder / "mbpp_test.csv")
    cut = train.n_queries // 2
    fit, calibration = train.subset(np.arange(cut)), train.subset(np.arange(cut, train.n_queries))
    # character n-grams: dense agreement (tests/test_similarity_dense.py) would embed
    # every MBPP answer with MiniLM, minutes on CPU
    state = certify_for_artifact(
        "regret", REFERENCE, fit, calibration, alpha=0.1, delta=0.1, agreement="char",
        learned_stop=False,
    )
    assert state["answer_kind"] == "similarity"
    policy = policy_from_state(state["certificate"]["policy"])
    assert isinstance(policy, Cascade) and state["certificate"]["certified"]
    names = list(train.model_names)
    router = PriorRouter().fit(list(fit.queries), fit.labels, model_names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        racer = RACER(alpha=0.2, delta=0.1).fit(
            router.predict_proba(list(calibration.queries)), calibration.labels, model_names=names
        )
    artifact = tmp_path / "mbpp-policy"
    save_artifact(artifact, router, racer, policy=state)
    simulated = policy.simulate(policy_data(test, None, "similarity"))
    assert 0 < simulated.escalated.mean() < 1
    answers = serve_every_query(test, artifact, tmp_path)
    order = [*policy.chain, policy.fallback]
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    for row, body in enumerate(answers):
        report = body["racer"]["policy"]
        assert report["called"] == [names[c] for c in order if simulated.invoked[row, c]], row
        served[row] = names.index(report["served"])
        costs[row] = body["racer"]["cost_usd"]
    np.testing.assert_array_equal(served, simulated.served)
    np.testing.assert_allclose(costs, simulated.cost, rtol=1e-12)
