"""What one routed query's output record says, for every input and engine (no pyarrow).

The batch engines (:mod:`racer.batch.routing`) and the plain-text route of the command
line both build their rows here.

``racer route`` writes the same fields for plain text and for Parquet / JSONL tables
(``docs/ray.md``): the models called, the decision in the one vocabulary of
:mod:`racer.refusal` (``refused``, ``flagged``, ``refusal_reason``), each model's score,
and the artifact's id and certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from racer import losses
from racer.artifact import RouterArtifact
from racer.refusal import decision_outcomes, refusal_reasons

__all__ = [
    "Decided",
    "abstention_mode",
    "certificate",
    "decide",
    "decision_fields",
    "output_columns",
    "route_records",
]


def abstention_mode(artifact: RouterArtifact) -> str:
    """The serving mode the artifact was calibrated for: "flag", "strict" or "off"."""
    return losses.abstention_mode(artifact.racer.abstention_mode_)


def certificate(artifact: RouterArtifact) -> dict[str, Any]:
    """The artifact's id and its guarantee: alpha, delta, n, bound and the mode."""
    racer = artifact.racer
    return {
        "artifact_id": str(artifact.metadata.get("metadata_sha256", "")),
        "alpha": float(racer.alpha),
        "delta": float(racer.delta),
        "n_calibration": int(racer.n_calibration_),
        "bound": str(racer.bound_),
        "risk_bound": float(racer.risk_bound_),
        "abstention_mode": abstention_mode(artifact),
    }


def output_columns(model_names: Sequence[str], with_id: bool = True) -> list[str]:
    """The output column names, in order."""
    return [
        *(["id"] if with_id else []),
        "models",
        "refused",
        "flagged",
        "refusal_reason",
        *(f"score:{name}" for name in model_names),
        "artifact_id",
        "alpha",
        "delta",
        "n_calibration",
        "bound",
        "risk_bound",
        "abstention_mode",
    ]


class Decided(NamedTuple):
    """What an artifact decided for a batch of queries."""

    scores: np.ndarray  # (n, M) base-router scores
    decision: np.ndarray  # (n, M + 1) served decision, column 0 the flag or abstention
    abstain_scores: np.ndarray | None  # the abstention head's, when the artifact has one
    groups: np.ndarray | None  # each query's group, for a per-group calibration


def decide(
    artifact: RouterArtifact, queries: Sequence[str], groups: Sequence[str] | None = None
) -> Decided:
    """Score ``queries`` and form their served decision, as every batch path does.

    ``groups`` (one per query) are needed for a per-group calibration without a group
    classifier (:meth:`racer.artifact.RouterArtifact.groups_of`).
    """
    abstain_scores = None
    if artifact.abstention is not None:
        abstain_scores = artifact.abstention.abstain_score(queries)
    scores = artifact.predict_proba(queries)
    query_groups = artifact.groups_of(queries, groups)
    decision = artifact.racer.predict(
        scores, include_abstain=True, abstain_scores=abstain_scores, groups=query_groups
    )
    return Decided(scores, decision, abstain_scores, query_groups)


def decision_fields(
    artifact: RouterArtifact,
    scores: np.ndarray,
    decision: np.ndarray,
    abstain_scores: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict[str, list[Any]]:
    """The per-query fields of a batch: models, refused, flagged, refusal_reason, scores.

    Parameters
    ----------
    artifact : RouterArtifact
        The loaded artifact.
    scores : numpy.ndarray, shape (n, M)
        The base router's scores.
    decision : numpy.ndarray of bool, shape (n, M + 1)
        The served decision (column 0: flag or abstention).
    abstain_scores : numpy.ndarray, shape (n,), optional
        The learned abstain scores, when the artifact has an abstention head.
    groups : numpy.ndarray, shape (n,), optional
        Each query's group, for a per-group calibration.

    Returns
    -------
    dict of str to list
        One list of n values per field, ``score:<model>`` included.
    """
    names = np.array(artifact.model_names, dtype=object)
    refused, flagged = decision_outcomes(decision, abstention_mode(artifact))
    fields: dict[str, list[Any]] = {
        "models": [list(names[row]) for row in decision[:, 1:]],
        "refused": refused.tolist(),
        "flagged": flagged.tolist(),
        "refusal_reason": refusal_reasons(
            artifact.racer, scores, artifact.model_names, refused, abstain_scores, groups
        ),
    }
    for j, name in enumerate(artifact.model_names):
        fields[f"score:{name}"] = scores[:, j].astype(float).tolist()
    return fields


def route_records(
    artifact: RouterArtifact, queries: Sequence[str], ids: Sequence[str]
) -> list[dict[str, Any]]:
    """One output record per query (the fields of :func:`output_columns`), in order.

    Parameters
    ----------
    artifact : RouterArtifact
        The loaded artifact.
    queries, ids : sequence of str
        The query texts and their ids, one per query.
    """
    decided = decide(artifact, list(queries))
    fields = decision_fields(artifact, *decided)
    shared = certificate(artifact)
    return [
        {"id": str(query_id), **{k: v[i] for k, v in fields.items()}, **shared}
        for i, query_id in enumerate(ids)
    ]
