"""Slices of traffic: per-group (Mondrian) certificates and per-group risk tables.

A marginal certificate bounds the risk averaged over the traffic mix; a slice (a task,
a tenant, a domain) can sit far above alpha under it. Given a group that is a fixed
function of the query, calibrating each group on its own calibration points gives each
its own guarantee, since within a group calibration and test points stay exchangeable
(METHOD.md section 5d). This module holds the pure pieces: encoding the labels, the
level each group is tested at, pooling groups too small to certify, and the per-group
risk table that reports and monitors show next to the marginal certificate.

Examples
--------
>>> import numpy as np
>>> from racer.groups import group_risk_table
>>> table = group_risk_table(np.array([0.0, 1.0, 0.0, 0.0]), ["a", "b", "a", "b"], alpha=0.2)
>>> table.names, table.n.tolist(), table.risk.tolist(), table.above_alpha.tolist()
(('a', 'b'), [2, 2], [0.0, 0.5], [False, True])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUP_GUARANTEES = ("each", "all")
SMALL_GROUP_CHOICES = ("raise", "pool")
#: Name of the group that pools the groups too small to certify on their own.
POOLED = "(pooled)"


def encode_groups(groups: Any, n: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Group names (sorted, as strings) and each query's position among them.

    Parameters
    ----------
    groups : array-like of shape (n,)
        One label per query (strings or integers; compared as strings).
    n : int
        Number of queries expected.

    Returns
    -------
    names : tuple of str
    codes : numpy.ndarray of int, shape (n,)
    """
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(
            f"groups must hold one label per query, shape ({n},); got shape {labels.shape}."
        )
    if labels.dtype.kind in "fc" or labels.dtype == object:
        missing = np.equal(labels, None) | (labels != labels)  # None, or NaN (NaN != NaN)
        if np.any(missing):
            raise ValueError(
                "groups holds a missing label (None or NaN); give every query a group."
            )
    if labels.dtype == object:
        labels = labels.astype(str)
    names, codes = _small_integer_codes(labels) if labels.dtype.kind in "iu" else (None, None)
    if names is None or codes is None:
        # a sort and a search: much faster than np.unique's inverse (an argsort) on strings
        names = np.unique(labels)
        codes = np.searchsorted(names, labels)
    if labels.dtype.kind != "U":  # numbers: named as strings, in string order
        as_text = names.astype(str)
        order = np.argsort(as_text, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        names, codes = as_text[order], rank[codes]
    return tuple(str(name) for name in names), codes.astype(np.intp)


def _small_integer_codes(labels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``np.unique(labels, return_inverse=True)`` for integers of a small range, by counting
    instead of sorting; (None, None) when the range is too wide."""
    if labels.size == 0:
        return None, None
    low = int(labels.min())
    span = int(labels.max()) - low
    if span >= 1 << 16:
        return None, None
    offsets = labels.astype(np.intp) - low
    present = np.bincount(offsets, minlength=span + 1) > 0
    position = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, position[offsets]


def group_delta(delta: float, n_groups: int, guarantee: str) -> float:
    """The level each group is certified at.

    ``"each"``: every group has its own P(R_g <= alpha) >= 1 - delta. ``"all"``: all
    groups at once, P(R_g <= alpha for every g) >= 1 - delta, by Bonferroni (delta / G).
    """
    if guarantee not in GROUP_GUARANTEES:
        raise ValueError(f"group_guarantee must be one of {GROUP_GUARANTEES}, got {guarantee!r}.")
    return delta / n_groups if guarantee == "all" else delta


def too_small(counts: np.ndarray, needed: int) -> np.ndarray:
    """Which groups have fewer calibration points than the bound needs to certify."""
    return np.asarray(counts) < needed


def small_groups_message(
    names: Sequence[str], counts: np.ndarray, needed: int, alpha: float, delta: float
) -> str:
    """The error for groups too small to certify: each one, its n, and the n needed."""
    pairs = zip(names, counts, strict=True)
    listed = ", ".join(f"{name!r} (n={int(count)})" for name, count in pairs)
    return (
        f"Cannot certify risk <= {alpha} with probability >= {1 - delta:g} per group: "
        f"{len(names)} group(s) have fewer than the n={needed} calibration points a group "
        f"needs even with no observed loss: {listed}. Add calibration data for them, pass "
        "small_groups='pool' to certify them together as one pooled group, or raise alpha "
        "or delta."
    )


def pool_small_groups(
    names: tuple[str, ...], codes: np.ndarray, small: np.ndarray
) -> tuple[tuple[str, ...], np.ndarray, tuple[str, ...]]:
    """Merge the ``small`` groups into one group named :data:`POOLED`.

    Returns
    -------
    names : tuple of str
        The large groups, then :data:`POOLED` when any group was small.
    codes : numpy.ndarray of int
        Each query's position among the new names.
    pooled : tuple of str
        The names merged into :data:`POOLED`.
    """
    small = np.asarray(small, dtype=bool)
    if not small.any():
        return names, codes, ()
    kept = [name for name, is_small in zip(names, small, strict=True) if not is_small]
    new_position = np.cumsum(~small) - 1
    new_position[small] = len(kept)
    pooled = tuple(name for name, is_small in zip(names, small, strict=True) if is_small)
    return (*kept, POOLED), new_position[codes], pooled


@dataclass(frozen=True)
class GroupRiskTable:
    """Per-group risk of served decisions.

    Attributes
    ----------
    names : tuple of str
        The groups, sorted.
    n : numpy.ndarray of int
        Queries per group.
    risk : numpy.ndarray of float
        Mean loss per group.
    above_alpha : numpy.ndarray of bool
        Whether the group's risk exceeds ``alpha``.
    alpha : float
        The level compared against.
    """

    names: tuple[str, ...]
    n: np.ndarray
    risk: np.ndarray
    above_alpha: np.ndarray
    alpha: float

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per group: name, n, risk, above_alpha."""
        return [
            {"group": name, "n": int(n), "risk": float(risk), "above_alpha": bool(above)}
            for name, n, risk, above in zip(
                self.names, self.n, self.risk, self.above_alpha, strict=True
            )
        ]


def group_risk_table(losses: np.ndarray, groups: Any, alpha: float) -> GroupRiskTable:
    """Per-group n, mean loss and above-alpha flag from served losses and group labels.

    Parameters
    ----------
    losses : numpy.ndarray, shape (n,)
        The loss of each served decision (:func:`racer.losses.served_losses`).
    groups : array-like of shape (n,)
        Each query's group.
    alpha : float
        The certified risk level.

    Returns
    -------
    GroupRiskTable
    """
    loss_vector = np.asarray(losses, dtype=float)
    names, codes = encode_groups(groups, loss_vector.size)
    counts = np.bincount(codes, minlength=len(names))
    risk = np.bincount(codes, weights=loss_vector, minlength=len(names)) / counts
    return GroupRiskTable(
        names=names, n=counts, risk=risk, above_alpha=risk > alpha, alpha=float(alpha)
    )
