"""The on-disk cache of query embeddings, keyed by the sha256 of each text."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "default_cache_dir", "text_keys"]


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
