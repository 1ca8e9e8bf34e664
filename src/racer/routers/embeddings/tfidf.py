"""TF-IDF over hashed word and character n-grams, reduced by truncated SVD (the default)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

from racer.routers.embeddings.base import CacheSetting, Embedder

__all__ = ["TfidfEmbedder"]


class TfidfEmbedder(Embedder):
    """TF-IDF over hashed word and character n-grams, reduced by truncated SVD.

    No download, no vocabulary to pickle: the n-grams are hashed (scikit-learn's
    stateless ``HashingVectorizer``), the ``max_features`` most frequent hashed
    columns seen at fit are kept, weighted by ``log1p(tf) * idf``, and projected on
    ``n_components`` SVD directions. Output rows have unit norm (cosine geometry).

    Parameters
    ----------
    n_components : int, default=128
        Embedding dimension.
    max_features : int, default=20000
        Hashed n-gram columns kept (the most frequent at fit, each in >= 2 texts).
    word_ngrams, char_ngrams : tuple of int, default=(1, 2) and (2, 4)
        n-gram ranges of the word and character (``char_wb``) analyzers.
    hash_bits : int, default=18
        Each analyzer hashes into ``2 ** hash_bits`` columns.
    batch_size : int, default=512
        Texts per batch (and the smallest call that uses the cache).
    cache : bool or path, default=False
        On-disk cache (True: :func:`default_cache_dir`). Off by default: computing
        (about 1,500 texts/s) is as fast as reading the cache.
    progress : bool, default=True
        Show a progress bar when embedding more than one batch.
    random_state : int, default=0
        Seed of the randomized SVD.
    strip_shared_prefix : bool, default=True
        Drop the leading lines that every training text repeats (see :class:`Embedder`).

    Examples
    --------
    >>> embedder = TfidfEmbedder(n_components=2).fit(["a cat", "a dog", "the cat sat"] * 3)
    >>> embedder.transform(["a cat"]).shape
    (1, 2)
    """

    name = "tfidf"

    def __init__(
        self,
        n_components: int = 128,
        *,
        max_features: int = 20000,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] = (2, 4),
        hash_bits: int = 18,
        batch_size: int = 512,
        cache: CacheSetting = False,
        progress: bool = True,
        random_state: int = 0,
        strip_shared_prefix: bool = True,
    ) -> None:
        self.n_components = n_components
        self.max_features = max_features
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.hash_bits = hash_bits
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress
        self.random_state = random_state
        self.strip_shared_prefix = strip_shared_prefix

    def _hashed_counts(self, texts: list[str]) -> sp.csr_matrix:
        options = {"n_features": 2**self.hash_bits, "alternate_sign": False, "norm": None}
        words = HashingVectorizer(analyzer="word", ngram_range=tuple(self.word_ngrams), **options)
        chars = HashingVectorizer(
            analyzer="char_wb", ngram_range=tuple(self.char_ngrams), **options
        )
        return sp.hstack([words.transform(texts), chars.transform(texts)], format="csr")

    def _weighted(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        kept = counts[:, self.columns_].tocsr()
        kept.data = np.log1p(kept.data)
        return normalize(kept.multiply(self.idf_).tocsr())

    def _fit(self, texts: list[str]) -> None:
        counts = self._hashed_counts(texts)
        document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
        frequent = np.argsort(-document_frequency, kind="stable")[: self.max_features]
        columns = np.sort(frequent[document_frequency[frequent] >= 2])
        if columns.size <= self.n_components:
            raise ValueError(
                f"Only {columns.size} n-gram columns occur in at least two of the "
                f"{len(texts)} texts, too few for n_components={self.n_components}. "
                "Fit on more texts or lower n_components."
            )
        n = len(texts)
        self.columns_ = columns.astype(np.int64)
        self.idf_ = (np.log((1 + n) / (1 + document_frequency[columns])) + 1).astype(np.float64)
        svd = TruncatedSVD(self.n_components, random_state=self.random_state)
        svd.fit(self._weighted(counts))
        self.components_ = np.ascontiguousarray(svd.components_.T, dtype=np.float32)
        self.dim_ = int(self.n_components)

    def _embed(self, texts: list[str]) -> np.ndarray:
        # float32 on both sides: a float64 row would copy all of components_ on every call
        weighted = self._weighted(self._hashed_counts(texts)).astype(np.float32)
        return normalize(np.asarray(weighted @ self.components_))

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self._param_state(), sort_keys=True).encode())
        for array in (self.columns_, self.idf_, self.components_):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:32]

    def _param_state(self) -> dict[str, Any]:
        return {
            "n_components": self.n_components,
            "max_features": self.max_features,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
            "hash_bits": self.hash_bits,
        }

    def _get_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self._param_state(),
            "arrays": {"columns": self.columns_, "idf": self.idf_, "components": self.components_},
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        arrays = state["arrays"]
        self.columns_ = np.asarray(arrays["columns"], dtype=np.int64)
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
        self.components_ = np.ascontiguousarray(arrays["components"], dtype=np.float32)
        self.dim_ = int(self.components_.shape[1])
