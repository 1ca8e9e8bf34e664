"""The fit's fast path (levels built once, certificates from breakpoints, diagnostics
without re-predicting) gives, bit for bit, what a straightforward fit gives.

The reference below builds the served sets at every lambda at which a set can change,
scores them with ``served_losses``, tests each with the binomial p-value, and reads the
diagnostics from the served decisions with ``served_rates``: no breakpoint, no sort, no
shared code with the fit beyond the loss and the bound.
"""

import numpy as np
import pytest

from racer import RACER, bounds
from racer.diagnostics import served_rates
from racer.losses import served_losses, unanswerable
from racer.sets import augmented_scores, entry_levels

ALPHA, DELTA = 0.3, 0.1


def calibration_data(seed, n=360, m=4):
    """Scores with exact ties and ties that appear only after ``1 - s``, 0/1 labels with
    unknowns, and three groups of unequal size."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(size=(n, m))
    scores[: n // 3] = np.round(scores[: n // 3], 1)
    scores[n // 3 : n // 3 + 20] = 0.0
    scores[n // 3 : n // 3 + 20, :2] = [1e-17, 2e-17]  # top scores tie after 1 - s only
    labels = (rng.uniform(size=(n, m)) < scores**2).astype(float)
    labels[rng.uniform(size=(n, m)) < 0.04] = np.nan
    groups = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.5, 0.3, 0.2])
    return scores, labels, groups


def reference_threshold(entry, labels, mode, level):
    """RCPS over every lambda at which a set can change: the smallest lambda above which
    every tested lambda has binomial p-value <= level."""
    finite = entry[np.isfinite(entry) & (entry > 0)]
    lams = np.unique(np.concatenate([[0.0], finite]))
    inside = entry[None, :, :] <= lams[:, None, None]
    n, width = entry.shape
    losses = served_losses(mode, inside.reshape(-1, width), np.tile(labels, (lams.size, 1)))
    totals = losses.reshape(lams.size, n).sum(axis=1).round().astype(int)
    failing = np.flatnonzero(bounds.binomial_pvalue(totals, n, ALPHA) > level)
    chosen = failing[-1] + 1 if failing.size else 0
    return lams[chosen], totals[chosen]


def reference_fit(scores, labels, groups, abstention, refusals):
    mode = "flag" if abstention else "off"
    entry = entry_levels(augmented_scores(scores), abstention=abstention, refusals=refusals)
    thresholds = np.empty(len(scores))
    for name in np.unique(groups):
        rows = groups == name
        thresholds[rows] = reference_threshold(entry[rows], labels[rows], mode, DELTA)[0]
    decision = entry <= thresholds[:, None]
    return decision, served_rates(mode, decision, labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("abstention", "refusals"), [(True, False), (True, True), (False, False)]
)
@pytest.mark.parametrize("grouped", [False, True])
def test_the_fit_equals_a_straightforward_fit_bit_for_bit(seed, abstention, refusals, grouped):
    scores, labels, groups = calibration_data(seed)
    group_labels = groups if grouped else np.zeros(len(scores), dtype=int)
    router = RACER(ALPHA, DELTA, abstention=abstention, refusals=refusals, refusal_cost=0.0)
    router.fit(scores, labels, groups=groups if grouped else None)
    decision, rates = reference_fit(scores, labels, group_labels, abstention, refusals)
    served = router.predict(scores, include_abstain=True, groups=groups if grouped else None)
    assert np.array_equal(served, decision)
    if grouped:
        for name, certificate in router.groups_.items():
            rows = groups == name
            assert certificate.threshold == decision_threshold(router, rows, scores, labels)
    assert router.mean_set_size_ == np.count_nonzero(decision[:, 1:]) / len(decision)
    assert router.refusal_rate_ == rates.refusal_rate
    assert router.without_right_answer_ == rates.without_right_answer
    assert (router.flag_rate_ if abstention else 0.0) == rates.flag_rate
    assert np.array_equal(router.flag_precision_, rates.flag_precision, equal_nan=True)
    assert router.unanswerable_share_ == float(np.mean(unanswerable(labels)))
    mode = "flag" if abstention else "off"
    assert router.empirical_risk_ == pytest.approx(
        served_losses(mode, decision, labels).mean(), abs=0, rel=1e-15
    )


def decision_threshold(router, rows, scores, labels):
    """The reference threshold of one group's rows (at the group's level)."""
    mode = router.abstention_mode_
    entry = entry_levels(
        augmented_scores(scores[rows]), abstention=mode == "flag", refusals=router.refusals
    )
    return reference_threshold(entry, labels[rows], mode, DELTA)[0]


def test_the_marginal_certificate_reports_the_reference_risk_and_bound():
    scores, labels, _ = calibration_data(3)
    router = RACER(ALPHA, DELTA).fit(scores, labels)
    entry = entry_levels(augmented_scores(scores), refusals=False)
    lam, losses = reference_threshold(entry, labels, "flag", DELTA)
    assert router.threshold_ == lam
    assert router.empirical_risk_ == losses / len(scores)
    assert router.risk_bound_ == float(bounds.binomial_ucb(losses, len(scores), DELTA))
