"""Sequential policies served over loopback equal their simulation, query by query.

A router-led cascade (:mod:`racer.policies.router_cascade`) calls only the tiers the
saved router trusts for each query, in price order; the gateway scores the query with the
artifact's router and calls, serves and pays what the simulation with those scores does.

A learned-stop cascade, token logprobs included:

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

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from replay_gateway import quietly_load, serve_every_query

from racer.artifact import save_artifact
from racer.data.dataset import RoutingDataset
from racer.estimator import RACER
from racer.evaluation.certified import (
    PolicyFamily,
    answer_kind,
    certify_dataset,
    plan_family,
    policy_data,
    policy_state,
)
from racer.evaluation.scoring import out_of_fold_scores
from racer.policies import Single, loss_and_cost, policy_from_state, policy_grid, training_front
from racer.policies.learned import LearnedCascade
from racer.policies.router_cascade import RouterCascade
from racer.policies.simulate import simulate_family
from racer.routers import make_router
from racer.routers.prior import PriorRouter

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


def only(family: PolicyFamily, kind: type) -> PolicyFamily:
    """The members of one kind (and "always call the reference"), in the family's order."""
    keep = [
        k
        for k, p in enumerate(family.policies)
        if isinstance(p, kind) or k == family.fallback_index
    ]
    return PolicyFamily(
        [family.policies[k] for k in keep],
        family.fallback,
        family.objective,
        family.reference,
        family.answer_kind,
        keep.index(family.fallback_index),
    )


def certified_artifact(fit, calibration, family, router, out: Path, scores=None):
    """Certify ``family`` on ``calibration`` and save it with ``router`` in an artifact."""
    certificate = certify_dataset(family, calibration, alpha=ALPHA, delta=0.1, scores=scores)
    state = policy_state(certificate, family, fit.model_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        racer = RACER(alpha=0.1, delta=0.1).fit(
            router.predict_proba(list(calibration.queries)),
            calibration.labels,
            model_names=list(fit.model_names),
        )
    save_artifact(out, router, racer, policy=state)
    return state


def halves(dataset: RoutingDataset) -> tuple[RoutingDataset, RoutingDataset]:
    cut = dataset.n_queries // 2
    return dataset.subset(np.arange(cut)), dataset.subset(np.arange(cut, dataset.n_queries))


@pytest.fixture(scope="module")
def learned_route(shared_data, tmp_path_factory):
    folder = shared_data / "routerbench"
    train = with_synthetic_logprobs(quietly_load(folder / "arc_challenge_train.csv"), 1)
    test = quietly_load(folder / "arc_challenge_test.csv").subset(np.arange(250))
    test = with_synthetic_logprobs(test, 2)
    fit, calibration = halves(train)
    # Only the learned members: the test is about serving a learned stop rule, whatever
    # else would be cheaper.
    family = only(plan_family(fit, "regret", REFERENCE, learned_stop=True), LearnedCascade)
    router = PriorRouter().fit(list(fit.queries), fit.labels, model_names=list(fit.model_names))
    artifact = tmp_path_factory.mktemp("learned") / "arc-route"
    state = certified_artifact(fit, calibration, family, router, artifact)
    return artifact, state, test


def router_led_family(fit: RoutingDataset, train_scores: np.ndarray) -> PolicyFamily:
    """"Always call gpt-4" and the grid's router-led cascades, along the training front."""
    kind = answer_kind(fit)
    data = policy_data(fit, train_scores, kind)
    accuracy = np.nan_to_num(np.nanmean(fit.labels, axis=0))
    ref = fit.model_names.index(REFERENCE)
    grid = policy_grid(data.costs.mean(axis=0), accuracy, ref, with_router=True)
    policies = [Single(ref), *(p for p in grid if isinstance(p, RouterCascade))]
    losses, costs = loss_and_cost(simulate_family(policies, data), data.quality, "regret", ref)
    order = training_front(losses, costs, first=0)
    return PolicyFamily(
        [policies[k] for k in order], ref, "regret", ref, kind, int(np.flatnonzero(order == 0)[0])
    )


@pytest.fixture(scope="module")
def router_led_route(shared_data, tmp_path_factory):
    folder = shared_data / "routerbench"
    fit, calibration = halves(quietly_load(folder / "arc_challenge_train.csv"))
    test = quietly_load(folder / "arc_challenge_test.csv").subset(np.arange(250))
    names = list(fit.model_names)
    family = router_led_family(fit, out_of_fold_scores("knn", fit))
    router = make_router("knn").fit(list(fit.queries), fit.labels, model_names=names)
    scores = router.predict_proba(list(calibration.queries))
    artifact = tmp_path_factory.mktemp("router-led") / "arc-route"
    state = certified_artifact(fit, calibration, family, router, artifact, scores)
    return artifact, state, test, router


def test_a_router_led_cascade_calls_only_the_tiers_its_router_trusts(router_led_route, tmp_path):
    artifact, state, test, router = router_led_route
    assert state["certificate"]["certified"] and not state["certificate"]["only_fallback"]
    policy = policy_from_state(state["certificate"]["policy"])
    assert isinstance(policy, RouterCascade)
    names = list(test.model_names)
    scores = router.predict_proba(list(test.queries))
    simulated = policy.simulate(policy_data(test, scores, state["answer_kind"]))
    # The router decides the tiers: queries differ in their first tier or skip all tiers.
    tiers = [tuple(policy.tiers_for(row)) for row in scores]
    assert len(set(tiers)) > 1
    bodies = serve_every_query(test, artifact, tmp_path, logprobs=False)
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    for row, body in enumerate(bodies):
        report = body["racer"]["policy"]
        order = [*tiers[row], policy.fallback]
        assert report["called"] == [names[c] for c in order if simulated.invoked[row, c]], row
        served[row] = names.index(report["served"])
        costs[row] = body["racer"]["cost_usd"]
    np.testing.assert_array_equal(served, simulated.served)
    np.testing.assert_allclose(costs, simulated.cost, rtol=1e-12)


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

    answers = serve_every_query(test, artifact, tmp_path, logprobs=True)
    order = [*chain, policy.fallback]
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    for row, body in enumerate(answers):
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
