"""RouterBench wide CSV: correctness, responses and dollar costs of 11 LLMs.

Columns: an unnamed index, ``sample_id``, ``prompt`` (a Python-list literal holding
the prompt), ``eval_name``, then per model ``M`` (1.0 correct, 0.0 wrong, empty =
missing), ``M|model_response`` (a Python-list literal) and ``M|total_cost`` (US
dollars), and ``oracle_model_to_route_to``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from racer.data.dataset import RoutingDataset
from racer.data.generic import (
    MissingPolicy,
    handle_missing,
    merge_and_report,
    read_table,
    wide_rows_to_dataset,
)

__all__ = ["is_routerbench_header", "load_routerbench", "parse_text_list"]

COST_SUFFIX = "|total_cost"
RESPONSE_SUFFIX = "|model_response"
_REQUIRED = ("sample_id", "prompt")


def is_routerbench_header(columns: list[str]) -> bool:
    """True when the columns look like a RouterBench CSV (sample_id, prompt, M|total_cost)."""
    return all(c in columns for c in _REQUIRED) and any(c.endswith(COST_SUFFIX) for c in columns)


def parse_text_list(cell: Any, where: str) -> str | None:
    """Turn a RouterBench text cell, a Python-list literal of strings, into one string.

    The literal is parsed with :func:`ast.literal_eval` (no code runs). Several distinct
    strings (turns of a conversation) are joined by a blank line; a string repeated
    back to back is kept once, since RouterBench stores some prompts twice.

    Parameters
    ----------
    cell : object
        The raw cell; empty cells give None, text not starting with ``[`` is returned
        as it is.
    where : str
        File, row and column, for the error message.

    Returns
    -------
    str or None

    Examples
    --------
    >>> parse_text_list("['What is 2 + 2?']", "example")
    'What is 2 + 2?'
    """
    if cell is None or cell == "":
        return None
    text = str(cell)
    if not text.lstrip().startswith("["):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"{where}: expected a Python list literal of strings such as \"['text']\", "
            f"got {text[:60]!r}. Is this a RouterBench CSV written by pandas?"
        )
    turns = [v for i, v in enumerate(value) if i == 0 or v != value[i - 1]]
    return "\n\n".join(turns)


def load_routerbench(
    path: str | Path,
    *,
    missing: MissingPolicy = "keep",
    merge_duplicates: bool = True,
    read_responses: bool = True,
    threshold: float = 0.5,
    name: str | None = None,
) -> RoutingDataset:
    """Load a RouterBench CSV.

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file.
    missing : {"keep", "drop_queries"}, default "keep"
        Empty correctness cells are unknown (NaN), never wrong. ``"keep"`` keeps
        them; ``"drop_queries"`` drops every query with one. Either way a
        :class:`~racer.data.generic.MissingLabelsWarning` gives the counts per model.
    merge_duplicates : bool, default True
        RouterBench stores some queries as two rows with the same ``sample_id``, one
        holding gpt-3.5-turbo's result and one the other models'. True merges them
        (each cell from the row where its label is known) and warns how many;
        False keeps the rows as in the file (they share a query id, so splits keep
        them together).
    read_responses : bool, default True
        Parse the ``M|model_response`` columns into ``responses``; False skips them
        (faster on the full benchmark).
    threshold : float, default 0.5
        Labels for graded outcomes (e.g. MT-Bench scores in [0, 1]): ``quality >=
        threshold``. Binary outcomes are used as they are.
    name : str, optional
        The dataset name; the file stem by default.

    Returns
    -------
    RoutingDataset
        ``queries`` from ``prompt``, ``query_ids`` from ``sample_id``, ``sources`` from
        ``eval_name``, ``costs`` from ``M|total_cost``.

    Examples
    --------
    >>> data = load_routerbench("routerbench/mbpp_test.csv")  # doctest: +SKIP
    >>> data.mean_costs()  # doctest: +SKIP
    """
    columns, rows = read_table(path)
    path = Path(path)
    if not is_routerbench_header(columns):
        raise ValueError(
            f"{path.name} is not a RouterBench CSV: expected columns {list(_REQUIRED)} and "
            f"'<model>{COST_SUFFIX}' columns, got {columns[:8]}{'...' if len(columns) > 8 else ''}."
            " For other tables use load_table()."
        )
    dataset = wide_rows_to_dataset(
        columns,
        rows,
        origin=path.name,
        name=name or path.stem,
        query_column="prompt",
        id_column="sample_id",
        source_column="eval_name",
        cost_suffix=COST_SUFFIX,
        response_suffix=RESPONSE_SUFFIX if read_responses else None,
        parse_text=parse_text_list,
        ignore=("oracle_model_to_route_to",),
        threshold=threshold,
    )
    if merge_duplicates:
        dataset = merge_and_report(dataset, path.name)
    return handle_missing(dataset, missing, path.name)
