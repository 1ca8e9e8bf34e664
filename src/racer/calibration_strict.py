"""Strict abstention: the (tau, lambda) pair certified by Learn-then-Test.

Strict abstention calls no model iff ``s_0 >= tau`` and otherwise calls the models whose
entry level is at most lambda; its loss (:mod:`racer.losses`) is not monotone in tau, so
the pairs of a pre-specified grid are tested by Learn-then-Test (:mod:`racer.ltt`,
:mod:`racer.fwer`; METHOD.md sections 5b and 5e). Two ways to order the tests:

- along a training front (``training=`` given): the pairs on the risk-cost front of a
  training split (:func:`racer.ltt.risk_cost_front`), tested by ONE fixed sequence at the
  full ``delta``, safest first, the same mechanism as the answer-level policies;
- without training data: one chain down the lambda grid per tau of a coarse,
  data-independent tau grid, the chains sharing ``delta`` (Bonferroni).

Among the certified pairs the one with the lowest calibration cost is served, a refusal
(abstention) counting ``refusal_cost`` (by default the cost of calling the query's top
model), so a refusal is never bought where answering costs no more.

Examples
--------
>>> import numpy as np
>>> from racer.calibration_strict import calibrate_strict
>>> rng = np.random.default_rng(0)
>>> scores = rng.uniform(size=(2000, 3))
>>> labels = (rng.uniform(size=(2000, 3)) < scores).astype(float)
>>> model_entry = 1.0 - scores
>>> model_entry[np.arange(2000), scores.argmax(axis=1)] = -np.inf
>>> result = calibrate_strict(model_entry, 1.0 - scores.max(axis=1), labels, alpha=0.2)
>>> bool(result.risk_bound <= 0.2)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer import bounds
from racer.exceptions import InfeasibleCalibrationError
from racer.losses import (
    best_quality_steps,
    is_binary,
    losses_on_grid,
    unanswerable,
    worst_case_quality,
)
from racer.ltt import LTTResult, binomial_pvalues, ltt_certify, ltt_pvalues, risk_cost_front

__all__ = [
    "COARSE_ABSTAIN_GRID_SIZE",
    "FRONT_ABSTAIN_GRID_SIZE",
    "StrictCalibrationResult",
    "StrictSplit",
    "calibrate_strict",
    "strict_grids",
    "strict_losses",
]

#: Taus in (0, 1] of the grid a training front is built on.
FRONT_ABSTAIN_GRID_SIZE = 20
#: Taus in (0, 1] without training data: few chains, so each keeps a large share of delta.
COARSE_ABSTAIN_GRID_SIZE = 4


@dataclass(frozen=True)
class StrictSplit:
    """One split's inputs of strict calibration (the training split of a front).

    Attributes
    ----------
    model_entry : numpy.ndarray, shape (n, M)
        Entry levels of the models (the top model at ``-inf``).
    abstain_score : numpy.ndarray, shape (n,)
        ``s_0``; a query is abstained on under ``tau`` iff ``s_0 >= tau``.
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality; NaN = unknown (worst case).
    """

    model_entry: np.ndarray
    abstain_score: np.ndarray
    quality: np.ndarray


@dataclass(frozen=True)
class StrictCalibrationResult:
    """The certified (lambda, tau) pair of strict abstention and what certifies it.

    Attributes
    ----------
    threshold : float
        The calibrated lambda of the model sets (taken when not abstaining).
    abstain_threshold : float
        The calibrated tau: abstain (call no model) iff ``s_0 >= tau``; ``inf`` = never.
    empirical_risk : float
        Calibration mean of the strict loss at the chosen pair.
    risk_bound : float
        Upper confidence bound of the chosen pair's risk at the level it was tested at.
    mean_set_size : float
        Mean number of models invoked per calibration query (abstentions count 0).
    mean_cost : float
        Mean cost per calibration query that the choice minimised: models invoked (or
        their costs), plus ``refusal_cost`` per abstention.
    abstention_rate : float
        Share of calibration queries abstained on.
    lambda_grid, abstain_grid : numpy.ndarray
        The pre-specified grids.
    tested : numpy.ndarray of int
        The pairs tested (tau-major index ``t * L + l``), in the order of the training
        front, or every pair of the grid for the chains.
    procedure : {"front", "chains"}
        One fixed sequence along a training front, or Bonferroni-combined chains.
    ltt : LTTResult
        The Learn-then-Test run over all pairs, tau-major.
    """

    threshold: float
    abstain_threshold: float
    empirical_risk: float
    risk_bound: float
    mean_set_size: float
    mean_cost: float
    abstention_rate: float
    lambda_grid: np.ndarray
    abstain_grid: np.ndarray
    tested: np.ndarray
    procedure: str
    ltt: LTTResult


def strict_grids(
    lambda_range: tuple[float, float],
    lambda_grid_size: int = 201,
    abstain_grid_size: int = FRONT_ABSTAIN_GRID_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The data-independent grids of strict abstention: lambdas, and taus plus ``inf``."""
    lambdas = np.linspace(lambda_range[0], lambda_range[1], lambda_grid_size)
    taus = np.append(np.linspace(1.0, 0.0, abstain_grid_size, endpoint=False)[::-1], np.inf)
    return lambdas, taus


