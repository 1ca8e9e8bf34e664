"""Grade collected responses 0/1: exact rules against references, or an LLM judge.

Exact rules (the rule used is stored in each row's ``grade_rule``):

- ``choice``: the multiple-choice letter extracted from the response equals the
  reference letter;
- ``number``: the final number of the response equals the reference number within a
  relative tolerance;
- ``exact``: the normalised texts are equal (case folded, punctuation and articles
  removed, whitespace collapsed);
- ``auto``: ``choice`` for a one-letter reference, ``number`` for a numeric one,
  ``exact`` otherwise.

The judge is any OpenAI-compatible backend, asked with a fixed, versioned prompt
(:data:`JUDGE_PROMPT`, :data:`JUDGE_PROMPT_VERSION`) for one line of JSON
``{"verdict": 0 or 1, "reason": "..."}``. An unparsable verdict is asked again up to
``retries`` times; a response that still has no verdict keeps an unknown label (None,
read as NaN by :func:`racer.load_dataset`), never a guessed one. The prompt version,
the judge model, its raw verdict and reason are stored beside each label.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from racer.aggregate import extract_answer

__all__ = [
    "JUDGE_PROMPT",
    "JUDGE_PROMPT_VERSION",
    "agreement",
    "cohen_kappa",
    "exact_label",
    "grade_references",
    "judge_prompt",
    "judge_rows",
    "parse_verdict",
    "read_references",
    "stored_references",
    "write_rows",
]

RULES = ("auto", "choice", "number", "exact")
_LETTER = re.compile(r"^\(?([A-Ja-j])[\).:]?$")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

JUDGE_PROMPT_VERSION = "racer-judge-v1"
JUDGE_PROMPT = """You are grading one answer of an AI assistant.

Question:
{query}

{reference_block}Answer to grade:
{response}

Is the answer correct{against}? Reply with exactly one line of JSON and nothing else:
{{"verdict": 1, "reason": "<at most 20 words>"}} if it is correct,
{{"verdict": 0, "reason": "<at most 20 words>"}} if it is not."""


# ---------------------------------------------------------------------------
# Exact rules


def normalise_text(text: str) -> str:
    """Case folded, punctuation and English articles removed, whitespace collapsed."""
    folded = str(text).casefold().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", folded).split())


def _as_number(text: str) -> float | None:
    try:
        value = float(str(text).replace(",", "").replace("$", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def rule_for(reference: str) -> str:
    """The exact rule ``auto`` uses for ``reference``: choice, number or exact."""
    if _LETTER.match(reference.strip()):
        return "choice"
    if _as_number(reference) is not None:
        return "number"
    return "exact"


def exact_label(
    response: str | None, reference: str, rule: str = "auto", tolerance: float = 1e-6
) -> tuple[int, str]:
    """Grade one response against its reference by an exact rule.

    Parameters
    ----------
    response : str or None
        The model's response (None, a failed call, is wrong).
    reference : str
        The correct answer: a letter, a number or a short text.
    rule : {"auto", "choice", "number", "exact"}
        See the module docstring.
    tolerance : float
        Relative tolerance of the number rule (absolute below 1).

    Returns
    -------
    label : int
        1 correct, 0 wrong.
    rule : str
        The rule applied (never "auto").

    Examples
    --------
    >>> exact_label("The answer is (C).", "C")
    (1, 'choice')
    >>> exact_label("so 1,200.0 dollars", "1200")
    (1, 'number')
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    applied = rule_for(reference) if rule == "auto" else rule
    if not isinstance(response, str):
        return 0, applied
    if applied == "choice":
        match = _LETTER.match(reference.strip())
        wanted = match.group(1).upper() if match else reference.strip().upper()
        return int(extract_answer(response, "choice") == wanted), applied
    if applied == "number":
        wanted = _as_number(reference)
        found = extract_answer(response, "number")
        value = None if found is None else _as_number(found)
        if wanted is None or value is None:
            return 0, applied
        return int(abs(value - wanted) <= tolerance * max(1.0, abs(wanted))), applied
    return int(normalise_text(response) == normalise_text(reference)), applied


