"""Per-group certificates of an answer-level policy family (Mondrian, METHOD.md 5d).

Each group certifies the family on its own calibration rows with
:func:`racer.policies.certify.certify`, so its certificate depends on no other group's data;
the family and the fixed-sequence order come from the training split as for a marginal
certificate. ``group_guarantee="all"`` tests each group at ``delta / G``. Groups with fewer
rows than the bound needs (``racer.bounds.n_needed`` with no observed loss) raise
:class:`racer.exceptions.InfeasibleCalibrationError` naming each, or are pooled into
:data:`racer.groups.POOLED` with ``small_groups="pool"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from racer.bounds import n_needed
from racer.exceptions import InfeasibleCalibrationError
from racer.groups import (
    encode_groups,
    group_delta,
    pool_small_groups,
    small_groups_message,
    too_small,
)
from racer.policies.certify import Certificate, certify
from racer.policies.families import Policy


def certify_groups(
    policies: list[Policy],
    calibration_losses: np.ndarray,
    calibration_costs: np.ndarray,
    groups: Any,
    *,
    objective: str,
    alpha: float,
    delta: float,
    group_guarantee: str = "each",
    small_groups: str = "raise",
    **options: Any,
) -> dict[str, Certificate]:
    """One :class:`~racer.policies.certify.Certificate` per group.

    Parameters
    ----------
    policies, calibration_losses, calibration_costs
        As in :func:`~racer.policies.certify.certify` (rows: calibration queries).
    groups : array-like of shape (n,)
        Each calibration query's group (compared as strings).
    objective, alpha, delta
        As in :func:`~racer.policies.certify.certify`.
    group_guarantee : {"each", "all"}
        Each group's own guarantee at ``delta``, or all groups at once (``delta / G``).
    small_groups : {"raise", "pool"}
        Too-small groups raise, or share one pooled certificate.
    **options
        Passed on to :func:`~racer.policies.certify.certify` (``order``, ``method``,
        ``bound``, ``fallback_index``).

    Returns
    -------
    dict of str to Certificate
        By group name (:data:`racer.groups.POOLED` for the pooled small groups).
    """
    if small_groups not in ("raise", "pool"):
        raise ValueError(f"small_groups must be 'raise' or 'pool', got {small_groups!r}.")
    losses = np.asarray(calibration_losses, dtype=float)
    costs = np.asarray(calibration_costs, dtype=float)
    names, codes = encode_groups(groups, losses.shape[0])
    counts = np.bincount(codes, minlength=len(names))
    level = group_delta(delta, len(names), group_guarantee)
    bound = str(options.get("bound", "binomial"))
    needed = n_needed(bound if bound != "wsr" else "hb", alpha, level)
    small = too_small(counts, needed)
    if small.any():
        if small_groups == "raise":
            small_names = [str(name) for name in np.asarray(names)[small]]
            raise InfeasibleCalibrationError(
                small_groups_message(small_names, counts[small], needed, alpha, level)
            )
        names, codes, _ = pool_small_groups(names, codes, small)
        level = group_delta(delta, len(names), group_guarantee)
    return {
        name: certify(
            policies,
            losses[codes == position],
            costs[codes == position],
            objective=objective,
            alpha=alpha,
            delta=level,
            **options,
        )
        for position, name in enumerate(names)
    }
