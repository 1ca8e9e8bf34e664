"""The calibration points as the certificates see them, built once per fit.

Flag and off modes: the entry levels of the served family (:func:`racer.sets.score_entry_levels`,
straight from the scores) and, for 0/1 labels, each point's loss breakpoint and the level
of its first good model, from which every group's risk curve and the fit diagnostics are
read without building a set. Strict mode: the model entry levels and abstain scores
(:class:`racer.calibration.StrictSplit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from racer._validation import check_labels, check_scores
from racer.calibration import StrictSplit, first_good_level, loss_breakpoints
from racer.estimator.inputs import (
    CalibrationInputs,
    checked_abstain_scores,
    require_abstain_scores,
)
from racer.estimator.params import FitSettings
from racer.sets import augmented_scores, entry_levels, score_entry_levels


@dataclass(frozen=True)
class SetLevels:
    """Flag and off modes: what every certificate and diagnostic of a fit reads.

    Attributes
    ----------
    entry : numpy.ndarray, shape (n, M + 1)
        Entry levels of the served family (column 0: the abstain flag).
    first_good : numpy.ndarray, shape (n,), or None
        0/1 labels: the level at which each point's first good model joins (``+inf``
        when none; :func:`racer.calibration.first_good_level`).
    breakpoints : numpy.ndarray, shape (n,), or None
        0/1 labels: each point's loss is ``1{lambda < breakpoint}``
        (:func:`racer.calibration.loss_breakpoints`).
    """

    entry: np.ndarray
    first_good: np.ndarray | None
    breakpoints: np.ndarray | None


def set_levels(inputs: CalibrationInputs, settings: FitSettings) -> SetLevels:
    """Entry levels of the served family, and for 0/1 labels the breakpoints, once."""
    require_abstain_scores(settings.abstain_score, inputs.abstain_scores)
    flag = settings.mode == "flag"
    entry = score_entry_levels(
        inputs.scores,
        settings.family,
        abstain_score=settings.abstain_score,
        abstain_scores=inputs.abstain_scores,
        abstention=flag,
        refusals=settings.refusals,
        costs=settings.costs,
        cost_weight=settings.cost_weight,
    )
    if not inputs.binary:
        return SetLevels(entry, None, None)
    first_good = first_good_level(entry, inputs.labels)
    breakpoints = loss_breakpoints(entry, inputs.labels, flag, first_good=first_good)
    return SetLevels(entry, first_good, breakpoints)


def strict_split(
    scores: np.ndarray, labels: np.ndarray, abstain_scores: Any, settings: FitSettings
) -> StrictSplit:
    """Strict mode's model entry levels (the top model always in) and abstain scores."""
    require_abstain_scores(settings.abstain_score, abstain_scores)
    augmented = augmented_scores(scores, settings.abstain_score, abstain_scores)
    abstain_column = augmented[:, 0].copy()
    model_entry = entry_levels(
        augmented,
        settings.family,
        abstention=False,
        costs=settings.costs,
        cost_weight=settings.cost_weight,
        overwrite=True,
    )[:, 1:]
    return StrictSplit(model_entry, abstain_column, labels)


def calibration_levels(inputs: CalibrationInputs, settings: FitSettings) -> SetLevels | StrictSplit:
    """The calibration points' levels for the fit's mode."""
    if settings.mode == "strict":
        return strict_split(inputs.scores, inputs.labels, inputs.abstain_scores, settings)
    return set_levels(inputs, settings)


def training_split(
    settings: FitSettings, train_scores: Any, train_labels: Any, train_abstain_scores: Any
) -> StrictSplit | None:
    """The training split of strict mode's front, checked; None without one."""
    if train_scores is None and train_labels is None:
        return None
    if train_scores is None or train_labels is None:
        raise ValueError("Pass both train_scores and train_labels, or neither.")
    if settings.mode != "strict":
        raise ValueError(
            "train_scores/train_labels build strict mode's training front; they are used "
            'only with abstention="strict".'
        )
    score_matrix = check_scores(train_scores, "train_scores")
    label_matrix = check_labels(train_labels, score_matrix.shape)
    abstain_scores = checked_abstain_scores(
        train_abstain_scores, len(score_matrix), "train_abstain_scores"
    )
    return strict_split(score_matrix, label_matrix, abstain_scores, settings)
