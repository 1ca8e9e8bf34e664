"""Certified answer-level policies: the family fixed from training data, and its certificate.

The policy family is built from the training split only (grid, router-led cascades with
router scores (:mod:`racer.policies.router_cascade`), cascades with a learned stop rule
when the training answers carry token logprobs (:mod:`racer.policies.learned`), training
risk-cost front, under regret the front with its ties never dearer than the reference,
fixed-sequence order; :mod:`racer.policies.front`); :func:`certify_dataset` certifies it
on calibration data and :func:`certify_for_artifact` turns the certificate into the JSON an
artifact saves (what ``racer calibrate --objective`` runs). The validity trials of an
evaluation are in :mod:`racer.evaluation.certified_trials`, their report text in
:mod:`racer.evaluation.certified_report`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from racer.aggregate import answer_codes, detect_answer_kind
from racer.data.dataset import RoutingDataset
from racer.policies import (
    Certificate,
    Policy,
    PolicyData,
    certify,
    loss_and_cost,
    policy_grid,
    training_front,
)
from racer.policies.front import dearer_than_reference, never_dearer, tolerance_front
from racer.policies.learned import fit_learned_cascades
from racer.policies.losses import check_objective
from racer.policies.simulate import simulate_family
from racer.signals import answer_signals
from racer.similarity import free_text_codes, free_text_kind, is_free_text

POLICY_FORMAT_VERSION = 1

__all__ = [
    "POLICY_FORMAT_VERSION",
    "PolicyFamily",
    "answer_kind",
    "certify_dataset",
    "certify_for_artifact",
    "check_objective_options",
    "model_index",
    "plan_family",
    "policy_data",
    "policy_state",
    "resolve_bound",
]


def policy_data(dataset: RoutingDataset, scores: np.ndarray | None, kind: str | None) -> PolicyData:
    """Labels (or graded quality), answer codes, costs and scores of a dataset.

    Unknown costs take the model's mean cost; without any cost each call costs 1.
    Without responses every answer is unextractable (cascades then cannot stop early).
    With a free-text kind (``"similarity"``: character n-grams, ``"similarity-dense"``:
    MiniLM embeddings) answers are unextractable and agree by the similarity of their
    texts (:func:`racer.similarity.agreement_function`). With
    responses, each answer's own signals (:func:`racer.signals.answer_signals`: length,
    hedging, token log-probabilities when recorded) ride along for learned stop rules.
    """
    quality = dataset.quality if dataset.quality is not None else dataset.labels
    if dataset.costs is not None and np.isfinite(dataset.mean_costs()).all():
        costs = np.where(np.isnan(dataset.costs), dataset.mean_costs()[None, :], dataset.costs)
    else:
        costs = np.ones(quality.shape)
    agree = None
    if dataset.responses is not None and is_free_text(kind):
        codes, agree = free_text_codes(dataset.responses, kind)
    elif dataset.responses is not None and kind is not None:
        codes = answer_codes(dataset.responses, kind)
    else:
        codes = np.full(quality.shape, -1, dtype=np.int64)
    signals = None
    if dataset.responses is not None:
        signals = answer_signals(dataset.responses, dataset.logprobs)
    return PolicyData(quality, codes, costs, scores, agree, signals)


def has_token_logprobs(dataset: RoutingDataset) -> bool:
    """Whether any recorded answer of ``dataset`` carries token log-probabilities."""
    if dataset.responses is None or dataset.logprobs is None:
        return False
    return any(values is not None and len(values) > 0 for values in dataset.logprobs.flat)


def answer_kind(dataset: RoutingDataset, agreement: str = "char") -> str | None:
    """How answers are compared: "choice" or "number" (extracted), else free-text agreement.

    Free text (no answer extractable) agrees by the similarity of the texts, the measure
    chosen by ``agreement`` (:func:`racer.similarity.free_text_kind`): "auto" is
    "similarity-dense" (MiniLM embeddings) when the ``dense`` extra is installed, else
    "similarity" (character n-grams); "char" and "dense" force one. None without
    responses (nothing to compare).
    """
    if dataset.responses is None:
        return None
    return detect_answer_kind(dataset.responses) or free_text_kind(agreement)


@dataclass(frozen=True)
class PolicyFamily:
    """A policy family fixed from the training split, with its test order.

    The list is already in the fixed-sequence order (training risk-cost front, safest
    first); ``policies[fallback_index]`` is "always call the fallback".
    """

    policies: list[Policy]
    fallback: int
    objective: str
    reference: int | None
    answer_kind: str | None
    fallback_index: int = 0

    def losses(self, data: PolicyData) -> tuple[np.ndarray, np.ndarray]:
        """Per-query losses and costs of every policy on ``data``, each (n, K)."""
        return loss_and_cost(
            simulate_family(self.policies, data), data.quality, self.objective, self.reference
        )


def model_index(names: tuple[str, ...], name: str, option: str = "reference") -> int:
    if name not in names:
        raise ValueError(f"Unknown {option} model {name!r}; the data has {list(names)}.")
    return names.index(name)


def plan_family(
    train: RoutingDataset,
    objective: str,
    reference: str | None = None,
    train_scores: np.ndarray | None = None,
    judge: str | None = None,
    *,
    agreement: str = "char",
    learned_stop: bool | None = None,
    free_text: bool = True,
) -> PolicyFamily:
    """The policy family and its fixed-sequence order, from the training split only.

    Parameters
    ----------
    train : RoutingDataset
        Training data: prices, accuracies, and each policy's training risk and cost.
    objective : {"set", "error", "regret"}
    reference : str, optional
        Reference model (required by "regret"); the best training model otherwise.
    train_scores : numpy.ndarray, shape (n_train, M), optional
        Out-of-sample router scores of the training queries (cross-fitted); with them
        the family also holds router-weighted cascades and RACER's parallel sets.
    judge : str, optional
        Judge model of judged parallel sets (only with ``train_scores``).
    agreement : str, default "char"
        Free-text agreement measure (:func:`answer_kind`): "auto", "char" or "dense".
    learned_stop : bool, optional
        Add cascades with a learned stop rule (:mod:`racer.policies.learned`), their
        training risk and cost cross-fitted. The margin-rule cascades stay in the family.
        By default (None) when the training answers carry token logprobs
        (:func:`has_token_logprobs`): the signal the learned rule adds beyond agreement.
        Without them it certified nothing cheaper than the margin rule on RouterBench ARC
        and MBPP (``benchmarks/results/answer_level.md``), and its extra members only
        spend the fixed sequence's budget, so it is left out unless asked for.
    free_text : bool
        Compare free-text answers by their similarity (False: unextractable answers are
        never compared; the family's ``answer_kind`` is then None).

    Notes
    -----
    Under "regret" the family is the training front with its ties
    (:func:`racer.policies.front.tolerance_front`: a dearer policy as safe on training
    data as a cheaper one stays, tested first) without the policies whose training cost
    exceeds the reference's
    (:func:`racer.policies.front.never_dearer`). Under "set" and "error" it is the
    training front (:func:`racer.policies.training_front`): there a dearer, safer policy
    (a larger set) may be what the risk level needs, and the fallback does not lead the
    order, so noisy policies added ahead of it would stop the fixed sequence early.
    """
    accuracy = np.nan_to_num(np.nanmean(train.labels, axis=0), nan=0.0)
    ref = None if reference is None else model_index(train.model_names, reference)
    check_objective(objective, ref)
    fallback = int(np.argmax(accuracy)) if ref is None else ref
    kind = answer_kind(train, agreement)
    kind = None if is_free_text(kind) and not free_text else kind
    data = policy_data(train, train_scores, kind)
    prices = data.costs.mean(axis=0)
    judge_column = None if judge is None else model_index(train.model_names, judge, "judge")
    grid = policy_grid(
        prices, accuracy, fallback, with_router=train_scores is not None, judge=judge_column
    )
    losses, costs = loss_and_cost(simulate_family(grid, data), data.quality, objective, ref)
    with_learned = has_token_logprobs(train) if learned_stop is None else learned_stop
    if with_learned:  # cross-fitted training outcomes (racer.policies.learned)
        grid, losses, costs = _with_learned(
            grid, losses, costs, data, accuracy, fallback, objective, ref
        )
    if objective == "regret":
        kept = never_dearer(tolerance_front(losses, costs, first=0), costs, reference_index=0)
    else:
        kept = training_front(losses, costs, first=0)
    return PolicyFamily(
        [grid[i] for i in kept], fallback, objective, ref, kind, int(np.flatnonzero(kept == 0)[0])
    )


def _with_learned(
    grid: list[Policy],
    losses: np.ndarray,
    costs: np.ndarray,
    data: PolicyData,
    accuracy: np.ndarray,
    fallback: int,
    objective: str,
    reference: int | None,
) -> tuple[list[Policy], np.ndarray, np.ndarray]:
    """The grid with the learned-stop cascades appended, their training losses cross-fitted.

    Each learned cascade's training loss and cost come from stop probabilities of a
    model that did not see the query (:func:`racer.policies.learned.fit_learned_cascades`),
    so the front and the fixed-sequence order do not trust in-sample fits.
    """
    learned = fit_learned_cascades(
        data, data.costs.mean(axis=0), accuracy, fallback, objective, reference
    )
    extra_losses, extra_costs = loss_and_cost(
        learned.training_outcomes, data.quality, objective, reference
    )
    return (
        [*grid, *learned.policies],
        np.hstack([losses, extra_losses]),
        np.hstack([costs, extra_costs]),
    )


def certify_dataset(
    family: PolicyFamily,
    calibration: RoutingDataset,
    *,
    alpha: float,
    delta: float,
    scores: np.ndarray | None = None,
    method: str = "fixed_sequence",
    bound: str = "auto",
    data: PolicyData | None = None,
) -> Certificate:
    """Certify ``family`` on calibration data; the cheapest certified policy.

    ``data``: the calibration data's :func:`policy_data` when the caller has it already.
    """
    if data is None:
        data = policy_data(calibration, scores, family.answer_kind)
    losses, costs = family.losses(data)
    bound = resolve_bound(bound, calibration)
    order = np.arange(len(family.policies))
    return certify(
        family.policies,
        losses,
        costs,
        objective=family.objective,
        alpha=alpha,
        delta=delta,
        order=order,
        method=method,
        bound=bound,
        fallback_index=family.fallback_index,
    )


def resolve_bound(bound: str, dataset: RoutingDataset) -> str:
    """``"auto"``: the binomial bound for 0/1 labels, Hoeffding-Bentkus for graded quality.

    Decided by the kind of data (graded ``quality`` or labels), never by the values a
    sample happens to hold: a graded task whose sample is all 0/1 still needs a bound
    valid for graded losses.
    """
    if bound != "auto":
        return bound
    return "binomial" if dataset.quality is None else "hb"


def check_objective_options(
    objective: str | None, reference: str | None, fwer: str = "fixed_sequence"
) -> None:
    """Command-line check of ``--objective``, ``--reference`` and ``--fwer`` (ValueError)."""
    from racer.policies import OBJECTIVES
    from racer.policies.certify import FWER_METHODS

    if fwer not in FWER_METHODS:
        raise ValueError(f"--fwer must be one of {', '.join(FWER_METHODS)}; got {fwer!r}.")
    if objective is None:
        if reference is not None:
            raise ValueError("--reference needs --objective regret (or error / set).")
        return
    if objective not in OBJECTIVES:
        raise ValueError(f"--objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}.")
    if objective == "regret" and reference is None:
        raise ValueError(
            "--objective regret needs --reference MODEL, the model not to fall below "
            "(for example gpt-4-1106-preview)."
        )


def policy_state(
    certificate: Certificate, family: PolicyFamily, model_names: tuple[str, ...]
) -> dict:
    """JSON of a certified policy for an artifact: the policy, its certificate, a sentence."""
    return {
        "policy_format_version": POLICY_FORMAT_VERSION,
        "certificate": certificate.state(),
        "reference": None if family.reference is None else model_names[family.reference],
        "fallback": model_names[family.fallback],
        "answer_kind": family.answer_kind,
        "description": certificate.policy.describe(model_names),
        "summary": certificate.sentence(model_names),
    }


def certify_for_artifact(
    objective: str | None,
    reference: str | None,
    train: RoutingDataset,
    calibration: RoutingDataset,
    *,
    alpha: float,
    delta: float,
    method: str = "fixed_sequence",
    router: str | None = None,
    calibration_scores: np.ndarray | None = None,
    agreement: str = "char",
    learned_stop: bool | None = None,
) -> dict | None:
    """``racer calibrate --objective``: certify the family on the calibration data.

    The family (accuracy-weighted cascades and single models) comes from ``train``. With
    ``router`` (the base router's name) and ``calibration_scores`` (its scores of the
    calibration queries, fitted on ``train``) the family also holds router-weighted
    cascades and RACER's parallel sets, their training risk from out-of-fold scores
    (:func:`racer.evaluation.scoring.out_of_fold_scores`). ``agreement`` picks the
    free-text agreement measure (:func:`answer_kind`); the artifact records the kind.
    (:func:`racer.evaluation.scoring.out_of_fold_scores`). ``learned_stop`` adds cascades
    with a learned stop rule (None: when the training data has responses); the saved
    policy then holds its stop model (JSON).
    Returns the JSON to save in the artifact, or None without an objective. With a
    reference, ``dearer_than_reference`` says on how many calibration queries the served
    policy costs more than the reference alone (:func:`racer.policies.front.dearer_than_reference`).
    """
    check_objective_options(objective, reference, method)
    if objective is None:
        return None
    train_scores = None
    if router is not None and calibration_scores is not None:
        from racer.evaluation.scoring import out_of_fold_scores

        train_scores = out_of_fold_scores(router, train)
    scores = None if train_scores is None else calibration_scores
    family = plan_family(
        train, objective, reference, train_scores, agreement=agreement, learned_stop=learned_stop
    )
    data = policy_data(calibration, scores, family.answer_kind)
    certificate = certify_dataset(
        family, calibration, alpha=alpha, delta=delta, method=method, data=data
    )
    state = policy_state(certificate, family, train.model_names)
    if family.reference is not None:
        state["dearer_than_reference"] = dearer_than_reference(
            certificate.policy.simulate(data).cost, data.costs[:, family.reference]
        )
    return state
