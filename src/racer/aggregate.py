"""Aggregation: turn the answers of the invoked models into one response.

Aggregators (METHOD.md section 6):

- ``"vote"``: majority vote over the answers extracted from the responses
  (a multiple-choice letter or a final number), each vote weighted by the router's
  score for that model; ties go to the answer backed by the higher single score.
  Responses with no extractable answer vote only when no response has one.
- ``"logodds"``: the same vote with weights ``log(p / (1 - p))``, ``p`` a calibrated
  probability that the model is right (the router's score, or the model's training
  accuracy), floored at 0: the optimal rule for independent voters, so one strong
  model is not outvoted by several weak ones.
- ``"best"``: the response of the highest-scored model in the set.
- a judge (:func:`judge_choice`): a model of the configuration names the best answer,
  for open-ended answers where no vote is possible.

Both work on one query (:func:`choose_response`, used by the gateway) and on a
whole evaluation at once (:func:`choose_in_sets`, vectorised over queries). The
string-level function calls the vectorised one, so the two cannot disagree.

The "any model in the set is correct" rate is not an aggregator but the upper
bound of every aggregator; :func:`any_correct` computes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

AGGREGATORS = ("vote", "logodds", "best")
PROBABILITY_CLIP = 1e-3
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


def log_odds(probabilities: np.ndarray, clip: float = PROBABILITY_CLIP) -> np.ndarray:
    """Vote weights ``max(log(p / (1 - p)), 0)`` of calibrated correctness probabilities.

    ``p`` is clipped to ``[clip, 1 - clip]`` so that a model that was always right in
    training does not get an infinite weight; a model no better than a coin flip gets
    weight 0 (it only breaks ties).

    Examples
    --------
    >>> log_odds(np.array([0.5, 0.9])).round(3)
    array([0.   , 2.197])
    """
    p = np.clip(np.asarray(probabilities, dtype=float), clip, 1.0 - clip)
    return np.maximum(np.log(p / (1.0 - p)), 0.0)


def weighted_vote(
    invoked_mask: np.ndarray, weights: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted majority vote over extracted answers, with its agreement margin.

    Parameters
    ----------
    invoked_mask : array-like of bool, shape (n, M)
        The models whose answers count.
    weights : array-like of float, shape (n, M)
        Non-negative vote weights; ties go to the larger single weight, then to the
        lower column.
    codes : array-like of int, shape (n, M)
        Answer codes from :func:`answer_codes` (-1 no extractable answer, -2 no response).

    Returns
    -------
    chosen : numpy.ndarray of int, shape (n,)
        The column whose response is returned (the largest weight of the winning
        answer), -1 where no invoked model responded.
    margin : numpy.ndarray of float, shape (n,)
        Weight of the winning answer minus the weight of every other extracted answer
        (0 when no answer was extracted): how strongly the answers so far agree.
    """
    invoked = np.asarray(invoked_mask, dtype=bool)
    weights = np.asarray(weights, dtype=float)
    codes = np.asarray(codes)
    n, m = invoked.shape
    responding = invoked & (codes != -2)
    weights = np.where(responding, weights, 0.0)
    has_answer = responding & (codes >= 0)
    same_answer = (codes[:, :, None] == codes[:, None, :]) & has_answer[:, None, :]
    votes = np.einsum("nkj,nj->nk", same_answer, weights)
    # Unextractable answers compete only among themselves (when nothing else exists).
    eligible = np.where(has_answer.any(axis=1, keepdims=True), has_answer, responding)
    # Within a winning answer group, the largest single weight is the tie-breaker.
    group_top = np.max(np.where(same_answer, weights[:, None, :], -np.inf), axis=2)
    votes = np.where(has_answer, votes, weights)
    group_top = np.where(has_answer, group_top, weights)
    position = -np.broadcast_to(np.arange(m), (n, m))
    order = np.lexsort((position, weights, group_top, votes, eligible), axis=-1)
    chosen = order[:, -1]
    rows = np.arange(n)
    answered_total = np.where(has_answer, weights, 0.0).sum(axis=1)
    winner_votes = np.where(has_answer[rows, chosen], votes[rows, chosen], 0.0)
    margin = winner_votes - (answered_total - winner_votes)
    return np.where(responding.any(axis=1), chosen, -1), margin


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
        The router's scores; they weight the votes and break ties. For ``"logodds"``
        they must be calibrated probabilities of being right (router scores, or each
        model's training accuracy repeated on every row).
    codes : array-like of int, shape (n, M), optional
        Answer codes from :func:`answer_codes` (-1: no extractable answer, -2: no
        response, which removes the model from the set). Required for the votes.
    method : {"vote", "logodds", "best"}, default "vote"
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
    if method != "best" and codes is None:
        raise ValueError(
            f"method={method!r} needs the answer codes; compute them with answer_codes()."
        )
    if method == "best":
        # Best-in-set is a vote in which every response is its own answer.
        n, m = invoked.shape
        distinct = np.broadcast_to(np.arange(m), (n, m))
        codes = distinct if codes is None else np.where(np.asarray(codes) == -2, -2, distinct)
        return weighted_vote(invoked, scores, codes)[0]
    weights = log_odds(scores) if method == "logodds" else scores
    return weighted_vote(invoked, weights, codes)[0]


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
    method : {"vote", "logodds", "best"}, default "vote"
        ``"vote"``: score-weighted majority over extracted answers, ties to the
        higher score, returning the highest-scored response of the winning answer.
        ``"logodds"``: the same with weights ``log(p / (1 - p))`` (scores as
        probabilities). ``"best"``: the highest-scored model's response.
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


JUDGE_PROMPT_VERSION = "racer-judge-v1"
_JUDGE_TEMPLATE = (
    "You are judging answers to a question. Reply with the number of the best answer "
    "only, as 'Best: <number>'.\n\nQuestion:\n{question}\n\n{answers}\n"
)
_VERDICT = re.compile(r"best\s*:\s*\[?(\d+)", re.IGNORECASE)


def judge_prompt(question: str, responses: Sequence[str | None]) -> str:
    """The fixed judge prompt (version :data:`JUDGE_PROMPT_VERSION`); answers numbered from 1."""
    answers = "\n\n".join(
        f"Answer {i}:\n{text}" for i, text in enumerate(responses, start=1) if text is not None
    )
    return _JUDGE_TEMPLATE.format(question=question, answers=answers)


def parse_verdict(text: str | None, responses: Sequence[str | None]) -> int | None:
    """The index (from 0) the judge named, None when unparsable or not an answer given."""
    match = _VERDICT.search(text) if isinstance(text, str) else None
    if match is None:
        return None
    index = int(match.group(1)) - 1
    return index if 0 <= index < len(responses) and responses[index] is not None else None


def judge_choice(
    question: str,
    responses: Sequence[str | None],
    scores: Sequence[float],
    ask: Callable[[str], str | None],
) -> tuple[int | None, bool]:
    """Let a judge model pick the response; best-in-set when it fails or is unparsable.

    Parameters
    ----------
    question : str
        The user's question.
    responses : sequence of str or None
        The invoked models' responses (None: failed call, never chosen).
    scores : sequence of float
        The router's scores, for the best-in-set fallback.
    ask : callable
        Sends the judge prompt to the judge backend and returns its reply (None or an
        exception on failure). Its cost is the caller's to count.

    Returns
    -------
    chosen : int or None
        Index into ``responses`` (None when every response is None).
    judged : bool
        True when the judge's verdict was used, False on the fallback.
    """
    if all(text is None for text in responses):
        return None, False
    try:
        verdict = parse_verdict(ask(judge_prompt(question, responses)), responses)
    except Exception:  # noqa: BLE001 - any judge failure falls back to best-in-set
        verdict = None
    if verdict is not None:
        return verdict, True
    return choose_response(responses, scores, method="best"), False
