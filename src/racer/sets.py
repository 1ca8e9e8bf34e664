"""Augmented scores and nested families of prediction sets.

Candidate 0 is the *abstain* option; candidates 1..M are the models. Every family is
represented by an *entry level* per (query, candidate): the set at ``lambda`` is
``{k : entry[k] <= lambda}``. Any entry matrix gives nested sets (a larger lambda can
only add candidates), which is what the calibration needs.

Examples
--------
>>> import numpy as np
>>> from racer.sets import augmented_scores, entry_levels, sets_at
>>> scores = np.array([[0.9, 0.2], [0.3, 0.1]])
>>> aug = augmented_scores(scores)            # column 0: 1 - max score
>>> sets_at(entry_levels(aug), 0.75).astype(int)
array([[0, 1, 0],
       [1, 1, 0]])
"""

from __future__ import annotations

import numpy as np

ABSTAIN_SCORES = ("max", "product", "given")
FAMILIES = ("threshold", "cumulative", "cost")


def augmented_scores(
    scores: np.ndarray,
    abstain_score: str = "max",
    abstain_scores: np.ndarray | None = None,
) -> np.ndarray:
    """Prepend the abstain score ``s_0`` to the model scores.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n, M)
        Router scores in [0, 1], higher meaning "more likely good".
    abstain_score : {"max", "product", "given"}
        ``"max"``: ``1 - max_m s_m``; ``"product"``: ``prod_m (1 - s_m)``;
        ``"given"``: use ``abstain_scores`` (for example a learned classifier of
        "no model answers this").
    abstain_scores : numpy.ndarray, shape (n,), optional
        Required with ``abstain_score="given"``.

    Returns
    -------
    numpy.ndarray, shape (n, M + 1)
        Column 0 is ``s_0``; columns 1..M are ``scores``.
    """
    n, m = scores.shape
    augmented = np.empty((n, m + 1), dtype=float)
    augmented[:, 1:] = scores
    augmented[:, 0] = _abstain_column(scores, abstain_score, abstain_scores)
    return augmented


def _abstain_column(
    scores: np.ndarray, abstain_score: str, abstain_scores: np.ndarray | None
) -> np.ndarray:
    """The abstain score ``s_0`` of every query (:func:`augmented_scores`)."""
    if abstain_score == "max":
        return np.subtract(1.0, scores.max(axis=1))
    if abstain_score == "product":
        return np.prod(1.0 - scores, axis=1)
    if abstain_score == "given":
        if abstain_scores is None:
            raise ValueError('abstain_score="given" needs abstain_scores=, one score per query.')
        return np.asarray(abstain_scores, dtype=float)
    raise ValueError(f"abstain_score must be one of {ABSTAIN_SCORES}, got {abstain_score!r}.")


def _threshold_entry(augmented: np.ndarray, overwrite: bool) -> np.ndarray:
    return np.subtract(1.0, augmented, out=augmented if overwrite else None)


