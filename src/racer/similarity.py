"""Agreement of free-text answers (code, prose) by the similarity of their character n-grams.

Where no answer can be extracted, two answers *agree* when the cosine similarity of
their character 3-5-gram count vectors (sublinear counts, hashed, L2-normalised) is at
least ``threshold``. The vectors are stateless (no vocabulary fitted on any data), so the
similarity of two answers depends on those two answers only: the gateway, which sees the
answers called so far, computes exactly what the simulation computes on recorded answers.

A cascade turns agreement into answer codes in its calling order
(:func:`chain_codes`): each answer joins the first earlier answer it agrees with that
leads a group, or leads a new group. Later tiers never change earlier codes, so the codes
of the tiers called so far are the same whether or not the later tiers are known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIMILARITY = "similarity"
AGREEMENT_THRESHOLD = 0.7
_NGRAMS = (3, 5)
_FEATURES = 2**18


def pairwise_agreement(
    responses: np.ndarray, threshold: float = AGREEMENT_THRESHOLD
) -> np.ndarray:
    """Which pairs of answers agree, per query.

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
    from sklearn.feature_extraction.text import HashingVectorizer

    responses = np.asarray(responses, dtype=object)
    n, m = responses.shape
    answered = np.vectorize(lambda t: isinstance(t, str) and bool(t.strip()), otypes=[bool])(
        responses
    )
    agree = np.zeros((n, m, m), dtype=bool)
    if not answered.any():
        return agree
    vectorizer = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=_NGRAMS,
        alternate_sign=False,
        norm="l2",
        n_features=_FEATURES,
    )
    rows, columns = np.nonzero(answered)
    vectors = vectorizer.transform([responses[i, j] for i, j in zip(rows, columns, strict=True)])
    position = np.full((n, m), -1)
    position[rows, columns] = np.arange(rows.size)
    for i in np.unique(rows):
        cols = np.flatnonzero(answered[i])
        block = vectors[position[i, cols]]
        similarity = (block @ block.T).toarray()
        agree[i][np.ix_(cols, cols)] = similarity >= threshold - 1e-12
    return agree


def free_text_codes(responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and agreement of free-text answers: every answer unextractable (-1), -2 none.

    Returns
    -------
    codes : numpy.ndarray of int, shape (n, M)
    agree : numpy.ndarray of bool, shape (n, M, M)
        :func:`pairwise_agreement` at :data:`AGREEMENT_THRESHOLD`.
    """
    agree = pairwise_agreement(responses)
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
