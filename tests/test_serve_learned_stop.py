"""A learned-stop cascade served over loopback equals its simulation, token logprobs included.

RouterBench ARC-Challenge with *recorded synthetic* token logprobs (no real ones on this
machine): a right answer's tokens are confident, a wrong answer's less so, with overlap.
The learned stop rule (:mod:`racer.policies.learned`) is fitted on training queries
with those logprobs, certified (regret against gpt-4-1106-preview) on calibration
queries, and saved in an artifact. Eleven replay servers serve the test split's recorded
answers *and* their logprobs (only when asked: the backends set ``logprobs: true``); the
gateway asks each tier for them, feeds them to the stop rule, and its calls, served
answers and costs equal the simulation on the recorded answers, query by query. The same
policy simulated without the logprobs stops elsewhere, so the served path does read them.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from serve_fakes import AUTH, KEY

from racer.artifact import save_artifact
from racer.data.dataset import RoutingDataset
from racer.data.load import load_dataset
from racer.estimator import RACER
from racer.evaluation.certified import (
    PolicyFamily,
    certify_dataset,
    plan_family,
    policy_data,
    policy_state,
)
from racer.policies import policy_from_state
from racer.policies.learned import LearnedCascade
from racer.routers.prior import PriorRouter
from racer.serve.app import app_from_config
from racer.serve.config import load_config
from racer.serve.replay import ReplayBook, create_replay_app
from racer.serve.runner import ServerThread

REFERENCE = "gpt-4-1106-preview"
ALPHA = 0.05


def with_synthetic_logprobs(dataset: RoutingDataset, seed: int) -> RoutingDataset:
    """Token logprobs per answer: 2-5 tokens, right answers surer than wrong ones."""
    rng = np.random.default_rng(seed)
    logprobs = np.empty(dataset.labels.shape, dtype=object)
    for (i, j), label in np.ndenumerate(dataset.labels):
        scale = 0.08 if label == 1.0 else 0.6
        logprobs[i, j] = -rng.exponential(scale, size=int(rng.integers(2, 6)))
    return replace(dataset, logprobs=logprobs)


def quietly_load(path: Path) -> RoutingDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(path)


@pytest.fixture(scope="module")
def learned_route(shared_data, tmp_path_factory):
    folder = shared_data / "routerbench"
    train = with_synthetic_logprobs(quietly_load(folder / "arc_challenge_train.csv"), 1)
    test = with_synthetic_logprobs(quietly_load(folder / "arc_challenge_test.csv"), 2)
    cut = train.n_queries // 2
    fit, calibration = train.subset(np.arange(cut)), train.subset(np.arange(cut, train.n_queries))
    family = plan_family(fit, "regret", REFERENCE, learned_stop=True)
    # Only the learned members (and "always call the reference"), in the family's order:
    # the test is about serving a learned stop rule, whatever else would be cheaper.
    keep = [
        k
        for k, p in enumerate(family.policies)
        if isinstance(p, LearnedCascade) or k == family.fallback_index
    ]
    learned = PolicyFamily(
        [family.policies[k] for k in keep],
        family.fallback,
        family.objective,
        family.reference,
        family.answer_kind,
        keep.index(family.fallback_index),
    )
    certificate = certify_dataset(learned, calibration, alpha=ALPHA, delta=0.1)
    state = policy_state(certificate, learned, train.model_names)
    names = list(train.model_names)
    router = PriorRouter().fit(list(fit.queries), fit.labels, model_names=names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        racer = RACER(alpha=0.1, delta=0.1).fit(
            router.predict_proba(list(calibration.queries)), calibration.labels, model_names=names
        )
    artifact = tmp_path_factory.mktemp("learned") / "arc-learned"
    save_artifact(artifact, router, racer, policy=state)
    return artifact, state, test


async def _ask_all(url: str, queries: list[str]) -> list[httpx.Response]:
    limit = asyncio.Semaphore(12)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as client:

        async def one(query: str) -> httpx.Response:
            async with limit:
                return await client.post(
                    "/v1/chat/completions",
                    json={"model": "arc-learned", "messages": [{"role": "user", "content": query}]},
                )

        return await asyncio.gather(*(one(q) for q in queries))


def test_a_learned_stop_cascade_over_replay_servers_equals_its_simulation(learned_route, tmp_path):
    artifact, state, test = learned_route
    assert state["certificate"]["certified"] and not state["certificate"]["only_fallback"]
    policy = policy_from_state(state["certificate"]["policy"])
    assert isinstance(policy, LearnedCascade)
    names = list(test.model_names)
    data = policy_data(test, None, state["answer_kind"])
    simulated = policy.simulate(data)
    # Every path is exercised: stops at the first tier, stops later, escalations.
    chain = list(policy.chain)
    first_only = simulated.invoked[:, chain].sum(axis=1) == 1
    assert first_only.any() and (~first_only & ~simulated.escalated).any()
    assert simulated.escalated.any()
    # The logprobs matter: without them the same policy stops elsewhere.
    blind = policy.simulate(policy_data(replace(test, logprobs=None), None, state["answer_kind"]))
    assert (blind.invoked != simulated.invoked).any(axis=1).mean() > 0.05

    with ServerThread([create_replay_app(ReplayBook(test), m) for m in names]) as replays:
        config = {
            "backend_defaults": {
                "timeout_s": 20,
                "retries": 0,
                "cost_from_upstream": True,
                "logprobs": True,
            },
            "backends": [
                {"name": m, "base_url": f"{url}/v1"}
                for m, url in zip(names, replays.urls, strict=True)
            ],
            "routes": [{"name": "arc-learned", "artifact": str(artifact)}],
            "auth": {"api_keys": [KEY]},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with ServerThread([app_from_config(load_config(path))]) as gateway:
            answers = asyncio.run(_ask_all(gateway.urls[0], [str(q) for q in test.queries]))

    assert all(a.status_code == 200 for a in answers), answers[0].text
    order = [*chain, policy.fallback]
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    for row, answer in enumerate(answers):
        body = answer.json()
        report = body["racer"]["policy"]
        assert report["called"] == [names[c] for c in order if simulated.invoked[row, c]], row
        if simulated.escalated[row]:
            assert report["stopped"] == "escalated to reference"
        else:
            assert report["stopped"].startswith("learned stop"), report["stopped"]
        served[row] = names.index(report["served"])
        assert body["choices"][0]["message"]["content"] == test.responses[row, served[row]]
        assert body["choices"][0].get("logprobs") is None  # the client did not ask
        costs[row] = body["racer"]["cost_usd"]
    np.testing.assert_array_equal(served, simulated.served)
    np.testing.assert_allclose(costs, simulated.cost, rtol=1e-12)
