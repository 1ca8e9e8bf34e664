"""How a shadow route's decisions compare with the served ones, from the decision log.

:func:`compare_shadow` pairs each shadow decision (id ``ID+shadow``, see
:mod:`racer.serve.shadow`) with the served decision ``ID`` and its feedback;
:func:`compare_sets` computes the figures from the two sets of each pair.

Example::

    from racer.serve.shadow_report import compare_shadow
    compare_shadow("sqlite:///racer-decisions.sqlite3", "racer.shadow")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from racer.serve.decision_log import DecisionLog
from racer.serve.shadow import SHADOW_SUFFIX


def compare_sets(
    model_names: Sequence[str],
    served: np.ndarray,
    shadow: np.ndarray,
    labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Compare the served and the shadow sets of the same queries.

    Parameters
    ----------
    model_names : sequence of str
        The M models, in column order.
    served, shadow : numpy.ndarray of bool, shape (n, M)
        Which models each set holds.
    labels : numpy.ndarray of float, shape (n, M), optional
        1 where a model's answer is right, 0 where wrong, NaN unknown (feedback's
        ``models_correct``).

    Returns
    -------
    dict
        ``n``; ``same_set`` (share of queries with identical sets); per side
        (``served``, ``shadow``): ``mean_set_size``, ``abstained`` (share of empty
        sets), ``call_rate`` per model and, over the ``n_labelled`` queries whose
        every model is labelled, ``misrouting``: the share whose set holds no right
        model (an empty set counts as misrouted when some model was right). None
        when no query is fully labelled.
    """
    served, shadow = np.asarray(served, dtype=bool), np.asarray(shadow, dtype=bool)
    n = served.shape[0]
    known = np.zeros(n, dtype=bool)
    right = np.zeros_like(served)
    if labels is not None:
        labels = np.asarray(labels, dtype=float)
        known = ~np.isnan(labels).any(axis=1)
        right = np.nan_to_num(labels) == 1

    def side(sets: np.ndarray) -> dict[str, Any]:
        empty = ~sets.any(axis=1)
        misrouted = np.where(empty, right.any(axis=1), ~(sets & right).any(axis=1))
        return {
            "mean_set_size": float(sets.sum(axis=1).mean()) if n else None,
            "abstained": float(empty.mean()) if n else None,
            "call_rate": dict(zip(model_names, sets.mean(axis=0).tolist(), strict=True))
            if n
            else {},
            "misrouting": float(misrouted[known].mean()) if known.any() else None,
        }

    return {
        "n": n,
        "n_labelled": int(known.sum()),
        "same_set": float((served == shadow).all(axis=1).mean()) if n else None,
        "served": side(served),
        "shadow": side(shadow),
    }


def shadow_pairs(decision_log: DecisionLog, shadow: str) -> list[tuple[Any, ...]]:
    """Rows (served scores, served set, shadow scores, shadow set, models_correct)."""

    def read(connection: Any, mark: str) -> list[tuple[Any, ...]]:
        return connection.execute(
            "SELECT d.scores, d.invoked, s.scores, s.invoked, f.models_correct "
            "FROM decisions s JOIN decisions d ON s.id = d.id || " + mark + " "
            "LEFT JOIN feedback f ON f.decision_id = d.id "
            "WHERE s.route = " + mark + " ORDER BY s.created",
            (SHADOW_SUFFIX, shadow),
        ).fetchall()

    return decision_log.submit_job(read).result()


def compare_shadow(log: DecisionLog | str, shadow: str) -> dict[str, Any]:
    """Compare the shadow route ``shadow``'s logged decisions with the served ones.

    Parameters
    ----------
    log : DecisionLog or str
        An open decision log, or its URL (``sqlite:///PATH``, ``postgresql://...``).
    shadow : str
        The shadow's route name (``ROUTE.shadow`` unless configured otherwise).

    Returns
    -------
    dict
        :func:`compare_sets` of every pair, with ``shadow`` and ``models`` added.

    Raises
    ------
    ValueError
        When the log holds no decision of ``shadow``.
    """
    decision_log = DecisionLog(log) if isinstance(log, str) else log
    try:
        rows = shadow_pairs(decision_log, shadow)
    finally:
        if isinstance(log, str):
            decision_log.close()
    if not rows:
        raise ValueError(
            f"The decision log holds no decision of the shadow route {shadow!r}; check its "
            "name (default ROUTE.shadow) and that the route's `shadow:` is configured."
        )
    names = list(
        dict.fromkeys(m for row in rows for m in (*json.loads(row[0]), *json.loads(row[2])))
    )
    column = {m: k for k, m in enumerate(names)}
    served = np.zeros((len(rows), len(names)), dtype=bool)
    shadowed = np.zeros_like(served)
    labels = np.full(served.shape, np.nan)
    for i, (_, served_set, _, shadow_set, correct) in enumerate(rows):
        served[i, [column[m] for m in json.loads(served_set)]] = True
        shadowed[i, [column[m] for m in json.loads(shadow_set)]] = True
        for model, value in (json.loads(correct) if correct else {}).items():
            if model in column:
                labels[i, column[model]] = float(value)
    return {"shadow": shadow, "models": names, **compare_sets(names, served, shadowed, labels)}
