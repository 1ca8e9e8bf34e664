"""Query embeddings behind one small interface, with an on-disk cache keyed by text hash.

- ``"tfidf"`` (:class:`TfidfEmbedder`, the default) needs no download: hashed word
  1-2-grams and character 2-4-grams (which also cover Chinese text), sublinear TF-IDF
  weights, and a truncated SVD. Its fitted state is three numeric arrays, so it saves
  without pickle.
- ``"minilm"`` (:class:`MiniLMEmbedder`) is all-MiniLM-L6-v2 as an int8 ONNX file on
  onnxruntime, no torch (optional extra ``racer-routing[dense]``).
- ``"hybrid"`` (:class:`HybridEmbedder`) concatenates the two, weighted.

Every embedder drops a preamble shared by all its training texts before embedding
(see :class:`Embedder`).

Examples
--------
>>> from racer.routers.embeddings import EMBEDDER_NAMES, make_embedder
>>> EMBEDDER_NAMES
('tfidf', 'minilm', 'hybrid')
>>> make_embedder("tfidf", n_components=64)
TfidfEmbedder(n_components=64)
"""

from __future__ import annotations

from typing import Any

from racer.routers.embeddings.base import Embedder, QueryTexts, check_queries, shared_prefix
from racer.routers.embeddings.cache import EmbeddingCache, default_cache_dir
from racer.routers.embeddings.hybrid import HybridEmbedder
from racer.routers.embeddings.minilm import MiniLMEmbedder
from racer.routers.embeddings.tfidf import TfidfEmbedder

__all__ = [
    "EMBEDDER_NAMES",
    "Embedder",
    "EmbeddingCache",
    "HybridEmbedder",
    "MiniLMEmbedder",
    "QueryTexts",
    "TfidfEmbedder",
    "check_queries",
    "default_cache_dir",
    "embedder_class",
    "embedder_from_state",
    "make_embedder",
    "shared_prefix",
]

EMBEDDERS: dict[str, type[Embedder]] = {
    embedder.name: embedder for embedder in (TfidfEmbedder, MiniLMEmbedder, HybridEmbedder)
}
EMBEDDER_NAMES = tuple(EMBEDDERS)
RETIRED = {
    "sentence-transformers": (
        "The sentence-transformers embedder was replaced by 'minilm' (the same "
        "all-MiniLM-L6-v2 model as an int8 ONNX file, without torch), whose vectors differ "
        "slightly; refit the router with embedder='minilm'."
    )
}


def embedder_class(name: str) -> type[Embedder]:
    """The embedder registered as ``name``; a retired or unknown name is explained."""
    if name in RETIRED:
        raise ValueError(RETIRED[name])
    if name not in EMBEDDERS:
        raise ValueError(f"Unknown embedder {name!r}; choose one of {list(EMBEDDER_NAMES)}.")
    return EMBEDDERS[name]


def make_embedder(name: str, **params: Any) -> Embedder:
    """An unfitted embedder by name: ``"tfidf"``, ``"minilm"`` or ``"hybrid"``."""
    return embedder_class(name)(**params)


def embedder_from_state(state: dict[str, Any]) -> Embedder:
    """Rebuild a fitted embedder from :meth:`Embedder.get_state` output."""
    return embedder_class(state["name"]).from_state(state)
