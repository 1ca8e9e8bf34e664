"""TF-IDF and MiniLM side by side: one vector whose cosine mixes the two similarities."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from racer.routers.embeddings.base import CacheSetting, Embedder, QueryTexts, check_queries
from racer.routers.embeddings.minilm import MiniLMEmbedder
from racer.routers.embeddings.tfidf import TfidfEmbedder

__all__ = ["HybridEmbedder"]


class HybridEmbedder(Embedder):
    """The TF-IDF and MiniLM vectors of a text, concatenated and weighted.

    Each part has unit norm; the TF-IDF part is scaled by ``sqrt(tfidf_weight)`` and the
    MiniLM part by ``sqrt(1 - tfidf_weight)``, so the result has unit norm and the cosine
    of two texts is ``tfidf_weight * cos_tfidf + (1 - tfidf_weight) * cos_minilm``: a kNN
    router sees a fixed mix of the two similarities, and a linear router sees both blocks
    at comparable scale. The default 0.5 trusts neither encoder more than the other
    (TF-IDF catches the shared words and characters of a task, and covers Chinese;
    MiniLM catches paraphrases). Needs the ``dense`` extra, like :class:`MiniLMEmbedder`.

    Each part keeps its own cache policy, so MiniLM vectors computed once (for MiniLM
    alone, or for a hybrid of another weight) are read back, not recomputed.

    Parameters
    ----------
    tfidf_weight : float, default=0.5
        Share of the cosine that comes from TF-IDF, in [0, 1].
    n_components : int, default=128
        Dimension of the TF-IDF part (the MiniLM part has 384).
    batch_size : int, default=64
        Texts per MiniLM progress step (and the smallest call that uses its cache).
    cache : bool or path, default=True
        On-disk cache of the MiniLM part (TF-IDF is as fast to compute as to read).
    progress : bool, default=True
        Show a progress bar on a terminal while the MiniLM part embeds many texts.
    strip_shared_prefix : bool, default=True
        Drop the leading lines that every training text repeats (see :class:`Embedder`).

    Attributes
    ----------
    tfidf_ : TfidfEmbedder
        The fitted TF-IDF part.
    minilm_ : MiniLMEmbedder
        The MiniLM part.
    """

    name = "hybrid"

    def __init__(
        self,
        tfidf_weight: float = 0.5,
        *,
        n_components: int = 128,
        batch_size: int = 64,
        cache: CacheSetting = True,
        progress: bool = True,
        strip_shared_prefix: bool = True,
    ) -> None:
        self.tfidf_weight = tfidf_weight
        self.n_components = n_components
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress
        self.strip_shared_prefix = strip_shared_prefix

    def _fit(self, texts: list[str]) -> None:
        self._check_weight()
        tfidf = TfidfEmbedder(self.n_components, progress=False, strip_shared_prefix=False)
        self._set_parts(tfidf.fit(texts))

    def _check_weight(self) -> None:
        weight = self.tfidf_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise ValueError(
                f"tfidf_weight must be a number in [0, 1] (the TF-IDF share of the cosine), "
                f"got {weight!r}."
            )

    def _set_parts(self, tfidf: TfidfEmbedder) -> None:
        self.tfidf_ = tfidf
        self.minilm_ = MiniLMEmbedder(
            batch_size=self.batch_size,
            cache=self.cache,
            progress=self.progress,
            strip_shared_prefix=False,
        ).fit([])
        self.dim_ = self.tfidf_.dim_ + self.minilm_.dim_

    def transform(self, texts: QueryTexts) -> np.ndarray:
        """Embed ``texts`` as float32 rows of unit norm, shape (n, ``dim_``)."""
        self._check_fitted()
        return self._embed(self._view(check_queries(texts)))

    def _embed(self, texts: list[str]) -> np.ndarray:
        weight = float(self.tfidf_weight)
        parts = [
            np.sqrt(weight) * self.tfidf_.transform(texts),
            np.sqrt(1 - weight) * self.minilm_.transform(texts),
        ]
        return np.hstack(parts).astype(np.float32)

    def _fingerprint(self) -> str:
        parts = f"hybrid\0{float(self.tfidf_weight)!r}\0{self.tfidf_.fingerprint()}"
        digest = f"{parts}\0{self.minilm_.fingerprint()}"
        return hashlib.sha256(digest.encode()).hexdigest()[:32]

    def _get_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {"tfidf_weight": float(self.tfidf_weight), "n_components": self.n_components},
            "arrays": {},
            "tfidf": self.tfidf_.get_state(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._check_weight()
        self._set_parts(TfidfEmbedder.from_state(state["tfidf"]))