def read_references(path: str | Path) -> tuple[dict[str, str], int]:
    """References by query id (or by query text), from JSONL or CSV.

    Each record has ``reference`` and one of ``query_id``, ``id`` or ``query``. A record
    whose reference is null or empty (a query without a known answer, as
    ``racer collect`` allows) is skipped and counted; its responses stay unlabelled.

    Returns
    -------
    references : dict of str to str
        The reference of each query key.
    n_skipped : int
        Records without a reference.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No references file at {str(path)!r}; pass an existing file.")
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle))
    else:
        with path.open(encoding="utf-8") as handle:
            records = []
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(
                        f"{path.name}, line {number} is not valid JSON: {error.msg}."
                    ) from None
    references, skipped = {}, 0
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(f"{path.name}, record {number}: expected a JSON object.")
        key = next((record.get(k) for k in ("query_id", "id", "query") if record.get(k)), None)
        if key is None:
            raise ValueError(
                f"{path.name}, record {number}: needs `query_id` (or `id`, `query`) beside "
                "`reference`."
            )
        value = record.get("reference")
        if value in (None, ""):
            skipped += 1
            continue
        references[str(key)] = str(value)
    return references, skipped


def stored_references(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The references ``racer collect`` stored in the rows, by query id (nulls left out)."""
    return {
        str(row["query_id"]): str(row["reference"])
        for row in rows
        if row.get("reference") not in (None, "")
    }


def check_references_match(
    rows: Sequence[Mapping[str, Any]], references: Mapping[str, str], source: str
) -> None:
    """Refuse references that match no row's ``query_id`` or ``query`` (a wrong file).

    Raises
    ------
    ValueError
        With the number of references and an example key of each side.
    """
    if not rows or not references:
        return
    keys = {str(row["query_id"]) for row in rows} | {str(row.get("query")) for row in rows}
    if keys.isdisjoint(references):
        example = next(iter(references))
        raise ValueError(
            f"None of the {len(references)} references of {source} matches a response: "
            f"their ids look like {example[:60]!r}, the responses' query ids like "
            f"{str(rows[0]['query_id'])[:60]!r}. Give the references of the queries that "
            "were collected (keyed by query_id, id or query)."
        )


def grade_references(
    rows: Sequence[Mapping[str, Any]],
    references: Mapping[str, str],
    *,
    rule: str = "auto",
    tolerance: float = 1e-6,
) -> list[dict[str, Any]]:
    """Rows with ``label_references``, ``grade_rule`` and ``reference`` added.

    A row whose query has no reference keeps an unknown label (None).
    """
    graded = []
    for row in rows:
        reference = references.get(str(row["query_id"]), references.get(str(row.get("query"))))
        new = dict(row)
        if reference is None:
            new.update(label_references=None, grade_rule=None)
        else:
            label, applied = exact_label(row.get("response"), reference, rule, tolerance)
            new.update(reference=reference, label_references=label, grade_rule=applied)
        graded.append(new)
    return graded


# ---------------------------------------------------------------------------
# The judge


def judge_prompt(query: str, response: str | None, reference: str | None) -> str:
    """The versioned judge prompt for one response."""
    return JUDGE_PROMPT.format(
        query=query,
        response=response if isinstance(response, str) else "(no answer)",
        reference_block=f"Reference answer:\n{reference}\n\n" if reference else "",
        against=" (it must agree with the reference answer)" if reference else "",
    )


_VERDICT_JSON = re.compile(r"\{[^{}]*\}")
_VERDICT_WORD = re.compile(r"verdict\W{0,4}([01])\b", re.IGNORECASE)


def parse_verdict(text: str | None) -> tuple[int, str] | None:
    """The (verdict, reason) of a judge reply, None when it holds no clear verdict.

    Examples
    --------
    >>> parse_verdict('{"verdict": 1, "reason": "matches"}')
    (1, 'matches')
    >>> parse_verdict("I think it is fine.") is None
    True
    """
    if not isinstance(text, str):
        return None
    for candidate in _VERDICT_JSON.findall(text):
        try:
            record = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        verdict = record.get("verdict") if isinstance(record, dict) else None
        if verdict in (0, 1) and not isinstance(verdict, bool):
            return int(verdict), str(record.get("reason", ""))[:300]
    words = {int(v) for v in _VERDICT_WORD.findall(text)}
    return (words.pop(), "") if len(words) == 1 else None


