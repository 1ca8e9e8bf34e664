"""The router-led, price-ordered cascade: semantics, shared work, causality, JSON, validity."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from racer.aggregate import log_odds
from racer.policies import PolicyData, Single, certify, loss_and_cost, policy_grid
from racer.policies.families import ROUTER_CHAIN_SIZES, ROUTER_MARGINS, ROUTER_SCORE_THRESHOLDS
from racer.policies.registry import policy_from_state
from racer.policies.router_cascade import RouterCascade
from racer.policies.simulate import simulate_family

COSTS = np.array([1.0, 2.0, 4.0, 10.0])
WEIGHTS = (1.0, 1.5, 2.0)


def _policy(score_threshold=0.5, threshold=2.0):
    return RouterCascade((0, 1, 2), score_threshold, threshold, 3, WEIGHTS)


def _hand_data():
    # Columns 0, 1, 2 are the price-ordered tiers, 3 the fallback; -2 = no response.
    scores = np.array(
        [
            [0.2, 0.9, 0.8, 0.9],  # tier 0 skipped; 1 and 2 agree
            [0.1, 0.2, 0.3, 0.9],  # no tier trusted: straight to the fallback
            [0.1, 0.1, 0.9, 0.9],  # starts (and stops) at tier 2
            [0.9, 0.9, 0.9, 0.9],  # three different answers: escalates
            [0.9, 0.9, 0.9, 0.9],  # tiers 0 and 1 agree: stops after 1
            [0.9, 0.9, 0.9, 0.9],  # tier 0 does not respond; 1 and 2 agree
        ]
    )
    codes = np.array(
        [
            [7, 5, 5, 5],
            [1, 1, 1, 1],
            [3, 3, 6, 6],
            [1, 2, 3, 1],
            [4, 4, 9, 4],
            [-2, 4, 4, 4],
        ]
    )
    quality = np.ones(codes.shape)
    return PolicyData(quality, codes, np.broadcast_to(COSTS, codes.shape).copy(), scores)


def test_router_cascade_skips_distrusted_tiers_and_escalates_on_disagreement():
    outcome = _policy().simulate(_hand_data())
    # Margins (weights 1, 1.5, 2; stop at >= 2): q0 1.5 then 3.5 (tier 2 leads its group);
    # q2 tier 2 alone 2.0; q3 1, 0.5, -0.5; q4 1 then 2.5; q5 none, 1.5, 3.5.
    assert outcome.served.tolist() == [2, 3, 2, 3, 1, 2]
    assert outcome.invoked.astype(int).tolist() == [
        [0, 1, 1, 0],
        [0, 0, 0, 1],
        [0, 0, 1, 0],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
    ]
    assert outcome.escalated.tolist() == [False, True, False, True, False, False]
    assert outcome.cost.tolist() == [6.0, 10.0, 4.0, 17.0, 3.0, 7.0]


def test_tiers_for_are_the_trusted_chain_members_in_price_order():
    policy = _policy()
    data = _hand_data()
    assert [policy.tiers_for(row) for row in data.scores] == [
        [1, 2], [], [2], [0, 1, 2], [0, 1, 2], [0, 1, 2]
    ]  # fmt: skip
    # A threshold no score reaches is "always call the fallback".
    never = _policy(score_threshold=0.95).simulate(data)
    assert never.served.tolist() == [3] * data.n and never.escalated.all()


def test_free_text_agreement_is_read_in_the_querys_own_tier_order():
    # Tier 0 agrees with tiers 1 and 2, which disagree with each other. Over the whole
    # chain 1 and 2 would both join tier 0's group; tier 0 is skipped here, so 1 leads
    # and 2 does not join it: the answers disagree and the query escalates.
    agree = np.zeros((1, 4, 4), dtype=bool)
    agree[0, np.arange(4), np.arange(4)] = True
    agree[0, [0, 1, 0, 2], [1, 0, 2, 0]] = True
    data = PolicyData(
        np.ones((1, 4)), np.full((1, 4), -1), COSTS[None, :].copy(),
        np.array([[0.1, 0.9, 0.9, 0.9]]), agree,
    )  # fmt: skip
    policy = _policy(threshold=3.0)
    assert policy.codes(data).tolist() == [[-2, 1, 2, -2]]
    assert policy.simulate(data).escalated.tolist() == [True]
    trusting_all = PolicyData(data.quality, data.codes, data.costs, np.full((1, 4), 0.9), agree)
    assert policy.codes(trusting_all).tolist() == [[0, 0, 0, -2]]
    assert policy.simulate(trusting_all).served.tolist() == [2]


def _vote(asked, weights, codes):
    """Independent weighted vote: the leading extracted answer and its margin."""
    groups: dict[int, list[int]] = {}
    for column in asked:
        if codes[column] >= 0:
            groups.setdefault(int(codes[column]), []).append(column)
    if not groups:
        responding = [c for c in asked if codes[c] != -2]
        if not responding:
            return -1, 0.0
        return max(responding, key=lambda c: (weights[c], -c)), 0.0
    total = sum(weights[c] for members in groups.values() for c in members)

    def strength(members):
        return (sum(weights[c] for c in members), max(weights[c] for c in members))

    leader = max(groups.values(), key=strength)
    support = sum(weights[c] for c in leader)
    return max(leader, key=lambda c: (weights[c], -c)), support - (total - support)


def _loop(policy, data):
    """What a router cascade does, one query at a time (free text: agreement in own order)."""
    served, invoked = [], np.zeros(data.quality.shape, dtype=bool)
    weights = dict(zip(policy.chain, policy.weights, strict=True))
    for i in range(data.n):
        tiers = [c for c in policy.chain if data.scores[i, c] >= policy.score_threshold]
        codes = dict(enumerate(data.codes[i].tolist()))
        if data.agree is not None:
            leaders: list[int] = []
            for c in tiers:
                if not data.agree[i, c, c]:
                    codes[c] = -2
                    continue
                codes[c] = next((lead for lead in leaders if data.agree[i, c, lead]), c)
                if codes[c] == c:
                    leaders.append(c)
        asked, answer = [], policy.fallback
        for c in tiers:
            asked.append(c)
            invoked[i, c] = True
            chosen, margin = _vote(asked, weights, codes)
            if chosen >= 0 and margin >= policy.threshold:
                answer = chosen
                break
        else:
            invoked[i, policy.fallback] = True
        served.append(answer)
    return np.array(served), invoked


def _random_data(rng, n=300, m=6, free_text=False):
    codes = rng.integers(-2, 3, size=(n, m))
    agree = None
    if free_text:
        agree = rng.random((n, m, m)) < 0.5
        agree = agree & agree.transpose(0, 2, 1)
        answered = rng.random((n, m)) < 0.9
        agree[:, np.arange(m), np.arange(m)] = answered
        agree &= answered[:, :, None] & answered[:, None, :]
        codes = np.full((n, m), -1)
    costs = rng.random((n, m)) + np.arange(m)[None, :]
    return PolicyData(rng.random((n, m)).round(), codes, costs, rng.random((n, m)), agree)


def _random_policies(rng):
    weights = tuple(float(w) for w in log_odds(rng.uniform(0.55, 0.95, size=4)))
    return [
        RouterCascade((0, 2, 3, 4), score, margin, 5, weights)
        for score in (0.0, 0.3, 0.6, 0.9)
        for margin in (0.0, 0.7, 1.5, 3.0, 10.0)
    ]


@pytest.mark.parametrize("free_text", [False, True])
def test_simulate_and_simulate_group_equal_an_independent_per_query_loop(free_text):
    rng = np.random.default_rng(1 if free_text else 0)
    data = _random_data(rng, free_text=free_text)
    policies = _random_policies(rng)
    grouped = simulate_family(policies, data)
    assert len({p.group_key() for p in policies}) == 4
    for policy, shared in zip(policies, grouped, strict=True):
        outcome = policy.simulate(data)
        served, invoked = _loop(policy, data)
        np.testing.assert_array_equal(outcome.served, served)
        np.testing.assert_array_equal(outcome.invoked, invoked)
        np.testing.assert_array_equal(outcome.escalated, invoked[:, policy.fallback])
        np.testing.assert_allclose(outcome.cost, (invoked * data.costs).sum(axis=1))
        for field in ("served", "invoked", "cost", "escalated"):
            np.testing.assert_array_equal(getattr(shared, field), getattr(outcome, field))


@pytest.mark.parametrize("free_text", [False, True])
def test_later_tiers_answers_do_not_change_a_query_that_stopped_earlier(free_text):
    rng = np.random.default_rng(2)
    data = _random_data(rng, free_text=free_text)
    for policy in _random_policies(rng):
        before = policy.simulate(data)
        uncalled = ~before.invoked
        codes = np.where(uncalled, rng.integers(-2, 3, size=data.codes.shape), data.codes)
        agree = None
        if free_text:
            touched = uncalled[:, :, None] | uncalled[:, None, :]
            shuffled = rng.random(data.agree.shape) < 0.5
            agree = np.where(touched, shuffled & shuffled.transpose(0, 2, 1), data.agree)
        changed = PolicyData(data.quality, codes, data.costs, data.scores, agree)
        after = policy.simulate(changed)
        stopped = ~before.escalated
        np.testing.assert_array_equal(after.served[stopped], before.served[stopped])
        np.testing.assert_array_equal(after.invoked[stopped], before.invoked[stopped])


@pytest.mark.parametrize("free_text", [False, True])
def test_the_gateways_sequential_protocol_serves_what_simulate_serves(free_text):
    # As PolicyRun._sequential: call tiers_for one at a time, simulate on the answers so
    # far (models not called yet: no response), stop when it serves without a new call.
    rng = np.random.default_rng(3)
    data = _random_data(rng, n=120, free_text=free_text)
    for policy in _random_policies(rng)[::3]:
        outcome = policy.simulate(data)
        for i in range(data.n):
            asked = np.zeros(data.quality.shape[1], dtype=bool)
            served = policy.fallback
            for column in policy.tiers_for(data.scores[i]):
                asked[column] = True
                agree = None
                if free_text:
                    agree = data.agree[i : i + 1] & asked[None, :, None] & asked[None, None, :]
                row = PolicyData(
                    data.quality[i : i + 1], np.where(asked, data.codes[i], -2)[None, :],
                    data.costs[i : i + 1], data.scores[i : i + 1], agree,
                )  # fmt: skip
                seen = policy.simulate(row)
                if not seen.escalated[0] and not (seen.invoked[0] & ~asked).any():
                    served = int(seen.served[0])
                    assert "agreement margin" in policy.stop_reason(row, asked)
                    break
            else:
                asked[policy.fallback] = True
            assert served == outcome.served[i]
            np.testing.assert_array_equal(asked, outcome.invoked[i])


def test_json_round_trip_through_the_registry():
    policy = RouterCascade((1, 4, 2), 0.85, 3.5, 0, (1.25, 2.5, 0.75))
    state = json.loads(json.dumps(policy.state()))
    assert state["kind"] == "router_cascade"
    rebuilt = policy_from_state(state)
    assert rebuilt == policy and isinstance(rebuilt, RouterCascade)
    assert rebuilt.models_used() == [1, 4, 2, 0]


def test_invalid_router_cascades_are_refused():
    with pytest.raises(ValueError, match="one weight per tier"):
        RouterCascade((0, 1), 0.5, 1.0, 2, (1.0,))
    with pytest.raises(ValueError, match="cannot also be a tier"):
        RouterCascade((0, 2), 0.5, 1.0, 2, (1.0, 1.0))
    with pytest.raises(ValueError, match="router's scores"):
        _policy().simulate(PolicyData(np.ones((1, 4)), np.zeros((1, 4)), np.ones((1, 4))))


def test_policy_grid_adds_price_ordered_router_cascades_from_training_data_only():
    prices = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 50.0])
    accuracy = np.array([0.9, 0.6, 0.85, 0.7, 0.95, 0.8, 0.97])
    grid = policy_grid(prices, accuracy, fallback=6, with_router=True, n_candidates=5)
    routed = [p for p in grid if isinstance(p, RouterCascade)]
    assert not any(isinstance(p, RouterCascade) for p in policy_grid(prices, accuracy, 6))
    # Candidates: the 5 most accurate cheaper models (4, 0, 2, 5, 3), by price 3, 2, 5, 0, 4.
    chains = list(dict.fromkeys(p.chain for p in routed))
    assert chains == [(3,), (3, 2), (3, 2, 5), (3, 2, 5, 0), (3, 2, 5, 0, 4)]
    sizes = {min(k, 5) for k in ROUTER_CHAIN_SIZES}
    assert len(routed) == len(sizes) * len(ROUTER_SCORE_THRESHOLDS) * len(ROUTER_MARGINS)
    weights = log_odds(accuracy)
    assert all(p.weights == tuple(float(weights[m]) for m in p.chain) for p in routed)
    assert all(p.fallback == 6 for p in routed)


@pytest.fixture(scope="module")
def arc(shared_data, routerbench_pool):
    """RouterBench ARC test file as policy data, scored by the independent router."""
    from racer.data import load_dataset
    from racer.evaluation.certified import answer_kind, policy_data

    scores, labels = routerbench_pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test = load_dataset(
            shared_data / "routerbench" / "arc_challenge_test.csv", missing="drop_queries"
        )
    assert np.array_equal(test.labels, labels)
    return policy_data(test, np.array(scores), answer_kind(test)), test.model_names


def test_certified_router_cascades_are_valid_on_arc(arc):
    # The exact test of METHOD.md section 7: the family (router cascades and the
    # reference) and its order come from a training part; each trial calibrates on an
    # i.i.d. resample of the rest and measures the chosen policy's risk on all of it.
    from racer.evaluation.report import monte_carlo_limit
    from racer.policies.front import never_dearer, tolerance_front

    data, names = arc
    reference = names.index("gpt-4-1106-preview")
    rows = np.random.default_rng(0).permutation(data.n)
    train, pool = data.take(rows[: data.n // 3]), data.take(rows[data.n // 3 :])
    accuracy = train.quality.mean(axis=0)
    grid = policy_grid(train.costs.mean(axis=0), accuracy, reference, with_router=True)
    family = [grid[0], *(p for p in grid if isinstance(p, RouterCascade))]
    assert isinstance(family[0], Single)
    train_losses, train_costs = loss_and_cost(
        simulate_family(family, train), train.quality, "regret", reference
    )
    order = never_dearer(tolerance_front(train_losses, train_costs), train_costs, 0)
    losses, costs = loss_and_cost(simulate_family(family, pool), pool.quality, "regret", reference)
    risks = losses.mean(axis=0)
    # Just below the pool risk of router cascades of the order: certifying them violates.
    alphas = sorted({round(float(r) - 0.002, 4) for r in risks[order] if r >= 0.01})[:3]
    delta, trials, n_cal = 0.1, 100, 300
    resamples = np.random.default_rng(1).integers(0, pool.n, size=(trials, n_cal))
    ordered = [family[i] for i in order]
    cheaper = 0
    for alpha in alphas:
        violations = 0
        for sample in resamples:
            certificate = certify(
                ordered, losses[sample][:, order], costs[sample][:, order], objective="regret",
                alpha=alpha, delta=delta, order=np.arange(order.size), fallback_index=0,
            )  # fmt: skip
            chosen = order[certificate.index]
            violations += certificate.certified and risks[chosen] > alpha
            cheaper += not certificate.only_fallback
        assert violations / trials <= monte_carlo_limit(delta, trials), (alpha, violations)
    # Not vacuous: router cascades cheaper than the reference are certified.
    assert cheaper > 0.2 * trials
