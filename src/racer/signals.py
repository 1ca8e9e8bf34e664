"""What an answer says about itself: length, hedging, token log-probabilities.

These are the signals a cascade has *after* a model answered, beside agreement
(:mod:`racer.aggregate`, :mod:`racer.similarity`) and the router's scores. They are
computed from one answer at a time (its text and, when the backend returned them, its
token log-probabilities), with no state fitted on any data, so the gateway computes for
a live answer exactly what the simulation computes on a recorded one.

Token log-probabilities are the strongest single cascade signal in the literature
(a model's own confidence in what it wrote); collect them first (``logprobs: true`` on
a backend, see ``docs/own-data.md``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SIGNAL_NAMES = ("length", "hedged", "logprob_mean", "logprob_min")

_HEDGES = re.compile(
    r"\b(i'?m not (sure|certain)|i am not (sure|certain)|i (do not|don't) know|"
    r"not enough information|cannot (be )?determine|can't (be )?determine|"
    r"i (cannot|can't|am unable to|won't)|unable to (answer|help|provide)|as an ai|"
    r"it is unclear|it's unclear|hard to say|impossible to (say|know|tell))\b",
    re.IGNORECASE,
)


def is_hedged(text: str) -> bool:
    """Whether an answer hedges or declines ("I'm not sure", "I cannot", "as an AI", ...).

    Examples
    --------
    >>> is_hedged("I'm not sure, but it might be B."), is_hedged("The answer is B.")
    (True, False)
    """
    return _HEDGES.search(text) is not None


def token_logprob_stats(values: Sequence[float] | np.ndarray | None) -> tuple[float, float]:
    """Mean and minimum token log-probability of one answer; (NaN, NaN) without any.

    Examples
    --------
    >>> token_logprob_stats([-0.25, -0.5, 0.0])
    (-0.25, -0.5)
    >>> token_logprob_stats(None)
    (nan, nan)
    """
    if values is None:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float).ravel()
    array = array[np.isfinite(array)]
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.min())


def choice_token_logprobs(answer: Any) -> list[float] | None:
    """The token log-probabilities of an OpenAI chat completion's first choice.

    Reads ``choices[0].logprobs.content[*].logprob`` (the chat format vLLM, Ollama and
    OpenAI return when asked with ``logprobs: true``); None when the answer holds none.

    Examples
    --------
    >>> body = {"choices": [{"logprobs": {"content": [{"token": "B", "logprob": -0.02}]}}]}
    >>> choice_token_logprobs(body), choice_token_logprobs({"choices": [{"logprobs": None}]})
    ([-0.02], None)
    """
    try:
        content = answer["choices"][0]["logprobs"]["content"]
        values = [float(item["logprob"]) for item in content]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return values or None


@dataclass(frozen=True)
class AnswerSignals:
    """Per-answer signals of a batch of queries, each of shape (n, M).

    Attributes
    ----------
    length : numpy.ndarray
        ``log1p`` of the answer's length in characters; NaN where there is no answer.
    hedged : numpy.ndarray
        1.0 where the answer hedges or declines (:func:`is_hedged`), 0.0 where it does
        not; NaN where there is no answer.
    logprob_mean, logprob_min : numpy.ndarray
        Mean and minimum token log-probability; NaN where none was recorded.
    """

    length: np.ndarray
    hedged: np.ndarray
    logprob_mean: np.ndarray
    logprob_min: np.ndarray

    def take(self, rows: np.ndarray) -> AnswerSignals:
        """The signals of ``rows`` only."""
        return AnswerSignals(*(getattr(self, name)[rows] for name in SIGNAL_NAMES))

    @property
    def has_logprobs(self) -> np.ndarray:
        """Where token log-probabilities were recorded, shape (n, M)."""
        return np.isfinite(self.logprob_mean)


def answer_signals(responses: np.ndarray, logprobs: np.ndarray | None = None) -> AnswerSignals:
    """The signals of recorded (or live) answers.

    Parameters
    ----------
    responses : numpy.ndarray of object, shape (n, M)
        Answer texts; anything but a string is no answer.
    logprobs : numpy.ndarray of object, shape (n, M), optional
        Each answer's token log-probabilities (a sequence of floats) or None.

    Returns
    -------
    AnswerSignals

    Examples
    --------
    >>> texts = np.array([["B", "I don't know", None]], dtype=object)
    >>> lp = np.array([[[-0.1, -0.3], None, None]], dtype=object)
    >>> s = answer_signals(texts, lp)
    >>> s.hedged.tolist(), s.logprob_min.tolist()
    ([[0.0, 1.0, nan]], [[-0.3, nan, nan]])
    """
    responses = np.asarray(responses, dtype=object)
    shape = responses.shape
    length = np.full(shape, np.nan)
    hedged = np.full(shape, np.nan)
    mean = np.full(shape, np.nan)
    low = np.full(shape, np.nan)
    for (i, j), text in np.ndenumerate(responses):
        if isinstance(text, str):
            length[i, j] = math.log1p(len(text))
            hedged[i, j] = float(is_hedged(text))
    if logprobs is not None:
        logprobs = np.asarray(logprobs, dtype=object)
        if logprobs.shape != shape:
            raise ValueError(f"logprobs must have shape {shape}, got {logprobs.shape}.")
        for (i, j), values in np.ndenumerate(logprobs):
            mean[i, j], low[i, j] = token_logprob_stats(values)
    return AnswerSignals(length, hedged, mean, low)
