"""Per-slice certificates, priced refusals and strict's training front on RouterBench.

The pool is the population (METHOD.md section 7): every trial calibrates on an i.i.d.
resample of it and the risk of what is served is measured on the whole pool, per group.
The base router is the independent TF-IDF + logistic regression of tests/real_data.py,
trained on the train files; the pools are the test files.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from real_data import logistic_scores

from racer import RACER, InfeasibleCalibrationError
from racer.data import load_dataset

TRIALS = 200
DELTA = 0.1
SLACK = 3 * math.sqrt(DELTA * (1 - DELTA) / TRIALS)
TASKS = ("arc_challenge", "mbpp")


class _Rows:
    def __init__(self, queries, labels) -> None:
        self.queries, self.labels = queries, labels
        self.n_models, self.n_queries = labels.shape[1], len(queries)


@pytest.fixture(scope="module")
def mixed_pool(shared_data):
    """ARC-Challenge and MBPP test queries pooled, scored by a router trained on both
    train files; the group is the task."""

    def load(split):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = [load_dataset(shared_data / "routerbench" / f"{task}_{split}.csv",
                                  missing="drop_queries") for task in TASKS]
        rows = _Rows(np.concatenate([p.queries for p in parts]),
                     np.vstack([p.labels for p in parts]))
        return rows, np.repeat(TASKS, [p.n_queries for p in parts])

    (train, _), (test, groups) = load("train"), load("test")
    return logistic_scores(train, test), test.labels, groups


def per_group_pool_risks(scores, labels, groups, make, fit_groups, rng, n_cal=1500):
    """Each trial's pool risk per group (rows: trials; columns: ARC, MBPP)."""
    risks = []
    for _ in range(TRIALS):
        sample = rng.integers(0, len(scores), size=n_cal)
        router = make().fit(scores[sample], labels[sample],
                            groups=groups[sample] if fit_groups else None)
        risks.append(router.group_risk(scores, labels, groups).risk)
    return np.array(risks)


@pytest.mark.parametrize("abstention", ["flag", False])
def test_per_group_calibration_keeps_every_group_at_alpha(mixed_pool, abstention):
    scores, labels, groups = mixed_pool
    make = lambda: RACER(alpha=0.2, delta=DELTA, abstention=abstention)  # noqa: E731
    per_group = per_group_pool_risks(scores, labels, groups, make, True, np.random.default_rng(0))
    violation = np.mean(per_group > 0.2, axis=0)
    assert np.all(violation <= DELTA + SLACK), violation
    marginal = per_group_pool_risks(scores, labels, groups, make, False, np.random.default_rng(0))
    assert np.mean(marginal[:, 0]) < 0.1  # the marginal certificate is spent on ARC...
    if abstention == "flag":  # ...and leaves MBPP far above alpha
        assert np.mean(marginal[:, 1] > 0.2) == 1.0 and np.mean(marginal[:, 1]) > 0.3


def test_arc_default_flag_mode_answers_every_query_and_keeps_its_promise(routerbench_pool):
    scores, labels = routerbench_pool
    rng = np.random.default_rng(1)
    risks, refusals = [], []
    for _ in range(TRIALS):
        sample = rng.integers(0, len(scores), size=400)
        router = RACER(alpha=0.2, delta=DELTA).fit(scores[sample], labels[sample])
        risks.append(router.risk(scores, labels))
        refusals.append(np.mean(~router.predict(scores).any(axis=1)))
    assert max(refusals) <= 0.02
    assert np.mean(np.array(risks) > 0.2) <= DELTA + SLACK


def test_arc_strict_along_a_training_front_is_certified_small_and_valid(routerbench_pool):
    scores, labels = routerbench_pool
    rng = np.random.default_rng(2)
    risks, sizes = [], []
    for _ in range(TRIALS):
        calibration = rng.integers(0, len(scores), size=600)
        training = rng.integers(0, len(scores), size=400)  # an independent draw
        router = RACER(alpha=0.05, delta=DELTA, abstention="strict")
        try:
            router.fit(scores[calibration], labels[calibration],
                       train_scores=scores[training], train_labels=labels[training])
        except InfeasibleCalibrationError:
            continue
        risks.append(router.risk(scores, labels))
        sizes.append(router.predict(scores).sum(axis=1).mean())
    assert len(risks) >= 0.9 * TRIALS
    assert np.mean(sizes) <= 2.2
    assert np.sum(np.array(risks) > 0.05) / TRIALS <= DELTA + SLACK