def strict_losses(
    model_entry: np.ndarray,
    abstain_score: np.ndarray,
    quality: np.ndarray,
    lambdas: np.ndarray,
    taus: np.ndarray,
) -> np.ndarray:
    """Strict loss of every point (rows) under every pair (tau-major columns).

    Parameters
    ----------
    model_entry : numpy.ndarray, shape (n, M)
        Entry levels of the models (without the abstain column; the top model ``-inf``).
    abstain_score : numpy.ndarray, shape (n,)
        ``s_0``; the point abstains under ``tau`` iff ``s_0 >= tau``.
    quality : numpy.ndarray, shape (n, M)
        Labels or graded quality; NaN = unknown (worst case).
    lambdas, taus : numpy.ndarray
        The grids.

    Returns
    -------
    numpy.ndarray, shape (n, len(taus) * len(lambdas))
    """
    model_quality = worst_case_quality(quality)[0]
    model_losses = losses_on_grid(*best_quality_steps(model_entry, model_quality), lambdas)
    abstained = abstain_score[:, None] >= taus[None, :]
    abstain_loss = (~unanswerable(quality)).astype(float)[:, None, None]
    losses = np.where(abstained[:, :, None], abstain_loss, model_losses[:, None, :])
    return losses.reshape(len(abstain_score), -1)