async def _judge_one(row: Mapping[str, Any], backend: Any, retries: int) -> dict[str, Any]:
    prompt = judge_prompt(str(row.get("query")), row.get("response"), row.get("reference"))
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0}
    verdict, raw, error, calls = None, None, None, 0
    for _ in range(retries + 1):
        calls += 1
        call = await backend.complete(body)
        if not call.ok:
            error, raw = f"judge call failed: {call.error}", None
            break  # the backend already retried transient failures
        raw = call.text
        verdict = parse_verdict(raw)
        if verdict is not None:
            error = None
            break
        error = "unparsable verdict"
    return {
        **row,
        "label_judge": None if verdict is None else verdict[0],
        "judge_reason": None if verdict is None else verdict[1],
        "judge_raw": raw,
        "judge_calls": calls,
        "judge_error": error,
        "judge_model": backend.name,
        "judge_prompt_version": JUDGE_PROMPT_VERSION,
    }


async def judge_rows(
    rows: Sequence[Mapping[str, Any]],
    backend: Any,
    *,
    retries: int = 2,
    previous: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Every row with a judge verdict (or an unknown label and the reason why).

    Parameters
    ----------
    rows : sequence of mapping
        Collected rows (``query_id``, ``query``, ``model``, ``response``, optional
        ``reference``).
    backend : Backend
        The judge (its concurrency limit, retries and timeout apply).
    retries : int, default 2
        Extra calls after an unparsable verdict.
    previous : sequence of mapping
        Rows of an earlier grading; their verdicts from the same judge and prompt
        version are kept, so a rerun only asks about the rows without one.

    Returns
    -------
    list of dict
        One row per input row, in order, none dropped.
    """
    kept = {
        (str(r["query_id"]), str(r["model"])): r
        for r in previous
        if r.get("label_judge") is not None
        and r.get("judge_model") == backend.name
        and r.get("judge_prompt_version") == JUDGE_PROMPT_VERSION
    }
    judge_fields = (
        "label_judge",
        "judge_reason",
        "judge_raw",
        "judge_calls",
        "judge_error",
        "judge_model",
        "judge_prompt_version",
    )

    async def one(row: Mapping[str, Any]) -> dict[str, Any]:
        earlier = kept.get((str(row["query_id"]), str(row["model"])))
        if earlier is not None:
            return {**row, **{k: earlier.get(k) for k in judge_fields}}
        return await _judge_one(row, backend, retries)

    return list(await asyncio.gather(*(one(row) for row in rows)))


# ---------------------------------------------------------------------------
# Agreement


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two 0/1 label vectors (NaN when chance agreement is 1)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    observed = np.mean(a == b)
    p_a, p_b = a.mean(), b.mean()
    expected = p_a * p_b + (1 - p_a) * (1 - p_b)
    return float("nan") if expected == 1 else float((observed - expected) / (1 - expected))


def agreement(first: Sequence[Any], second: Sequence[Any]) -> dict[str, Any]:
    """Agreement of two label lists on the rows where both are known.

    Returns
    -------
    dict
        ``n``, ``agreement`` (share of equal labels), ``kappa`` (Cohen's) and
        ``confusion`` ([[0/0, 0/1], [1/0, 1/1]], first label by row, second by column).
    """
    pairs = np.array(
        [(x, y) for x, y in zip(first, second, strict=True) if x is not None and y is not None],
        dtype=float,
    ).reshape(-1, 2)
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (pairs[:, 0].astype(int), pairs[:, 1].astype(int)), 1)
    n = len(pairs)
    return {
        "n": n,
        "agreement": float(np.mean(pairs[:, 0] == pairs[:, 1])) if n else float("nan"),
        "kappa": cohen_kappa(pairs[:, 0], pairs[:, 1]) if n else float("nan"),
        "confusion": confusion.tolist(),
    }


# ---------------------------------------------------------------------------
# Output


def write_rows(rows: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Write rows as JSONL or Parquet (by suffix), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        from racer.owndata.collect import write_parquet

        write_parquet(rows, path)
        return
    if suffix != ".jsonl":
        raise ValueError(f"--out must end in .jsonl or .parquet, got {path.name!r}.")
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    temporary.replace(path)
