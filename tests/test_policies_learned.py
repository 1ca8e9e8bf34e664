"""Cascades with a learned stop rule (issue 17, item 2): causal, cross-fitted, certified, served.

- The features after tier k read tiers <= k only (codes, free-text agreement, signals,
  scores): on answers where later tiers did not answer yet, the policy stops exactly
  where it stops on the full record (what the gateway relies on).
- ``simulate_group`` equals ``simulate``; the JSON state round-trips exactly.
- The training outcomes that build the front are cross-fitted: they differ from the
  in-sample ones, and a query's own label never enters its own outcome.
- On real RouterBench ARC data the certified learned-stop policy keeps its promise.
- ``racer calibrate --objective regret`` saves a learned-stop policy that loads back
  through the gateway's reader and simulates to its certificate's figures; the gateway,
  over replayed answers, calls, stops, serves and pays as the simulation.
"""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from dataclasses import replace

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from racer.artifact import load_artifact
from racer.cli import app
from racer.data.load import concat_datasets
from racer.data.routerbench import load_routerbench
from racer.evaluation.certified import answer_kind, has_token_logprobs, plan_family, policy_data
from racer.evaluation.report import monte_carlo_limit
from racer.policies import PolicyData, certify, loss_and_cost, policy_from_state
from racer.policies.families import candidate_chains
from racer.policies.learned import (
    DEFAULT_STOP_THRESHOLDS,
    LearnedCascade,
    fit_learned_cascades,
)
from racer.policies.simulate import simulate_family
from racer.policies.stop_features import feature_names, tier_features
from racer.policies.stop_model import StopModel
from racer.serve.served_policy import served_policy
from racer.signals import AnswerSignals

REFERENCE = "gpt-4-1106-preview"
runner = CliRunner()


