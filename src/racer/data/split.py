"""Random splits of a RoutingDataset by query, never by row.

Rows that share a query id or a query text form one group, and a group always lands
on one side: the same question can never be both calibrated on and tested on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from racer.data.dataset import RoutingDataset

__all__ = [
    "calibration_test_split",
    "query_groups",
    "shared_queries",
    "split_dataset",
    "train_test_split",
]

RandomState = int | np.random.Generator | None


def query_groups(dataset: RoutingDataset) -> np.ndarray:
    """Group index of each row; rows sharing a query id or a query text share a group.

    Parameters
    ----------
    dataset : RoutingDataset

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Groups numbered 0, 1, ... in order of first appearance.
    """
    n = dataset.n_queries
    texts = [q if q else ("\0row", i) for i, q in enumerate(dataset.queries)]
    keys = [_factorize(dataset.query_ids.tolist()), _factorize(texts)]
    label = np.arange(n)
    while True:  # propagate the smallest row index through shared ids and texts
        previous = label
        for key in keys:
            smallest = np.full(key.max(initial=-1) + 1, n)
            np.minimum.at(smallest, key, label)
            label = smallest[key]
        if np.array_equal(label, previous):
            break
    return _factorize(label.tolist())


def _factorize(values: list) -> np.ndarray:
    """A code per value: equal values share a code (hashing, not sorting long strings)."""
    codes: dict = {}
    return np.array([codes.setdefault(v, len(codes)) for v in values], dtype=int)


def _allocate(n_items: int, fractions: np.ndarray) -> np.ndarray:
    """Split n_items into counts proportional to fractions (largest remainder, exact sum)."""
    raw = np.round(n_items * fractions, 9)
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n_items - counts.sum()]] += 1
    return counts


def _check_fractions(sizes: Sequence[float]) -> np.ndarray:
    fractions = np.asarray(sizes, dtype=float)
    if (
        fractions.ndim != 1
        or fractions.size < 2
        or (fractions <= 0).any()
        or not np.isclose(fractions.sum(), 1.0)
    ):
        raise ValueError(
            f"sizes must be two or more positive fractions that sum to 1, got {list(sizes)}; "
            "for example (0.5, 0.5) or (0.4, 0.3, 0.3)."
        )
    return fractions


def split_dataset(
    dataset: RoutingDataset,
    sizes: Sequence[float],
    *,
    stratify_by_source: bool = False,
    random_state: RandomState = 0,
) -> tuple[RoutingDataset, ...]:
    """Split a dataset into parts of the given sizes, by query group.

    Parameters
    ----------
    dataset : RoutingDataset
        The data to split.
    sizes : sequence of float
        The fraction of query groups in each part; positive, summing to 1.
    stratify_by_source : bool, default False
        Split each source (task or file) separately so that every part keeps each
        source's share, up to one query per source. A group that spans sources goes
        with the source of its first row.
    random_state : int, numpy.random.Generator or None, default 0
        Seed of the shuffle.

    Returns
    -------
    tuple of RoutingDataset
        One dataset per size, rows in their original order.

    Examples
    --------
    >>> train, calibration, test = split_dataset(data, (0.4, 0.3, 0.3))  # doctest: +SKIP
    """
    return _split_groups(
        dataset, query_groups(dataset), _check_fractions(sizes), stratify_by_source, random_state
    )


def _split_groups(
    dataset: RoutingDataset,
    groups: np.ndarray,
    fractions: np.ndarray,
    stratify_by_source: bool,
    random_state: RandomState,
) -> tuple[RoutingDataset, ...]:
    """Shuffle the query groups and deal them into parts of the given fractions."""
    n_groups = int(groups.max(initial=-1)) + 1
    rng = np.random.default_rng(random_state)
    group_first_row = np.unique(groups, return_index=True)[1]
    strata = dataset.sources[group_first_row] if stratify_by_source else np.zeros(n_groups)
    part_of_group = np.empty(n_groups, dtype=int)
    for stratum in np.unique(strata):
        members = rng.permutation(np.flatnonzero(strata == stratum))
        counts = _allocate(members.size, fractions)
        part_of_group[members] = np.repeat(np.arange(fractions.size), counts)
    part_of_row = part_of_group[groups]
    parts = tuple(dataset.subset(np.flatnonzero(part_of_row == k)) for k in range(fractions.size))
    empty = [k for k, part in enumerate(parts) if part.n_queries == 0]
    if empty:
        raise ValueError(
            f"sizes {fractions.tolist()} leave part(s) {empty} empty: the dataset has only "
            f"{n_groups} distinct queries. Use more data or larger sizes for those parts."
        )
    return parts


def _two_way_split(
    dataset: RoutingDataset,
    size: float | int,
    argument: str,
    stratify_by_source: bool,
    random_state: RandomState,
) -> tuple[RoutingDataset, RoutingDataset]:
    """(rest, part) where ``part`` holds ``size`` (a fraction or a count) of the queries."""
    groups = query_groups(dataset)
    n_groups = int(groups.max(initial=-1)) + 1
    if isinstance(size, int | np.integer) and not isinstance(size, bool):
        if not 0 < size < n_groups:
            raise ValueError(
                f"{argument}={size} must be between 1 and {n_groups - 1} (the number of "
                "distinct queries minus one), or a fraction in (0, 1)."
            )
        size = size / n_groups
    if not 0.0 < size < 1.0:
        raise ValueError(f"{argument} must be a fraction in (0, 1) or a count, got {size!r}.")
    rest, part = _split_groups(
        dataset, groups, np.array([1.0 - size, size]), stratify_by_source, random_state
    )
    return rest, part


def train_test_split(
    dataset: RoutingDataset,
    test_size: float | int = 0.5,
    *,
    stratify_by_source: bool = False,
    random_state: RandomState = 0,
) -> tuple[RoutingDataset, RoutingDataset]:
    """Split into train and test parts by query (see :func:`split_dataset`).

    Parameters
    ----------
    dataset : RoutingDataset
    test_size : float or int, default 0.5
        A fraction in (0, 1) of the distinct queries, or their number.
    stratify_by_source : bool, default False
        Keep each source's share on both sides.
    random_state : int, numpy.random.Generator or None, default 0

    Returns
    -------
    train, test : RoutingDataset

    Examples
    --------
    >>> train, test = train_test_split(data, 0.3, stratify_by_source=True)  # doctest: +SKIP
    """
    return _two_way_split(dataset, test_size, "test_size", stratify_by_source, random_state)


def calibration_test_split(
    dataset: RoutingDataset,
    calibration_size: float | int = 0.5,
    *,
    stratify_by_source: bool = False,
    random_state: RandomState = 0,
) -> tuple[RoutingDataset, RoutingDataset]:
    """Split into calibration and test parts by query.

    The calibration part holds ``calibration_size`` (a fraction in (0, 1) or a number)
    of the distinct queries; the other arguments are those of :func:`train_test_split`.

    Examples
    --------
    >>> calibration, test = calibration_test_split(data, 500)  # doctest: +SKIP
    """
    test, calibration = _two_way_split(
        dataset, calibration_size, "calibration_size", stratify_by_source, random_state
    )
    return calibration, test


def _normalised(text: object) -> str:
    return " ".join(str(text).lower().split())


def shared_queries(first: RoutingDataset, second: RoutingDataset) -> np.ndarray:
    """Which rows of ``first`` are also in ``second``, by query id or normalised text.

    Texts are compared case-insensitively with runs of white space collapsed, so a
    query copied between files with other line breaks still counts as shared. Use it
    to keep a training split free of test queries (leakage inflates every figure).

    Parameters
    ----------
    first, second : RoutingDataset

    Returns
    -------
    numpy.ndarray of bool, shape (first.n_queries,)
    """
    ids = set(map(str, second.query_ids))
    texts = {_normalised(q) for q in second.queries}
    return np.array(
        [
            str(i) in ids or _normalised(q) in texts
            for i, q in zip(first.query_ids, first.queries, strict=True)
        ],
        dtype=bool,
    )
