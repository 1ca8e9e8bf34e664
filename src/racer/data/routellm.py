"""RouteLLM's response CSVs: ``prompt``, one True/False column per model, ``<model>_response``.

RouteLLM (lm-sys/RouteLLM) publishes its evaluation data as one row per prompt, a column
per model holding whether its answer was correct (``True``/``False``), and the model's
answer in ``<model>_response``. The models are the columns that have a response column.

Examples
--------
>>> data = load_routellm("mmlu_responses.csv")  # doctest: +SKIP
>>> data.model_names  # doctest: +SKIP
('gpt-4-1106-preview', 'mixtral-8x7b-instruct-v0.1')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from racer.data.dataset import RoutingDataset
from racer.data.generic import (
    MissingPolicy,
    handle_missing,
    read_table,
    wide_rows_to_dataset,
)

__all__ = ["is_routellm_header", "load_routellm"]

PROMPT_COLUMN = "prompt"
RESPONSE_SUFFIX = "_response"
_BOOLEANS = {"true": True, "false": False}


def routellm_models(columns: list[str]) -> list[str]:
    """The model columns: those with a ``<model>_response`` column beside them."""
    present = set(columns)
    return [c for c in columns if c != PROMPT_COLUMN and c + RESPONSE_SUFFIX in present]


def is_routellm_header(columns: list[str]) -> bool:
    """Whether a CSV header is RouteLLM's: ``prompt`` and some ``<model>_response``."""
    return PROMPT_COLUMN in columns and bool(routellm_models(columns))


def _as_boolean(value: Any) -> Any:
    """``"True"``/``"False"`` cells (any case) as booleans; anything else unchanged."""
    return _BOOLEANS.get(value.strip().lower(), value) if isinstance(value, str) else value


def _text_or_none(value: Any, where: str) -> str | None:
    """A text cell; an empty cell (no response recorded) is None."""
    return None if value is None or value == "" else str(value)


def load_routellm(
    path: str | Path, *, missing: MissingPolicy = "keep", name: str | None = None
) -> RoutingDataset:
    """Load a RouteLLM response CSV.

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file.
    missing : {"keep", "drop_queries"}, default "keep"
        Empty outcome cells are unknown (NaN): keep them or drop those queries.
    name : str, optional
        The dataset name; the file stem by default.

    Returns
    -------
    RoutingDataset
        Labels 1.0 for ``True``, 0.0 for ``False``; the responses; every other column
        (an index, ids, a source) is read as in :func:`racer.data.load_table`'s wide form
        when it is named ``query_id`` or ``source``, and otherwise ignored.
    """
    path = Path(path)
    columns, rows = read_table(path)
    models = routellm_models(columns)
    if PROMPT_COLUMN not in columns or not models:
        raise ValueError(
            f"{path.name}: not a RouteLLM response CSV; expected a {PROMPT_COLUMN!r} column "
            f"and, per model, a True/False column and a '<model>{RESPONSE_SUFFIX}' column. "
            f"The file has {columns}."
        )
    outcome_rows = [{**row, **{m: _as_boolean(row.get(m)) for m in models}} for row in rows]
    dataset = wide_rows_to_dataset(
        columns,
        outcome_rows,
        origin=path.name,
        name=name or path.stem,
        query_column=PROMPT_COLUMN,
        cost_suffix=None,
        response_suffix=RESPONSE_SUFFIX,
        parse_text=_text_or_none,
        ignore=[c for c in columns if c not in models],
    )
    return handle_missing(dataset, missing, path.name)