def _cumulative_entry(augmented: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Candidate at rank j joins once the mass ranked above it is below lambda.

    Entries are capped at 1 so that lambda = 1 is the full set, zero-mass candidates
    and float round-off included.
    """
    mass = np.where(active, augmented, 0.0)
    totals = mass.sum(axis=1, keepdims=True)
    uniform = active / active.sum()
    mass = np.where(totals > 0, mass / np.where(totals > 0, totals, 1.0), uniform)
    order = np.argsort(-mass, axis=1, kind="stable")
    sorted_mass = np.take_along_axis(mass, order, axis=1)
    mass_above = np.cumsum(sorted_mass, axis=1) - sorted_mass
    entry = np.empty_like(mass)
    np.put_along_axis(entry, order, np.minimum(np.nextafter(mass_above, np.inf), 1.0), axis=1)
    return entry


def _cost_entry(augmented: np.ndarray, costs: np.ndarray, cost_weight: float) -> np.ndarray:
    """Threshold on cost-penalised scores ``s_k - w c_k / max c`` (abstaining costs 0)."""
    relative = np.concatenate([[0.0], costs / max(float(np.max(costs)), np.finfo(float).tiny)])
    return 1.0 - (augmented - cost_weight * relative)


def entry_levels(
    augmented: np.ndarray,
    family: str = "threshold",
    *,
    abstention: bool = True,
    refusals: bool = True,
    costs: np.ndarray | None = None,
    cost_weight: float = 1.0,
    overwrite: bool = False,
) -> np.ndarray:
    """Smallest lambda at which each candidate joins the set.

    The set at ``lambda`` is ``{k : entry[k] <= lambda}`` (the one set rule, see
    :func:`served_decision`): candidate ``k`` is in as soon as its entry level is at most
    lambda, so a larger lambda only adds candidates.

    Parameters
    ----------
    augmented : numpy.ndarray, shape (n, M + 1)
        Augmented scores from :func:`augmented_scores`.
    family : {"threshold", "cumulative", "cost"}
        ``"threshold"``: ``{k : s_k >= 1 - lambda}``. ``"cumulative"``: normalise the
        scores, sort them in decreasing order (ties by index) and keep the shortest
        prefix whose mass reaches lambda. ``"cost"``: a threshold on
        ``s_k - cost_weight * c_k / max(c)``, so cheaper models join first.
    abstention : bool
        When False the abstain option never joins (entry ``+inf``) and the top-ranked
        model is always in the set (entry ``-inf``).
    refusals : bool
        With ``abstention``: whether a set may hold the abstain option and no model (a
        refusal). False keeps the abstain option (the flag) and puts the family's first
        model (the top-scored one for ``"threshold"`` and ``"cumulative"``) in every set
        (entry ``-inf``); the sets stay nested.
    costs : numpy.ndarray, shape (M,), optional
        Per-model cost, required by ``"cost"``.
    cost_weight : float
        Trade-off of the ``"cost"`` family.
    overwrite : bool
        Reuse ``augmented``'s memory for the result (saves a copy on large inputs).

    Returns
    -------
    numpy.ndarray, shape (n, M + 1)
        The entry level of every candidate.
    """
    active = np.ones(augmented.shape[1], dtype=bool)
    active[0] = abstention
    if family == "threshold":
        entry = _threshold_entry(augmented, overwrite)
    elif family == "cumulative":
        entry = _cumulative_entry(augmented, active)
    elif family == "cost":
        if costs is None:
            raise ValueError('family="cost" needs per-model costs.')
        entry = _cost_entry(augmented, np.asarray(costs, dtype=float), cost_weight)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")
    if not (abstention and refusals):
        abstain_entry = entry[:, 0].copy()
        top = _first_model(entry)
        entry[np.arange(entry.shape[0]), top] = -np.inf
        if abstention:
            entry[:, 0] = abstain_entry
    return entry


def _first_model(entry: np.ndarray) -> np.ndarray:
    """Column of each row's first model to join (lowest entry, ties to the lowest index);
    overwrites column 0 with ``+inf``."""
    entry[:, 0] = np.inf  # a contiguous argmin over all columns is faster than over a view
    return np.argmin(entry, axis=1)


def score_entry_levels(
    scores: np.ndarray,
    family: str = "threshold",
    *,
    abstain_score: str = "max",
    abstain_scores: np.ndarray | None = None,
    abstention: bool = True,
    refusals: bool = True,
    costs: np.ndarray | None = None,
    cost_weight: float = 1.0,
) -> np.ndarray:
    """Entry levels straight from router scores: ``entry_levels(augmented_scores(...))``.

    The same values, bit for bit, with less work for the threshold family: the top model
    and ``s_0 = 1 - max s`` come from one argmin of the model entries ``1 - s_k``, since
    rounding is monotone and so ``min_k fl(1 - s_k) = fl(1 - max_k s_k)``.

    Parameters
    ----------
    scores : numpy.ndarray, shape (n, M)
        Router scores in [0, 1]; not modified.
    family, abstention, refusals, costs, cost_weight
        As in :func:`entry_levels`.
    abstain_score, abstain_scores
        As in :func:`augmented_scores`.

    Returns
    -------
    numpy.ndarray, shape (n, M + 1)
    """
    if family != "threshold":
        return entry_levels(
            augmented_scores(scores, abstain_score, abstain_scores),
            family,
            abstention=abstention,
            refusals=refusals,
            costs=costs,
            cost_weight=cost_weight,
            overwrite=True,
        )
    entry = np.empty((scores.shape[0], scores.shape[1] + 1), dtype=float)
    from_top = abstention and abstain_score == "max"
    block = 16_384  # row blocks: each block's entries are reduced while still in cache
    for start in range(0, len(entry), block):
        rows = slice(start, start + block)
        _threshold_block(scores[rows], entry[rows], abstention, refusals, from_top)
    if abstention and not from_top:
        np.subtract(1.0, _abstain_column(scores, abstain_score, abstain_scores), out=entry[:, 0])
    return entry


def _threshold_block(
    scores: np.ndarray, entry: np.ndarray, abstention: bool, refusals: bool, from_top: bool
) -> None:
    """Fill one row block of :func:`score_entry_levels` for the threshold family.

    Column 0 is left at ``+inf`` unless ``from_top`` (``s_0 = 1 - max s``) fills it.
    """
    np.subtract(1.0, scores, out=entry[:, 1:])
    flat = entry.reshape(-1)  # a block of whole rows is contiguous
    top = None
    if abstention and refusals:
        entry[:, 0] = np.inf  # a contiguous reduction over all columns is faster
        first_entry = entry.min(axis=1) if from_top else None
    else:
        top = np.arange(0, flat.size, entry.shape[1]) + _first_model(entry)
        first_entry = flat[top]
    if from_top:
        np.subtract(1.0, first_entry, out=entry[:, 0])  # 1 - s_0 = 1 - min_k (1 - s_k)
    if top is not None:
        flat[top] = -np.inf


def sets_at(entry: np.ndarray, lam: float) -> np.ndarray:
    """Boolean membership ``entry <= lam``: the augmented set of every query."""
    return entry <= lam


def served_decision(
    augmented: np.ndarray,
    threshold: float | np.ndarray,
    *,
    family: str = "threshold",
    abstention: str = "flag",
    abstain_threshold: float | np.ndarray | None = None,
    refusals: bool = False,
    costs: np.ndarray | None = None,
    cost_weight: float = 1.0,
) -> np.ndarray:
    """The decision served for every query, from stored thresholds: the one set rule.

    Model ``k`` is in the set iff its entry level is at most ``threshold``
    (``entry_k <= lambda``; for the threshold family ``entry_k = 1 - s_k``, computed in
    floating point exactly so). This is the rule :class:`racer.RACER` uses, so sets rebuilt
    here from a saved ``threshold_`` equal ``predict``'s.

    Parameters
    ----------
    augmented : numpy.ndarray, shape (n, M + 1)
        Augmented scores (:func:`augmented_scores`); not modified.
    threshold : float or numpy.ndarray of shape (n,)
        The calibrated lambda, or one per query (per-group calibration).
    family : {"threshold", "cumulative", "cost"}
        The nested family.
    abstention : {"flag", "strict", "off"}
        The abstention mode (:mod:`racer.losses`).
    abstain_threshold : float or numpy.ndarray of shape (n,), optional
        tau of ``"strict"``: abstain iff ``s_0 >= tau``; one per query allowed.
    refusals : bool
        Flag mode: whether an empty set of models may be served (see
        :func:`entry_levels`); False (RACER's default) serves the top model with the flag
        raised.
    costs, cost_weight
        As in :func:`entry_levels`.

    Returns
    -------
    numpy.ndarray of bool, shape (n, M + 1)
        Column 0: the abstain flag (flag), the abstain decision (strict), False (off).
        Columns 1..M: the models invoked (none on a strict abstention).
    """
    lam = np.reshape(threshold, (-1, 1)) if np.ndim(threshold) else threshold
    if abstention == "strict":
        if abstain_threshold is None:
            raise ValueError('abstention="strict" needs abstain_threshold (tau).')
        abstained = augmented[:, 0] >= abstain_threshold
        entry = entry_levels(
            augmented, family, abstention=False, costs=costs, cost_weight=cost_weight
        )
        decision = entry <= lam
        decision[:, 0] = abstained
        decision[abstained, 1:] = False
        return decision
    entry = entry_levels(
        augmented,
        family,
        abstention=abstention == "flag",
        refusals=refusals,
        costs=costs,
        cost_weight=cost_weight,
    )
    return entry <= lam


def decision_from_scores(
    scores: np.ndarray,
    threshold: float | np.ndarray,
    *,
    family: str = "threshold",
    abstention: str = "flag",
    abstain_threshold: float | np.ndarray | None = None,
    abstain_score: str = "max",
    abstain_scores: np.ndarray | None = None,
    refusals: bool = False,
    costs: np.ndarray | None = None,
    cost_weight: float = 1.0,
) -> np.ndarray:
    """Rebuild the served decision from router scores and a stored calibration.

    Parameters are those of :func:`augmented_scores` and :func:`served_decision`.

    Examples
    --------
    >>> import numpy as np
    >>> decision_from_scores(np.array([[0.9, 0.2], [0.3, 0.1]]), 0.75).astype(int)
    array([[0, 1, 0],
           [1, 1, 0]])
    """
    augmented = augmented_scores(np.asarray(scores, dtype=float), abstain_score, abstain_scores)
    return served_decision(
        augmented,
        threshold,
        family=family,
        abstention=abstention,
        abstain_threshold=abstain_threshold,
        refusals=refusals,
        costs=costs,
        cost_weight=cost_weight,
    )


def lambda_range(family: str, cost_weight: float = 1.0) -> tuple[float, float]:
    """The interval of lambdas over which a family goes from empty to full sets."""
    if family == "cost":
        return 0.0, 1.0 + cost_weight
    return 0.0, 1.0