def _binary_totals(split: StrictSplit, lambdas: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Loss counts of every (tau, lambda) pair for 0/1 labels, from sorts (no n x K matrix)."""
    first_good = np.where(split.quality == 1, split.model_entry, np.inf).min(axis=1)
    answerable = ~unanswerable(split.quality)
    totals = np.empty((taus.size, lambdas.size), dtype=np.int64)
    for t, tau in enumerate(taus):
        abstained = split.abstain_score >= tau
        kept = np.sort(first_good[~abstained])
        misses = kept.size - np.searchsorted(kept, lambdas, side="right")
        totals[t] = int(np.count_nonzero(abstained & answerable)) + misses
    return totals.ravel()


def _pair_costs(
    split: StrictSplit,
    lambdas: np.ndarray,
    taus: np.ndarray,
    model_costs: np.ndarray | None,
    refusal_cost: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed models invoked, and summed cost (models or their costs, plus refusals), of
    every (tau, lambda) pair."""
    entry = split.model_entry
    weights = np.ones(entry.shape[1]) if model_costs is None else model_costs
    if refusal_cost is None:  # a refusal costs what calling the query's top model costs
        refusal_costs = weights[np.argmin(entry, axis=1)]
    else:
        refusal_costs = np.full(len(entry), float(refusal_cost))
    n, m = entry.shape
    order = np.argsort(entry.ravel(), kind="stable")  # one sort; each tau keeps a sub-sequence
    sorted_levels = entry.ravel()[order]
    sorted_rows = order // m
    sorted_weights = np.tile(weights, n)[order]
    sizes = np.empty((taus.size, lambdas.size))
    costs = np.empty((taus.size, lambdas.size))
    for t, tau in enumerate(taus):
        answered = split.abstain_score < tau
        kept = answered[sorted_rows]
        joined = np.searchsorted(sorted_levels[kept], lambdas, side="right")
        cumulative = np.concatenate([[0.0], np.cumsum(sorted_weights[kept])])
        sizes[t] = joined
        costs[t] = cumulative[joined] + refusal_costs[~answered].sum()
    return sizes.ravel(), costs.ravel()


def _loss_totals(
    split: StrictSplit, lambdas: np.ndarray, taus: np.ndarray, binary: bool
) -> np.ndarray:
    """Summed strict loss of every pair (from sorts for 0/1 labels)."""
    if binary:
        return _binary_totals(split, lambdas, taus)
    losses = strict_losses(split.model_entry, split.abstain_score, split.quality, lambdas, taus)
    return losses.sum(axis=0)


def _strict_infeasible_message(
    quality: np.ndarray, alpha: float, delta: float, bound: str, best_risk: float, how: str
) -> str:
    no_good = float(np.mean(unanswerable(quality)))
    message = (
        f"Cannot certify strict-abstention risk <= {alpha} with probability >= {1 - delta:g} "
        f"({bound!r} p-values, {how}) on n={len(quality)} calibration points: the best "
        f"(lambda, tau) pair has empirical risk {best_risk:.4f}."
    )
    if no_good > alpha:
        message += (
            f" {no_good:.1%} of the calibration queries have no good model (no model answers "
            f"them), more than alpha={alpha}: any method that keeps this promise must abstain "
            f"on at least {no_good - alpha:.1%} of all queries, and this router's abstain "
            "score cannot single those queries out well enough. Raise alpha, use "
            "abstention='flag', or give a better abstain score (abstain_score='given' with "
            "an AbstentionHead)."
        )
    else:
        message += " Raise alpha or delta, or add calibration data."
    return message


def calibrate_strict(
    model_entry: np.ndarray,
    abstain_score: np.ndarray,
    quality: np.ndarray,
    *,
    alpha: float,
    delta: float = 0.1,
    bound: str = "binomial",
    lambda_range: tuple[float, float] = (0.0, 1.0),
    lambda_grid_size: int = 201,
    abstain_grid_size: int | None = None,
    training: StrictSplit | None = None,
    model_costs: np.ndarray | None = None,
    refusal_cost: float | None = None,
    random_state: int | None = 0,
) -> StrictCalibrationResult:
    """Jointly calibrate the model threshold lambda and the abstain threshold tau.

    Validity. Every pair's p-value is valid for its null ``R(tau, lambda) > alpha``.

    - Along a training front (``training`` given): the grid and the order of the tests are
      functions of the training split and the grid sizes only, so they are fixed before
      the calibration data is seen (the two splits are independent). Fixed-sequence
      testing along one fixed order at level ``delta`` rejects a true null only if it
      rejects the first true null met, which happens with probability at most ``delta``.
    - Without training data: for every tau of a coarse grid (``abstain_grid_size`` levels
      in (0, 1] and ``inf`` = never abstain), a fixed sequence down the lambda grid
      (largest sets first) at ``delta / len(taus)``; the chains are combined by
      Bonferroni, so the family-wise error is at most the sum of the chains' errors.

    Either way P(some certified pair has risk > alpha) <= delta, so the pair chosen among
    the certified, whatever the rule (here: the lowest mean calibration cost, refusals
    priced at ``refusal_cost``), has risk <= alpha with probability >= 1 - delta.

    Parameters
    ----------
    model_entry : numpy.ndarray, shape (n, M)
        Entry levels of the models (no abstain column; the top model at ``-inf`` so that
        a query that is not abstained on always calls a model).
    abstain_score : numpy.ndarray, shape (n,)
        ``s_0``, the score of "no model answers this".
    quality : numpy.ndarray, shape (n, M)
        0/1 labels or graded quality in [0, 1]; NaN = unknown (worst case).
    alpha, delta : float
        Risk level and failure probability.
    bound : {"binomial", "hb", "wsr"}
        The p-value of each pair.
    lambda_range : tuple of float
        The family's range of lambdas.
    lambda_grid_size : int
        Lambdas in the grid.
    abstain_grid_size : int, optional
        Taus in (0, 1]; default :data:`FRONT_ABSTAIN_GRID_SIZE` along a training front,
        :data:`COARSE_ABSTAIN_GRID_SIZE` without.
    training : StrictSplit, optional
        The same inputs on a training split (never the calibration data): the pairs are
        then tested along its risk-cost front.
    model_costs : numpy.ndarray, shape (M,), optional
        Per-model costs; the cost of a pair is then the cost of the models it calls,
        otherwise their number.
    refusal_cost : float, optional
        Cost of one abstention in the same unit; default the cost of calling the query's
        top model (one model without ``model_costs``); 0 counts refusals as free.
    random_state : int or None
        Seed of the WSR order.

    Returns
    -------
    StrictCalibrationResult

    Raises
    ------
    InfeasibleCalibrationError
        When no pair is certified; when the cause is the share of queries that no
        model answers, the message gives that share and the least abstention rate any
        valid method would need.
    """
    if abstain_grid_size is None:
        abstain_grid_size = (
            COARSE_ABSTAIN_GRID_SIZE if training is None else FRONT_ABSTAIN_GRID_SIZE
        )
    lambdas, taus = strict_grids(lambda_range, lambda_grid_size, abstain_grid_size)
    calibration = StrictSplit(model_entry, abstain_score, quality)
    n = len(quality)
    binary = is_binary(quality)
    if bound == "binomial" and not binary:
        raise ValueError(
            "The 'binomial' p-value needs 0/1 labels; use bound='hb' or 'wsr' for graded "
            "quality."
        )
    losses = np.empty((n, 0))
    if bound == "binomial":
        totals = _binary_totals(calibration, lambdas, taus)
        p_values = binomial_pvalues(totals, n, alpha)
    else:
        losses = strict_losses(model_entry, abstain_score, quality, lambdas, taus)
        totals = losses.sum(axis=0)
        p_values = ltt_pvalues(losses, alpha, bound=bound, delta=delta, random_state=random_state)
    sizes, costs = _pair_costs(calibration, lambdas, taus, model_costs, refusal_cost)
    if training is None:
        order: list[np.ndarray] = [
            t * lambdas.size + np.arange(lambdas.size)[::-1] for t in range(taus.size)
        ]
        level = delta / taus.size
        how = f"delta split over {taus.size} abstain thresholds"
    else:
        train_totals = _loss_totals(training, lambdas, taus, is_binary(training.quality))
        train_costs = _pair_costs(training, lambdas, taus, model_costs, refusal_cost)[1]
        n_train = len(training.quality)
        order = [risk_cost_front(train_totals / n_train, train_costs / n_train)]
        level = delta
        how = f"one fixed sequence along a training front of {order[0].size} pairs"
    result = ltt_certify(
        p_values,
        n=n,
        alpha=alpha,
        delta=delta,
        bound=bound,
        method="fixed_sequence",
        order=order,
        config_costs=costs / n,
    )
    if result.chosen is None:
        raise InfeasibleCalibrationError(
            _strict_infeasible_message(
                quality, alpha, delta, bound, float(np.min(totals)) / n, how
            )
        )
    chosen = result.chosen
    tau_index, lambda_index = divmod(chosen, lambdas.size)
    if bound == "binomial":
        risk_bound = float(bounds.binomial_ucb(int(totals[chosen]), n, level))
    elif bound == "hb":
        risk_bound = float(bounds.hb_ucb(float(totals[chosen]), n, level))
    else:
        column = losses[np.random.default_rng(random_state).permutation(n), chosen]
        risk_bound = float(bounds.wsr_ucb(column, level))
    return StrictCalibrationResult(
        threshold=float(lambdas[lambda_index]),
        abstain_threshold=float(taus[tau_index]),
        empirical_risk=float(totals[chosen]) / n,
        risk_bound=risk_bound,
        mean_set_size=float(sizes[chosen]) / n,
        mean_cost=float(costs[chosen]) / n,
        abstention_rate=float(np.mean(abstain_score >= taus[tau_index])),
        lambda_grid=lambdas,
        abstain_grid=taus,
        tested=np.concatenate(order),
        procedure="chains" if training is None else "front",
        ltt=result,
    )
