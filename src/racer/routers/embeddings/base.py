"""The embedder interface: preamble removal, batching, a progress bar and the cache.

Every embedder drops a preamble shared by all its training texts (a few-shot prompt,
as in RouterBench's 5-shot ARC-Challenge prompts) before embedding, so that the vectors
describe the query rather than the preamble that every query repeats.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from racer.routers.embeddings.cache import EmbeddingCache, default_cache_dir, text_keys

__all__ = ["CacheSetting", "Embedder", "QueryTexts", "check_queries", "shared_prefix"]

#: Query texts as users pass them: a list of str, or a dataset's ``queries`` array.
QueryTexts = Sequence[str] | np.ndarray

CacheSetting = bool | str | Path


def check_queries(queries: Any) -> list[str]:
    """Return ``queries`` as a list of str, or raise with a hint."""
    if isinstance(queries, str):
        raise TypeError(
            "Expected a sequence of query texts, got a single str. Wrap it in a list: [query]."
        )
    texts = list(queries)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
    if bad:
        raise TypeError(
            f"Every query must be a str; query {bad[0]} is {type(texts[bad[0]]).__name__} "
            f"({len(bad)} non-str in all)."
        )
    return texts


def shared_prefix(texts: Sequence[str]) -> str:
    """The leading whole lines that every text repeats (a shared preamble), or "".

    The common prefix of all texts, cut back to its last line break, and only if every
    text goes on after it: a prefix that would leave some text empty is not shared
    preamble but the text itself.

    Examples
    --------
    >>> shared_prefix(["Example: 1+1=2\\n\\nQ: 2+2?", "Example: 1+1=2\\n\\nQ: 3+5?"])
    'Example: 1+1=2\\n\\n'
    >>> shared_prefix(["Question: a", "Question: b"])
    ''
    """
    if len(texts) < 2:
        return ""
    common = os.path.commonprefix(list(texts))
    prefix = common[: common.rfind("\n") + 1]
    if any(len(text) == len(prefix) for text in texts):
        return ""
    return prefix


class Embedder(BaseEstimator):
    """Interface of a query embedder: ``fit(texts)``, ``transform(texts) -> (n, d)``.

    Subclasses implement ``_fit``, ``_embed`` (one batch, float32 rows of unit norm),
    ``_fingerprint``, ``_get_state`` and ``_set_state``; this class adds the removal of
    a shared preamble, batching with a progress bar and the on-disk cache. Constructor
    parameters ``strip_shared_prefix``, ``batch_size``, ``cache`` and ``progress`` are
    shared by every embedder.

    Attributes
    ----------
    shared_prefix_ : str
        Leading lines that every training text repeats (see :func:`shared_prefix`),
        removed from any text that starts with them; "" when there are none or when
        ``strip_shared_prefix`` is False.
    """

    name = "embedder"
    strip_shared_prefix: bool
    batch_size: int
    cache: CacheSetting
    progress: bool
    shared_prefix_: str = ""

    def _fit(self, texts: list[str]) -> None:
        raise NotImplementedError

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _fingerprint(self) -> str:
        raise NotImplementedError

    def _get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hex digest that changes whenever the vectors of a text could change."""
        own = self._fingerprint()
        if not self.shared_prefix_:
            return own
        return hashlib.sha256(f"{own}\0{self.shared_prefix_}".encode()).hexdigest()[:32]

    def get_state(self) -> dict[str, Any]:
        """The fitted embedder as JSON values and numpy arrays."""
        return {**self._get_state(), "shared_prefix": self.shared_prefix_}

    def _view(self, texts: list[str]) -> list[str]:
        """The texts without the shared preamble (texts that lack it are kept whole)."""
        prefix = self.shared_prefix_
        if not prefix:
            return texts
        cut = len(prefix)
        return [text[cut:] if text.startswith(prefix) else text for text in texts]

    def _set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Embedder:
        """Rebuild a fitted embedder from :meth:`get_state` output."""
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in state["params"].items()}
        embedder = cls(**params)
        embedder._set_state(state)
        embedder.shared_prefix_ = str(state.get("shared_prefix", ""))
        return embedder

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`transform` can be called."""
        return hasattr(self, "dim_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call fit(texts) first."
            )

    def fit(self, texts: QueryTexts) -> Embedder:
        """Learn whatever the embedding needs from ``texts``; returns self."""
        texts = check_queries(texts)
        self.shared_prefix_ = shared_prefix(texts) if self.strip_shared_prefix else ""
        self._fit(self._view(texts))
        return self

    def fit_transform(self, texts: QueryTexts) -> np.ndarray:
        """Fit on ``texts`` and return their embeddings."""
        return self.fit(texts).transform(texts)

    def transform(self, texts: QueryTexts) -> np.ndarray:
        """Embed ``texts`` as float32 rows of unit norm, shape (n, ``dim_``).

        Batches of at least ``batch_size`` texts go through the cache when ``cache`` is
        set; smaller calls (a single query at serving time) are computed directly.
        """
        self._check_fitted()
        texts = self._view(check_queries(texts))
        if not texts:
            return np.zeros((0, self.dim_), dtype=np.float32)
        if self.cache is False or len(texts) < self.batch_size:
            return self._embed_batches(texts)
        root = default_cache_dir() if self.cache is True else Path(self.cache)
        cache = EmbeddingCache(root, self.fingerprint())
        keys = text_keys(texts)
        found, cached = cache.lookup(keys)
        missing = np.flatnonzero(~found)
        vectors = np.zeros((len(texts), self.dim_), dtype=np.float32)
        if found.any():
            vectors[found] = np.stack([v for v in cached if v is not None])
        if missing.size:
            computed = self._embed_batches([texts[i] for i in missing])
            vectors[missing] = computed
            unique_keys, first = np.unique(keys[missing], return_index=True)
            cache.store(unique_keys, computed[first])
        return vectors

    def _batches(self, texts: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(texts), self.batch_size):
            yield texts[start : start + self.batch_size]

    def _embed_batches(self, texts: list[str]) -> np.ndarray:
        # a bar only where someone watches: non-terminal runs (CI, pipes) print nothing
        if len(texts) <= self.batch_size or not self.progress or not _stderr_is_terminal():
            return np.concatenate([self._embed(batch) for batch in self._batches(texts)])
        columns = (
            TextColumn(f"Embedding ({self.name})"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        parts = []
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("embed", total=len(texts))
            for batch in self._batches(texts):
                parts.append(self._embed(batch))
                bar.advance(task, len(batch))
        return np.concatenate(parts)


def _stderr_is_terminal() -> bool:
    return Console(stderr=True).is_terminal
