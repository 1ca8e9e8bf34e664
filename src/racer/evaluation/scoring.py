"""Router scores for an evaluation: a base router fitted on training data scores the test
data, or out-of-fold scores of the training data itself (cross-fitting)."""

from __future__ import annotations

from typing import Any

import numpy as np

from racer.data.dataset import RoutingDataset

__all__ = ["cross_fitted_scores", "router_scores"]


def router_scores(
    router: str,
    train: RoutingDataset,
    test: RoutingDataset,
    **params: Any,
) -> np.ndarray:
    """Fit the base router ``router`` on ``train`` and score ``test``'s queries.

    Parameters
    ----------
    router : str
        A name in :data:`racer.routers.ROUTER_NAMES`.
    train, test : RoutingDataset
        Training data and the data to score (same models, in the same order).
    **params
        Passed to :func:`racer.routers.make_router`.

    Returns
    -------
    numpy.ndarray, shape (test.n_queries, M)
    """
    from racer.routers import make_router

    fitted = make_router(router, **params).fit(
        list(train.queries), train.labels, model_names=list(train.model_names)
    )
    return fitted.predict_proba(list(test.queries))


def cross_fitted_scores(
    router: str,
    train: RoutingDataset,
    pool: RoutingDataset,
    *,
    folds: int = 2,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Router scores that enable router policies: out-of-fold on ``train``, full fit on ``pool``.

    The training split fixes the policy family from each policy's training risk, so its
    scores must come from routers that did not see the query (``folds``-fold
    cross-fitting); the pool is scored by the router fitted on all of ``train``.

    Returns
    -------
    train_scores : numpy.ndarray, shape (train.n_queries, M)
    pool_scores : numpy.ndarray, shape (pool.n_queries, M)
    """
    train_scores = out_of_fold_scores(router, train, folds=folds, random_state=random_state)
    return train_scores, router_scores(router, train, pool)


def out_of_fold_scores(
    router: str, train: RoutingDataset, *, folds: int = 2, random_state: int = 0
) -> np.ndarray:
    """Scores of each training query by ``router`` fitted on the other folds, shape (n, M)."""
    fold = np.random.default_rng(random_state).permutation(train.n_queries) % folds
    train_scores = np.empty(train.labels.shape, dtype=float)
    for k in range(folds):
        train_scores[fold == k] = router_scores(
            router, train.subset(fold != k), train.subset(fold == k)
        )
    return train_scores
