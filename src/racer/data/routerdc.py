"""RouterDC JSON: per-query scores of 7 open LLMs on multiple-choice and coding/maths tasks.

A file is a JSON list of ``{"question": str, "scores": {model: float}, ...}``. The
score means two things: in multiple-choice files it is the probability the model
gave the right choice (``> 0`` = correct); in multi-attempt files (gsm8k, humaneval,
mbpp, javascript) it is the fraction of 10 sampled attempts that passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from racer.data.dataset import RoutingDataset
from racer.data.generic import (
    MissingPolicy,
    existing_file,
    handle_missing,
    load_json,
    threshold_quality,
    to_float,
)

__all__ = ["PASS_FRACTION_TASKS", "is_routerdc_records", "load_routerdc", "routerdc_kind"]

Kind = Literal["choice", "pass_fraction"]

#: File-name prefixes of RouterDC's multi-attempt tasks, whose score is a pass fraction.
PASS_FRACTION_TASKS = ("gsm8k", "humaneval", "mbpp", "javascript")
#: File-name prefixes of RouterDC's multiple-choice tasks, whose score > 0 means correct.
CHOICE_TASKS = ("mmlu", "cmmlu", "ceval", "arc_challenge", "arc_easy", "math_prealgebra")


def is_routerdc_records(records: Any) -> bool:
    """True when ``records`` looks like RouterDC data: a list of objects with a scores dict."""
    return (
        isinstance(records, list)
        and bool(records)
        and isinstance(records[0], dict)
        and isinstance(records[0].get("scores"), dict)
    )


def _in_tenths(values: np.ndarray) -> bool:
    """Whether every value is a multiple of 0.1 (a pass fraction over 10 attempts)."""
    return bool(np.all(np.abs(values * 10 - np.round(values * 10)) < 1e-9))


def routerdc_kind(stem: str, scores: np.ndarray | None = None) -> Kind:
    """The kind of a RouterDC file: ``"pass_fraction"`` or ``"choice"``.

    Decided from the scores when they are given: pass fractions over RouterDC's 10
    sampled attempts are multiples of 0.1, while multiple-choice scores are probabilities
    (0 when the model chose a wrong answer, else the probability of the right choice, at
    least 0.25 with four choices) that almost never fall on tenths. Files whose scores
    are all 0 or 1 read the same either way (``"choice"``). Without scores, or when the
    scores look like neither, the file name decides (RouterDC's task prefixes).

    Parameters
    ----------
    stem : str
        The file name without suffix.
    scores : numpy.ndarray, optional
        The file's scores (NaN = unknown).

    Returns
    -------
    {"choice", "pass_fraction"}
    """
    known = np.array([]) if scores is None else scores[~np.isnan(scores)]
    if scores is not None and known.size == 0:
        return "choice"  # nothing known: both readings give the same (unknown) labels
    if known.size:
        if np.isin(known, (0.0, 1.0)).all():
            return "choice"
        tenths = _in_tenths(known)
        if tenths and known.size >= 20:
            return "pass_fraction"
        if not tenths and np.mean(np.isin(np.round(known * 10) / 10, known)) < 0.5:
            return "choice"
    lowered = stem.lower()
    if lowered.startswith(PASS_FRACTION_TASKS):
        return "pass_fraction"
    if lowered.startswith(CHOICE_TASKS):
        return "choice"
    raise ValueError(
        f"Cannot tell whether the scores of {stem!r} are multiple-choice probabilities "
        "(> 0 = correct) or pass fractions (multiples of 0.1): neither the values nor the "
        "file name decide. Pass kind='choice' or kind='pass_fraction'."
    )


def _scores_matrix(records: list[Any], origin: str) -> tuple[list[str], np.ndarray]:
    if not is_routerdc_records(records):
        raise ValueError(
            f"{origin}: expected a non-empty JSON list of objects like "
            '{"question": "...", "scores": {"model": 0.0}}, got '
            f"{type(records).__name__ if not isinstance(records, list) else 'another list'}."
        )
    models = list(records[0]["scores"])
    scores = np.full((len(records), len(models)), np.nan)
    for i, record in enumerate(records):
        where = f"{origin}, record {i}"
        if not isinstance(record, dict) or not isinstance(record.get("scores"), dict):
            raise ValueError(f'{where}: expected an object with a "scores" mapping.')
        unknown = set(record["scores"]) - set(models)
        if unknown:
            raise ValueError(
                f"{where}: model(s) {sorted(unknown)} not in the first record's {models}; "
                "every record must score the same models."
            )
        for j, model in enumerate(models):
            scores[i, j] = to_float(record["scores"].get(model), f"{where}, model {model!r}")
    return models, scores


def _question(record: dict, origin: str, index: int) -> str:
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(
            f"{origin}, record {index}: \"question\" must be a non-empty string, got "
            f"{question!r}. Every record needs the query text."
        )
    return question


def load_routerdc(
    path: str | Path,
    *,
    kind: Literal["auto", "choice", "pass_fraction"] = "auto",
    pass_threshold: float = 0.5,
    missing: MissingPolicy = "keep",
    name: str | None = None,
) -> RoutingDataset:
    """Load a RouterDC JSON file.

    Parameters
    ----------
    path : str or pathlib.Path
        The JSON file.
    kind : {"auto", "choice", "pass_fraction"}, default "auto"
        How to read scores. ``"choice"``: ``score > 0`` is correct and ``quality`` is
        None. ``"pass_fraction"``: ``quality`` is the pass fraction and the label is
        ``quality >= pass_threshold``. ``"auto"`` decides from the file name (gsm8k,
        humaneval, mbpp and javascript files hold pass fractions) and, first, from the
        scores themselves (see :func:`routerdc_kind`), so a renamed file still reads.
    pass_threshold : float, default 0.5
        The pass fraction that makes a multi-attempt answer acceptable.
    missing : {"keep", "drop_queries"}, default "keep"
        What to do with absent or null scores (unknown, not wrong).
    name : str, optional
        The dataset name; the file stem by default.

    Returns
    -------
    RoutingDataset
        ``query_ids`` are ``<stem>:<index>``, ``sources`` the file stem.

    Examples
    --------
    >>> data = load_routerdc("routerdc/gsm8k-test.json", pass_threshold=0.5)  # doctest: +SKIP
    >>> data.labels.mean(axis=0).max()  # doctest: +SKIP
    0.7202...
    """
    path = existing_file(path, "RouterDC JSON file")
    records = load_json(path)
    models, scores = _scores_matrix(records, path.name)
    known = scores[~np.isnan(scores)]
    if known.size and (known.min() < 0 or known.max() > 1):
        bad = known[(known < 0) | (known > 1)]
        raise ValueError(
            f"{path.name}: RouterDC scores are probabilities or pass fractions in [0, 1]; "
            f"found {bad.size} value(s) outside, e.g. {bad[:3].tolist()}. Rescale them, or "
            "load the file as a generic table with 0/1 labels."
        )
    if kind == "auto":
        kind = routerdc_kind(path.stem, scores)
    if kind == "choice":
        labels, quality = (scores > 0).astype(float), None
        labels[np.isnan(scores)] = np.nan
    elif kind == "pass_fraction":
        labels, quality = threshold_quality(scores, pass_threshold), scores
    else:
        raise ValueError(f"kind must be 'auto', 'choice' or 'pass_fraction', got {kind!r}.")
    stem = path.stem
    dataset = RoutingDataset(
        queries=np.array([_question(r, path.name, i) for i, r in enumerate(records)], dtype=object),
        model_names=tuple(models),
        labels=labels,
        quality=quality,
        query_ids=np.array([f"{stem}:{i}" for i in range(len(records))]),
        sources=np.full(len(records), stem),
        name=name or stem,
    )
    return handle_missing(dataset, missing, path.name)
