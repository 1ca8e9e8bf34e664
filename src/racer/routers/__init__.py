"""Base routers: per-model scores in [0, 1] that RACER calibrates into sets.

Every router has ``fit(queries, labels, model_names=None)`` and
``predict_proba(queries) -> (n, M)``; :func:`make_router` builds one by name.

Examples
--------
>>> from racer.routers import make_router, ROUTER_NAMES
>>> ROUTER_NAMES
('prior', 'knn', 'logistic', 'mlp', 'mf', 'cluster', 'ensemble', 'external')
>>> make_router("logistic", C=1.0)
LogisticRouter(C=1.0)
"""

from __future__ import annotations

from typing import Any

from racer.routers.abstention import AbstentionHead, no_model_correct
from racer.routers.base import BaseRouter, EmbeddingRouter
from racer.routers.cluster import ClusterRouter
from racer.routers.embeddings import (
    EMBEDDER_NAMES,
    Embedder,
    EmbeddingCache,
    HybridEmbedder,
    MiniLMEmbedder,
    TfidfEmbedder,
    default_cache_dir,
    make_embedder,
)
from racer.routers.ensemble import EnsembleRouter
from racer.routers.external import ExternalScoresRouter, read_scores
from racer.routers.knn import KNNRouter
from racer.routers.linear import LogisticRouter
from racer.routers.mf import MatrixFactorizationRouter
from racer.routers.mlp import MLPRouter
from racer.routers.prior import PriorRouter

__all__ = [
    "EMBEDDER_NAMES",
    "ROUTER_NAMES",
    "AbstentionHead",
    "BaseRouter",
    "ClusterRouter",
    "Embedder",
    "EmbeddingCache",
    "EmbeddingRouter",
    "EnsembleRouter",
    "ExternalScoresRouter",
    "HybridEmbedder",
    "KNNRouter",
    "LogisticRouter",
    "MLPRouter",
    "MatrixFactorizationRouter",
    "MiniLMEmbedder",
    "PriorRouter",
    "TfidfEmbedder",
    "default_cache_dir",
    "make_embedder",
    "make_router",
    "no_model_correct",
    "read_scores",
    "router_from_state",
]

ROUTERS: dict[str, type[BaseRouter]] = {
    router.name: router
    for router in (
        PriorRouter,
        KNNRouter,
        LogisticRouter,
        MLPRouter,
        MatrixFactorizationRouter,
        ClusterRouter,
        EnsembleRouter,
        ExternalScoresRouter,
    )
}
ROUTER_NAMES = tuple(ROUTERS)


def make_router(name: str, **params: Any) -> BaseRouter:
    """An unfitted router by name (one of :data:`ROUTER_NAMES`) with hyper-parameters.

    Parameters
    ----------
    name : str
        ``"prior"``, ``"knn"``, ``"logistic"``, ``"mlp"``, ``"mf"``, ``"cluster"``,
        ``"ensemble"`` or ``"external"``
        (the latter needs ``source=``: a scores file or a callable).
    **params
        Passed to the router's constructor.
    """
    if name not in ROUTERS:
        raise ValueError(f"Unknown router {name!r}; choose one of {list(ROUTER_NAMES)}.")
    return ROUTERS[name](**params)


def router_from_state(state: dict[str, Any]) -> BaseRouter:
    """Rebuild a fitted router from its :meth:`BaseRouter.get_state` output."""
    name = state.get("name")
    if name not in ROUTERS:
        raise ValueError(f"Unknown router {name!r} in saved state; known: {list(ROUTER_NAMES)}.")
    return ROUTERS[name].from_state(state)