def _quiet(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_routerbench(path)


@pytest.fixture(scope="module")
def arc(shared_data):
    """ARC-Challenge: 400 training queries (seeded), the rest and the test file the pool."""
    folder = shared_data / "routerbench"
    full = _quiet(folder / "arc_challenge_train.csv")
    rows = np.random.default_rng(0).permutation(full.n_queries)
    train = full.subset(rows[:400])
    pool = concat_datasets(
        [full.subset(rows[400:]), _quiet(folder / "arc_challenge_test.csv")], name="arc pool"
    )
    pool = pool.subset(~np.isnan(pool.labels).any(axis=1))
    return train, pool


def _family_inputs(dataset, scores=None):
    kind = answer_kind(dataset)
    data = policy_data(dataset, scores, kind)
    accuracy = np.nan_to_num(np.nanmean(dataset.labels, axis=0))
    return data, data.costs.mean(axis=0), accuracy, dataset.model_names.index(REFERENCE)


def _random_data(seed: int, n: int = 300, m: int = 6, agree: bool = False) -> PolicyData:
    rng = np.random.default_rng(seed)
    codes = rng.integers(-2, 3, size=(n, m))
    lengths = np.where(codes == -2, np.nan, rng.normal(3, 1, size=(n, m)))
    hedged = np.where(codes == -2, np.nan, rng.integers(0, 2, size=(n, m)).astype(float))
    logprobs = np.where(rng.random((n, m)) < 0.5, np.nan, -rng.exponential(0.3, size=(n, m)))
    signals = AnswerSignals(lengths, hedged, logprobs, logprobs - rng.exponential(1, (n, m)))
    pairs = None
    if agree:
        pairs = rng.random((n, m, m)) < 0.5
        pairs = pairs | pairs.transpose(0, 2, 1)
        answered = rng.random((n, m)) < 0.9
        pairs &= answered[:, :, None] & answered[:, None, :]
        pairs[:, np.arange(m), np.arange(m)] = answered
    quality = rng.integers(0, 2, size=(n, m)).astype(float)
    return PolicyData(quality, codes, rng.random((n, m)), rng.random((n, m)), pairs, signals)


def _blank_after(data: PolicyData, later: list[int]) -> PolicyData:
    """The data as the gateway sees it before calling ``later``: no response there."""
    codes = data.codes.copy()
    codes[:, later] = -2
    signals = data.signals
    blank = [getattr(signals, name).copy() for name in ("length", "hedged")]
    blank += [signals.logprob_mean.copy(), signals.logprob_min.copy()]
    for values in blank:
        values[:, later] = np.nan
    agree = None
    if data.agree is not None:
        agree = data.agree.copy()
        agree[:, later, :] = False
        agree[:, :, later] = False
    return replace(data, codes=codes, agree=agree, signals=AnswerSignals(*blank))


@pytest.mark.parametrize("free_text", [False, True])
def test_features_at_tier_k_read_tiers_up_to_k_only(free_text):
    data = _random_data(1, agree=free_text)
    chain = (4, 1, 3, 0)
    targets = data.quality[:, 0]
    names = feature_names(len(chain), True)
    rows = tier_features(data, chain, 3, np.ones(data.codes.shape), data.codes, with_scores=True)
    model = StopModel.fit(rows[0], targets, names)
    policy = LearnedCascade(chain, 0.5, 5, (1.0, 0.5, 2.0, 0.1), model)
    weights, codes = policy.tier_weights(data), policy.codes(data)
    other = _random_data(2, agree=free_text)
    full = policy.simulate(data)
    stop_tier = (full.invoked[:, list(chain)].sum(axis=1) - 1).astype(int)
    for k in range(len(chain)):
        later = [c for c in range(data.codes.shape[1]) if c not in chain[: k + 1]]
        # Everything outside tiers <= k replaced by another data set's values ...
        mixed_codes = data.codes.copy()
        mixed_codes[:, later] = other.codes[:, later]
        mixed_scores = data.scores.copy()
        mixed_scores[:, later] = other.scores[:, later]
        mixed_signals = [getattr(data.signals, s).copy() for s in ("length", "hedged")]
        mixed_signals += [data.signals.logprob_mean.copy(), data.signals.logprob_min.copy()]
        for mine, theirs in zip(
            mixed_signals,
            [other.signals.length, other.signals.hedged, other.signals.logprob_mean,
             other.signals.logprob_min],
            strict=True,
        ):  # fmt: skip
            mine[:, later] = theirs[:, later]
        mixed_agree = None
        if free_text:
            mixed_agree = data.agree.copy()
            mixed_agree[:, later, :] = other.agree[:, later, :]
            mixed_agree[:, :, later] = other.agree[:, :, later]
        mixed = replace(
            data, codes=mixed_codes, scores=mixed_scores, agree=mixed_agree,
            signals=AnswerSignals(*mixed_signals),
        )  # fmt: skip
        before, chosen = tier_features(data, chain, k, weights, codes, with_scores=True)
        after, chosen_after = tier_features(
            mixed, chain, k, policy.tier_weights(mixed), policy.codes(mixed), with_scores=True
        )
        # ... leaves the features after tier k unchanged.
        np.testing.assert_array_equal(before, after)
        np.testing.assert_array_equal(chosen, chosen_after)
        # The gateway's view before calling the later tiers: the policy stops there
        # (serves, calls nothing it has not called) exactly where the full record stops.
        partial = policy.simulate(_blank_after(data, later))
        asked = np.zeros(data.codes.shape[1], dtype=bool)
        asked[list(chain[: k + 1])] = True
        stops = ~partial.escalated & ~(partial.invoked & ~asked).any(axis=1)
        expected = ~full.escalated & (stop_tier <= k)
        np.testing.assert_array_equal(stops, expected)
        np.testing.assert_array_equal(partial.served[stops], full.served[stops])
    assert 0 < expected.mean() < 1  # some queries stop, some escalate


@pytest.fixture(scope="module")
def learned(arc):
    train, _ = arc
    scores = np.random.default_rng(3).random((train.n_queries, train.n_models))
    data, prices, accuracy, ref = _family_inputs(train, scores)
    family = fit_learned_cascades(data, prices, accuracy, ref, "regret", ref)
    return family, data, prices, accuracy, ref


def test_simulate_group_equals_simulate_and_the_state_round_trips(arc, learned):
    family, _, prices, accuracy, ref = learned
    _, pool = arc
    pool = pool.subset(np.arange(400))
    scores = np.random.default_rng(4).random((pool.n_queries, pool.n_models))
    data = policy_data(pool, scores, answer_kind(pool))
    chains = candidate_chains(prices, accuracy, ref)
    assert len(family.policies) == len(chains) * len(DEFAULT_STOP_THRESHOLDS)
    grouped = simulate_family(family.policies, data)
    for policy, outcome in list(zip(family.policies, grouped, strict=True))[::7]:
        alone = policy.simulate(data)
        np.testing.assert_array_equal(outcome.served, alone.served)
        np.testing.assert_array_equal(outcome.invoked, alone.invoked)
        np.testing.assert_array_equal(outcome.cost, alone.cost)
        np.testing.assert_array_equal(outcome.escalated, alone.escalated)
    # Not trivial: thresholds change what is served and paid.
    costs = np.array([o.cost.mean() for o in grouped])
    assert len(np.unique(np.round(costs, 12))) > len(chains)
    policy = family.policies[len(DEFAULT_STOP_THRESHOLDS) * 10 + 8]
    restored = policy_from_state(json.loads(json.dumps(policy.state())))
    assert restored == policy and restored.group_key() == policy.group_key()
    again = restored.simulate(data)
    np.testing.assert_array_equal(
        again.served, grouped[len(DEFAULT_STOP_THRESHOLDS) * 10 + 8].served
    )
    assert policy.models_used() == [*policy.chain, ref]
    names = pool.model_names
    assert policy.describe(names).endswith(
        f"learned P(no regret) from the answers so far and the router's scores >= "
        f"{policy.threshold:g}, else {REFERENCE}"
    )


def test_the_stop_reason_reports_the_probability_that_stopped(learned):
    family, data, *_ = learned
    policy = next(p for p in family.policies if len(p.chain) == 3 and p.threshold == 0.9)
    outcome = policy.simulate(data)
    row = int(np.flatnonzero(~outcome.escalated)[0])
    one = data.take(np.array([row]))
    asked = outcome.invoked[row] & ~np.isin(np.arange(data.codes.shape[1]), [policy.fallback])
    k = int(asked[list(policy.chain)].sum()) - 1
    probability = policy.tier_probability(one, k, policy.tier_weights(one), policy.codes(one))[0]
    reason = policy.stop_reason(one, asked)
    shown = float(re.fullmatch(r"learned stop: P\(no regret\) (\S+) >= 0.9", reason)[1])
    assert shown == pytest.approx(float(probability[0]), abs=5e-4) and shown >= 0.9


def test_training_outcomes_are_cross_fitted_without_the_querys_own_label(learned):
    family, data, prices, accuracy, ref = learned
    in_sample = simulate_family(family.policies, data)
    differs = [
        not np.array_equal(a.served, b.served) or not np.array_equal(a.invoked, b.invoked)
        for a, b in zip(family.training_outcomes, in_sample, strict=True)
    ]
    assert np.mean(differs) > 0.1  # the front does not read in-sample fits
    # One query every model got right: make every model but the reference wrong. Its own
    # cross-fitted outcomes do not move (its stop probabilities come from models fitted
    # without it), while the deployed models, fitted on every query, do.
    row = int(np.flatnonzero((data.quality == 1.0).all(axis=1))[0])
    flipped = replace(data, quality=data.quality.copy())
    flipped.quality[row] = 0.0
    flipped.quality[row, ref] = 1.0
    refit = fit_learned_cascades(flipped, prices, accuracy, ref, "regret", ref)
    for before, after in zip(family.training_outcomes, refit.training_outcomes, strict=True):
        assert before.served[row] == after.served[row]
        np.testing.assert_array_equal(before.invoked[row], after.invoked[row])
    models_changed = [
        a.model.digest != b.model.digest
        for a, b in zip(family.policies, refit.policies, strict=True)
    ]
    assert all(models_changed)
    others_changed = [
        not np.array_equal(a.served, b.served)
        for a, b in zip(family.training_outcomes, refit.training_outcomes, strict=True)
    ]
    assert any(others_changed)  # other folds' models did see the flipped label


def test_the_certified_learned_stop_policy_keeps_its_promise_on_arc(arc):
    train, pool = arc
    family = plan_family(train, "regret", REFERENCE, learned_stop=True)
    assert any(isinstance(p, LearnedCascade) for p in family.policies)
    without = plan_family(train, "regret", REFERENCE, learned_stop=False)
    assert not any(isinstance(p, LearnedCascade) for p in without.policies)
    losses, costs = family.losses(policy_data(pool, None, family.answer_kind))
    risks = losses.mean(axis=0)
    learned = np.array([isinstance(p, LearnedCascade) for p in family.policies])
    trials, delta, n_cal = 200, 0.1, 400
    # Alphas just below learned policies' pool risks: certifying one of them is a violation.
    alphas = sorted({round(float(r) - 0.002, 4) for r in risks[learned] if r >= 0.01})[:3]
    assert len(alphas) == 3
    rng = np.random.default_rng(0)
    resamples = rng.integers(0, pool.n_queries, size=(trials, n_cal))
    learned_certified = 0
    for alpha in alphas:
        violations = 0
        for rows in resamples:
            certificate = certify(
                family.policies, losses[rows], costs[rows], objective="regret", alpha=alpha,
                delta=delta, order=np.arange(len(family.policies)),
            )  # fmt: skip
            violations += certificate.certified and risks[certificate.index] > alpha
            learned_certified += learned[certificate.index]
        assert violations / trials <= monte_carlo_limit(delta, trials), (alpha, violations)
    assert learned_certified > 0.1 * trials  # not vacuous: learned stops get certified


def _calibrate(folder, out, *extra):
    return runner.invoke(
        app,
        [
            "calibrate",
            "--train", str(folder / "arc_challenge_train.csv"),
            "--calibration", str(folder / "arc_challenge_test.csv"),
            "--router", "prior",
            "--alpha", "0.1",
            "--objective", "regret",
            "--reference", REFERENCE,
            "--out", str(out),
            *extra,
        ],
    )  # fmt: skip


def test_calibrate_saves_a_learned_stop_policy_that_loads_and_simulates_as_certified(
    shared_data, tmp_path
):
    folder = shared_data / "routerbench"
    result = _calibrate(folder, tmp_path / "learned", "--stop-rule", "learned")
    assert result.exit_code == 0, result.output
    artifact = load_artifact(tmp_path / "learned")
    calibration = _quiet(folder / "arc_challenge_test.csv")
    served = served_policy(artifact.policy, calibration.model_names)
    policy = served.policy
    assert isinstance(policy, LearnedCascade) and policy.with_scores
    assert artifact.policy["certificate"]["policy"]["model"]["stop_model_format_version"] == 1
    certificate = artifact.policy["certificate"]
    assert certificate["certified"] and not certificate["only_fallback"]
    # The saved policy, read back as the gateway reads it, scores the calibration queries
    # with the saved router and reproduces the certificate's risk and cost.
    scores = artifact.router.predict_proba(list(calibration.queries))
    data = policy_data(calibration, scores, served.answer_kind)
    outcome = policy.simulate(data)
    losses, costs = loss_and_cost([outcome], data.quality, "regret", policy.fallback)
    assert float(losses.mean()) == pytest.approx(certificate["calibration_risk"], abs=1e-12)
    assert float(costs.mean()) == pytest.approx(certificate["calibration_cost"], rel=1e-12)
    assert certificate["calibration_risk"] <= 0.1 and certificate["p_value"] <= 0.1
    result = _calibrate(folder, tmp_path / "bad", "--stop-rule", "oracle")
    assert result.exit_code == 2
    assert "--stop-rule must be one of auto, learned, margin" in result.output


def test_the_gateway_serves_a_learned_cascade_as_simulated(arc, learned):
    pytest.importorskip("fastapi")
    from serve_fakes import AUTH, KEY, FixedThreshold, TableRouter

    from racer.serve.app import create_app
    from racer.serve.backends import Backend
    from racer.serve.config import parse_config
    from racer.serve.decision_log import DecisionLog
    from racer.serve.gateway import Gateway
    from racer.serve.monitor import RiskMonitor
    from racer.serve.replay import ReplayBook, create_replay_app
    from racer.serve.route import Route

    family, *_ = learned
    _, pool = arc
    test = pool.subset(np.arange(120))
    names = test.model_names
    scores = np.random.default_rng(5).random((test.n_queries, test.n_models))
    data = policy_data(test, scores, answer_kind(test))
    # The three-tier policy whose queries stop at the most different tiers.
    candidates = [p for p in family.policies if len(p.chain) == 3]
    outcomes = simulate_family(candidates, data)
    spread = [
        len(np.unique(o.invoked[:, list(p.chain)].sum(axis=1) + o.escalated))
        for p, o in zip(candidates, outcomes, strict=True)
    ]
    policy = candidates[int(np.argmax(spread))]
    simulated = policy.simulate(data)
    assert max(spread) == 4  # stops after each tier, and escalations
    certificate = {"objective": "regret", "alpha": 0.1, "delta": 0.1, "n": 300}
    state = {
        "certificate": {"policy": policy.state(), **certificate, "certified": True,
                        "only_fallback": False},
        "reference": REFERENCE,
        "answer_kind": answer_kind(test),
    }  # fmt: skip
    config = parse_config(
        {
            "backend_defaults": {"retries": 0, "cost_from_upstream": True, "timeout_s": 20},
            "backends": [{"name": m, "base_url": f"http://{i}.invalid/v1"} for i, m in
                         enumerate(names)],
            "routes": [{"name": "racer", "artifact": "unused"}],
            "auth": {"api_keys": [KEY]},
            "decision_log": {"url": "sqlite:///:memory:"},
        }
    )  # fmt: skip
    book = ReplayBook(test)
    backends = {
        b.name: Backend(b, transport=httpx.ASGITransport(app=create_replay_app(book, b.name)))
        for b in config.backends
    }
    queries = [str(q) for q in test.queries]
    route = Route(
        config.routes[0],
        TableRouter(dict(zip(queries, scores, strict=True)), scores[0]),
        FixedThreshold(),
        tuple(names),
        RiskMonitor(0.1, 0.05),
        policy=served_policy(state, names),
    )
    gateway = Gateway(config, {"racer": route}, backends, DecisionLog(config.decision_log.url))

    async def ask_all() -> list[httpx.Response]:
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(gateway, frozenset({KEY}))),
                base_url="http://gw",
                headers=AUTH,
                timeout=60,
            ) as client:
                return [
                    await client.post(
                        "/v1/chat/completions",
                        json={"model": "racer", "messages": [{"role": "user", "content": q}]},
                    )
                    for q in queries
                ]
        finally:
            await gateway.aclose()

    answers = asyncio.run(ask_all())
    assert all(a.status_code == 200 for a in answers), answers[0].text
    order = [*policy.chain, policy.fallback]
    served, costs = np.empty(test.n_queries, dtype=int), np.empty(test.n_queries)
    for row, answer in enumerate(answers):
        report = answer.json()["racer"]["policy"]
        assert report["called"] == [names[c] for c in order if simulated.invoked[row, c]], row
        if simulated.escalated[row]:
            assert report["stopped"] == "escalated to reference"
        else:
            assert report["stopped"].startswith("learned stop: P(no regret) ")
        served[row] = names.index(report["served"])
        costs[row] = answer.json()["racer"]["cost_usd"]
    np.testing.assert_array_equal(served, simulated.served)
    np.testing.assert_allclose(costs, simulated.cost, rtol=1e-12)


def test_by_default_learned_cascades_join_the_family_only_when_answers_carry_logprobs(arc):
    # "auto": the learned stop rule is planned where its main signal exists (token
    # logprobs); without them it is left out (it certified nothing cheaper on ARC / MBPP).
    train = arc[0].subset(np.arange(200))
    assert not has_token_logprobs(train)
    kinds = {type(p).__name__ for p in plan_family(train, "regret", REFERENCE).policies}
    assert "LearnedCascade" not in kinds
    forced = plan_family(train, "regret", REFERENCE, learned_stop=True).policies
    assert any(isinstance(p, LearnedCascade) for p in forced)
    logprobs = np.empty(train.labels.shape, dtype=object)
    logprobs[0, 0] = [-0.1, -0.2]
    with_logprobs = replace(train, logprobs=logprobs)
    assert has_token_logprobs(with_logprobs)
    assert not has_token_logprobs(replace(train, logprobs=np.empty(train.labels.shape, object)))
    planned = plan_family(with_logprobs, "regret", REFERENCE).policies
    assert any(isinstance(p, LearnedCascade) for p in planned)
