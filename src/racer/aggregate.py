"""Aggregation: turn the answers of the invoked models into one response.

Two aggregators (METHOD.md section 6):

- ``"vote"``: majority vote over the answers extracted from the responses
  (a multiple-choice letter or a final number), each vote weighted by the router's
  score for that model; ties go to the answer backed by the higher single score.
  Responses with no extractable answer vote only when no response has one.
- ``"best"``: the response of the highest-scored model in the set.

Both work on one query (:func:`choose_response`, used by the gateway) and on a
whole evaluation at once (:func:`choose_in_sets`, vectorised over queries). The
string-level function calls the vectorised one, so the two cannot disagree.

The "any model in the set is correct" rate is not an aggregator but the upper
bound of every aggregator; :func:`any_correct` computes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

AGGREGATORS = ("vote", "best")
ANSWER_KINDS = ("auto", "choice", "number")

_CHOICE_PATTERNS = (
    # The whole reply is a letter: "B", "(B)", "B)", "B.", "B:", "B (because ...".
    re.compile(r"^\s*\(?([A-J])\s*(?:$|[).:,\n]|\s+\()"),
    # The letter is announced: "The answer is (C)", "Answer: C", "answer: **C**".
    re.compile(r"answer\s*(?:is|:)?\s*[:*\s]*\(?([A-J])\b(?![a-z'])", re.IGNORECASE),
)
_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_NUMBER_PATTERNS = (
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"\\boxed\{\s*(" + _NUMBER + r")\s*\}"),
    re.compile(r"answer\s*(?:is|:)\s*[:*\s]*(" + _NUMBER + ")", re.IGNORECASE),
)
_ANY_NUMBER = re.compile(_NUMBER)


def _normalise_number(text: str) -> str:
    """Canonical form of a number: no '$' or thousands commas, no trailing '.0'."""
    cleaned = text.replace("$", "").replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return cleaned
    return str(int(value)) if value.is_integer() else repr(value)


def _extract_choice(text: str) -> str | None:
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).upper()
    return None


def _extract_number(text: str) -> str | None:
    for pattern in _NUMBER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _normalise_number(matches[-1])
    numbers = _ANY_NUMBER.findall(text)
    return _normalise_number(numbers[-1]) if numbers else None


def extract_answer(text: str | None, kind: str = "auto") -> str | None:
    """Extract the final answer from a model's response.

    Parameters
    ----------
    text : str or None
        The response text; None (a failed call) gives None.
    kind : {"auto", "choice", "number"}, default "auto"
        ``"choice"``: a multiple-choice letter A-J ("B", "(B)", "B) ...",
        "The answer is B"). ``"number"``: the final number ("#### 42", "\\boxed{42}",
        "the answer is 42", else the last number in the text), without "$" or
        thousands separators. ``"auto"``: a letter if there is one, else a number.

    Returns
    -------
    str or None
        The canonical answer ("B", "42", "3.5"), or None when none is found.

    Examples
    --------
    >>> extract_answer("B) because of friction")
    'B'
    >>> extract_answer("So she pays $1,200.00 in total.", kind="number")
    '1200'
    """
    if kind not in ANSWER_KINDS:
        raise ValueError(f"kind must be one of {ANSWER_KINDS}, got {kind!r}.")
    if text is None or not isinstance(text, str):
        return None
    if kind == "choice":
        return _extract_choice(text)
    if kind == "number":
        return _extract_number(text)
    return _extract_choice(text) or _extract_number(text)


def detect_answer_kind(responses: np.ndarray, share: float = 0.5) -> str | None:
    """What answers a set of responses holds: "choice", "number", or None (free text).

    "choice" when at least ``share`` of the responses yield a letter; "number" when at
    least ``share`` announce a number ("#### 42", "\\boxed{42}", "the answer is 42");
    None otherwise (code, prose), where voting has nothing to count.
    """
    texts = [t for t in np.asarray(responses, dtype=object).ravel() if isinstance(t, str)]
    if not texts:
        return None
    if np.mean([_extract_choice(t) is not None for t in texts]) >= share:
        return "choice"
    announced = [any(p.search(t) for p in _NUMBER_PATTERNS) for t in texts]
    return "number" if np.mean(announced) >= share else None


def answer_codes(responses: np.ndarray, kind: str = "auto") -> np.ndarray:
    """Integer codes of the extracted answers, equal codes meaning equal answers.

    Parameters
    ----------
    responses : array-like of str or None, shape (n, M)
        Response texts, None (or NaN) where the call failed or is unknown.
    kind : {"auto", "choice", "number"}, default "auto"
        Passed to :func:`extract_answer`.

    Returns
    -------
    numpy.ndarray of int, shape (n, M)
        A non-negative code per extracted answer, -1 where no answer was extracted,
        -2 where there is no response at all.
    """
    responses = np.asarray(responses, dtype=object)
    codes = np.full(responses.shape, -2, dtype=np.int64)
    vocabulary: dict[str, int] = {}
    for index, text in np.ndenumerate(responses):
        if not isinstance(text, str):
            continue
        answer = extract_answer(text, kind)
        codes[index] = -1 if answer is None else vocabulary.setdefault(answer, len(vocabulary))
    return codes


def choose_in_sets(
    invoked_mask: np.ndarray,
    scores: np.ndarray,
    codes: np.ndarray | None = None,
    method: str = "vote",
) -> np.ndarray:
    """Index of the model whose response each query returns, vectorised over queries.

    Parameters
    ----------
    invoked_mask : array-like of bool, shape (n, M)
        The models invoked for each query (an all-False row = abstain).
    scores : array-like of float, shape (n, M)
        The router's scores; they weight the votes and break ties.
    codes : array-like of int, shape (n, M), optional
        Answer codes from :func:`answer_codes` (-1: no extractable answer, -2: no
        response, which removes the model from the set). Required for ``"vote"``.
    method : {"vote", "best"}, default "vote"
        The aggregator.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        The chosen model's column, or -1 where no invoked model has a response.
    """
    if method not in AGGREGATORS:
        raise ValueError(f"method must be one of {AGGREGATORS}, got {method!r}.")
    invoked = np.asarray(invoked_mask, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if method == "vote" and codes is None:
        raise ValueError("method='vote' needs the answer codes; compute them with answer_codes().")
    n, m = invoked.shape
    if codes is None:
        codes = np.zeros((n, m), dtype=np.int64)
    codes = np.asarray(codes)
    responding = invoked & (codes != -2)
    weights = np.where(responding, scores, 0.0)
    if method == "vote":
        has_answer = responding & (codes >= 0)
        same_answer = codes[:, :, None] == codes[:, None, :]
        votes = np.einsum("nkj,nj->nk", same_answer & has_answer[:, None, :], weights)
        # Unextractable answers compete only among themselves (when nothing else exists).
        eligible = np.where(has_answer.any(axis=1, keepdims=True), has_answer, responding)
        # Within a winning answer group, the largest single score is the tie-breaker.
        group_top = np.max(
            np.where(same_answer & has_answer[:, None, :], weights[:, None, :], -np.inf), axis=2
        )
        votes = np.where(has_answer, votes, weights)
        group_top = np.where(has_answer, group_top, weights)
    else:
        eligible = responding
        votes = weights
        group_top = weights
    position = -np.broadcast_to(np.arange(m), (n, m))
    order = np.lexsort((position, weights, group_top, votes, eligible), axis=-1)
    chosen = order[:, -1]
    return np.where(responding.any(axis=1), chosen, -1)


def choose_response(
    responses: Sequence[str | None],
    scores: Sequence[float],
    method: str = "vote",
    answer_kind: str = "auto",
) -> int | None:
    """Pick the response to return from the answers of the invoked models.

    Parameters
    ----------
    responses : sequence of str or None
        One response per invoked model; None for a backend that failed (skipped).
    scores : sequence of float
        The router's score for each of those models (same order).
    method : {"vote", "best"}, default "vote"
        ``"vote"``: score-weighted majority over extracted answers, ties to the
        higher score, returning the highest-scored response of the winning answer.
        ``"best"``: the highest-scored model's response.
    answer_kind : {"auto", "choice", "number"}, default "auto"
        How answers are extracted for the vote (see :func:`extract_answer`).

    Returns
    -------
    int or None
        The index into ``responses`` of the response to return, None when every
        response is None.

    Examples
    --------
    >>> choose_response(["A", "B", "B"], [0.9, 0.5, 0.6])
    1
    >>> choose_response(["A", "B", "B"], [0.9, 0.5, 0.6], method="best")
    0
    """
    if len(responses) != len(scores):
        raise ValueError(
            f"responses and scores must have the same length, got {len(responses)} "
            f"and {len(scores)}."
        )
    if not responses:
        return None
    texts = np.empty((1, len(responses)), dtype=object)
    texts[0, :] = list(responses)
    codes = answer_codes(texts, answer_kind)
    chosen = choose_in_sets(
        np.ones((1, len(responses)), dtype=bool),
        np.asarray(scores, dtype=float)[None, :],
        codes,
        method,
    )[0]
    return None if chosen < 0 else int(chosen)


def chosen_correct(chosen: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each chosen response is correct (False for abstentions and unknowns).

    Parameters
    ----------
    chosen : array-like of int, shape (n,)
        From :func:`choose_in_sets` (-1 = nothing returned).
    labels : array-like of float, shape (n, M)
        1 correct, 0 wrong, NaN unknown.
    """
    chosen = np.asarray(chosen)
    labels = np.asarray(labels, dtype=float)
    picked = labels[np.arange(labels.shape[0]), np.maximum(chosen, 0)]
    return (chosen >= 0) & (picked == 1.0)


def any_correct(invoked_mask: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether some invoked model is correct: the upper bound of every aggregator."""
    return (np.asarray(invoked_mask, dtype=bool) & (np.asarray(labels) == 1.0)).any(axis=1)
