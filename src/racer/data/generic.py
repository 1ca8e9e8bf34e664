"""Generic routing tables: long or wide form, in CSV, JSONL, JSON records or Parquet.

Long form has one row per (query, model) pair::

    query,model,label[,cost][,response][,logprobs][,query_id][,source]

Wide form has one row per query, one outcome column per model, and optional
``<model>|cost``, ``<model>|response`` and ``<model>|logprobs`` columns::

    query[,query_id][,source],gpt-4,mistral-7b,gpt-4|cost,mistral-7b|cost

A ``logprobs`` cell is an answer's token log-probabilities (what ``racer collect`` and
``racer dataset`` write): a list of numbers (JSON, JSONL, Parquet) or that list as JSON
text (CSV, TSV); an empty cell is none. They load into ``RoutingDataset.logprobs``.

Outcomes are 0/1 labels, or graded qualities in [0, 1] (a pass fraction, a judge
score) that go to ``quality`` and are thresholded into ``labels``. Empty cells are
missing (NaN = unknown), never wrong.
"""

from __future__ import annotations

import csv
import json
import sys
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from racer.data.dataset import RoutingDataset

__all__ = [
    "DuplicateQueriesWarning",
    "MissingLabelsWarning",
    "handle_missing",
    "load_table",
    "merge_duplicate_ids",
    "read_table",
    "threshold_quality",
    "token_logprobs",
]

Rows = list[dict[str, Any]]
TextParser = Callable[[Any, str], str | None]
MissingPolicy = Literal["keep", "drop_queries"]

_MISSING_STRINGS = frozenset({"", "nan", "na", "n/a", "null", "none"})
_INDEX_COLUMNS = frozenset({"", "Unnamed: 0", "index"})
COST_SUFFIX = "|cost"
RESPONSE_SUFFIX = "|response"
LOGPROBS_SUFFIX = "|logprobs"
LOGPROBS_COLUMN = "logprobs"


class MissingLabelsWarning(UserWarning):
    """Some (query, model) outcomes are unknown; they are kept as NaN or dropped."""


class DuplicateQueriesWarning(UserWarning):
    """Rows that repeat a query id were merged into one query."""


# ---------------------------------------------------------------------------
# Reading files into rows


def existing_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a Path, or raise FileNotFoundError that says what was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No {what} at {str(path)!r} (resolved to {path.resolve()}). "
            "Check the path; relative paths start from the current directory."
        )
    return path


def read_table(path: str | Path) -> tuple[list[str], Rows]:
    """Read a CSV, TSV, JSONL, JSON-records or Parquet file into column names and rows.

    Parameters
    ----------
    path : str or pathlib.Path
        The file; its suffix picks the reader.

    Returns
    -------
    columns : list of str
        Column names, in file order.
    rows : list of dict
        One mapping from column name to raw cell value per row.

    Examples
    --------
    >>> columns, rows = read_table("outcomes.csv")  # doctest: +SKIP
    """
    path = existing_file(path, "data file")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise ValueError(
            f"Cannot read {path.name!r}: unknown table format {suffix!r}. "
            f"Expected one of {', '.join(TABLE_SUFFIXES)}; rename the file or convert it."
        )
    columns, rows = _READERS[suffix](path)
    if not rows:
        raise ValueError(f"{path.name} has no data rows; expected at least one row.")
    return columns, rows


def _read_delimited(path: Path) -> tuple[list[str], Rows]:
    # Response texts in RouterBench exceed csv's default 128 KiB field limit.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        _check_unique_columns(columns, path)
        rows = list(reader)
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise ValueError(
                f"{path.name}, line {number}: the row has more fields than the header "
                f"({len(columns)} columns); quote fields that contain '{delimiter}'."
            )
    return columns, rows


def _read_json_lines(path: Path) -> tuple[list[str], Rows]:
    rows: Rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                rows.append(_json_object(line, f"{path.name}, line {number}"))
    return _columns_of(rows), rows


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: malformed JSON ({error.msg} at column {error.colno})."
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    return record


def load_json(path: Path) -> Any:
    """Parse a JSON file, turning a syntax error into a ValueError that names the place."""
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, "
            f"column {error.colno}. Fix the file or export it again."
        ) from None


def _read_json_records(path: Path) -> tuple[list[str], Rows]:
    records = load_json(path)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(
            f"{path.name}: expected a JSON list of objects (one per row), "
            f"got {type(records).__name__}. Use JSON Lines for one object per line."
        )
    return _columns_of(records), records


def _read_parquet(path: Path) -> tuple[list[str], Rows]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ImportError(
            f"Reading {path.name} needs pyarrow: pip install racer-routing[parquet]"
        ) from None
    table = parquet.read_table(path)
    return list(table.column_names), table.to_pylist()


_READERS: dict[str, Callable[[Path], tuple[list[str], Rows]]] = {
    ".csv": _read_delimited,
    ".tsv": _read_delimited,
    ".jsonl": _read_json_lines,
    ".ndjson": _read_json_lines,
    ".json": _read_json_records,
    ".parquet": _read_parquet,
}
TABLE_SUFFIXES = tuple(_READERS)


def _columns_of(rows: Rows) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _check_unique_columns(columns: list[str], path: Path) -> None:
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ValueError(f"{path.name}: repeated column names {repeated}; rename them.")


# ---------------------------------------------------------------------------
# Cells


def to_float(value: Any, where: str) -> float:
    """Convert a cell to float; empty, None and 'nan'-like cells are NaN (unknown)."""
    if value is None:
        return np.nan
    if isinstance(value, bool | int | float | np.number):
        return float(value)
    text = str(value).strip()
    if text.lower() in _MISSING_STRINGS:
        return np.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{where}: expected a number or an empty cell, got {text[:40]!r}."
        ) from None


def plain_text(value: Any, where: str) -> str | None:
    """A text cell as it is; empty cells are None."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def token_logprobs(value: Any, where: str) -> np.ndarray | None:
    """A ``logprobs`` cell as a 1-D float array: a list of numbers, or that list as JSON
    text (CSV); empty cells (and empty lists) are None.

    Examples
    --------
    >>> token_logprobs("[-0.5, -0.25]", "cell").tolist(), token_logprobs("", "cell")
    ([-0.5, -0.25], None)
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        if value.strip().lower() in _MISSING_STRINGS:
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"{where}: expected token log-probabilities as a JSON list of numbers, "
                f"got {value[:40]!r}."
            ) from None
    try:
        values = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 1:
        raise ValueError(
            f"{where}: expected token log-probabilities as a list of numbers, "
            f"got {str(value)[:40]!r}."
        )
    return values if values.size else None


def threshold_quality(quality: np.ndarray, threshold: float) -> np.ndarray:
    """Labels 1{quality >= threshold}, keeping NaN (unknown) cells NaN.

    Parameters
    ----------
    quality : numpy.ndarray of float
        Graded qualities in [0, 1], NaN where unknown.
    threshold : float
        The smallest quality that counts as acceptable, in (0, 1].

    Returns
    -------
    numpy.ndarray of float
        0.0 / 1.0 labels, NaN where ``quality`` is NaN.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
    labels = (quality >= threshold).astype(float)
    labels[np.isnan(quality)] = np.nan
    return labels


def split_outcomes(
    outcomes: np.ndarray, threshold: float, origin: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Binary outcomes become labels; graded outcomes in [0, 1] become quality + labels."""
    known = outcomes[~np.isnan(outcomes)]
    if known.size and (known.min() < 0.0 or known.max() > 1.0):
        raise ValueError(
            f"{origin}: outcomes must lie in [0, 1] (1 = correct), got values from "
            f"{known.min():g} to {known.max():g}. Rescale scores to [0, 1] first."
        )
    if np.isin(known, (0.0, 1.0)).all():
        return outcomes, None
    return threshold_quality(outcomes, threshold), outcomes


# ---------------------------------------------------------------------------
# Rows to a dataset


def _require_columns(columns: list[str], required: Iterable[str], origin: str, hint: str) -> None:
    absent = [c for c in required if c not in columns]
    if absent:
        raise ValueError(f"{origin}: missing column(s) {absent}; the file has {columns}. {hint}")


def _matrix(
    rows: Rows, models: list[str], suffix: str, convert: Any, origin: str, dtype: Any
) -> np.ndarray:
    """The ``<model><suffix>`` cells of every row, converted, as an (n, M) matrix.

    Filled cell by cell, so an object matrix may hold arrays (token logprobs).
    """
    matrix = np.empty((len(rows), len(models)), dtype=dtype)
    for i, row in enumerate(rows):
        for j, m in enumerate(models):
            where = f"{origin}, row {i + 1}, column {m + suffix!r}"
            matrix[i, j] = convert(row.get(m + suffix), where)
    return matrix


def wide_rows_to_dataset(
    columns: list[str],
    rows: Rows,
    *,
    origin: str,
    name: str,
    query_column: str = "query",
    id_column: str = "query_id",
    source_column: str = "source",
    cost_suffix: str | None = COST_SUFFIX,
    response_suffix: str | None = RESPONSE_SUFFIX,
    parse_text: TextParser = plain_text,
    ignore: Iterable[str] = (),
    threshold: float = 0.5,
) -> RoutingDataset:
    """Build a dataset from wide rows: one row per query, one outcome column per model.

    Every column that is not the query, id or source column, not in ``ignore`` and has
    no ``|`` in its name is a model. A ``None`` suffix skips those columns.
    """
    _require_columns(
        columns,
        [query_column],
        origin,
        f"Wide form needs a {query_column!r} column and one column per model.",
    )
    reserved = {query_column, id_column, source_column, *ignore, *_INDEX_COLUMNS}
    models = [c for c in columns if c not in reserved and "|" not in c]
    if not models:
        raise ValueError(f"{origin}: no model columns besides {sorted(reserved & set(columns))}.")
    outcomes = _matrix(rows, models, "", to_float, origin, float)
    labels, quality = split_outcomes(outcomes, threshold, origin)
    queries = [
        parse_text(row.get(query_column), f"{origin}, row {i + 1}, column {query_column!r}")
        for i, row in enumerate(rows)
    ]
    return RoutingDataset(
        queries=np.array(queries, dtype=object),
        model_names=tuple(models),
        labels=labels,
        quality=quality,
        costs=_suffixed_matrix(rows, columns, models, cost_suffix, to_float, origin, float),
        responses=_suffixed_matrix(
            rows, columns, models, response_suffix, parse_text, origin, object
        ),
        logprobs=_suffixed_matrix(
            rows, columns, models, LOGPROBS_SUFFIX, token_logprobs, origin, object
        ),
        query_ids=_column_or(rows, id_column, [f"{name}:{i}" for i in range(len(rows))]),
        sources=_column_or(rows, source_column, [name] * len(rows)),
        name=name,
    )


def _suffixed_matrix(
    rows: Rows,
    columns: list[str],
    models: list[str],
    suffix: str | None,
    convert: Any,
    origin: str,
    dtype: Any,
) -> np.ndarray | None:
    """The ``<model><suffix>`` columns as a matrix, or None when the table has none."""
    if suffix is None or not any(m + suffix in columns for m in models):
        return None
    return _matrix(rows, models, suffix, convert, origin, dtype)


def _column_or(rows: Rows, column: str, default: list[str]) -> np.ndarray:
    values = [row.get(column) for row in rows]
    if all(v is None or v == "" for v in values):
        return np.array(default)
    return np.array(
        [d if v is None or v == "" else str(v) for v, d in zip(values, default, strict=True)]
    )


def long_rows_to_dataset(
    columns: list[str],
    rows: Rows,
    *,
    origin: str,
    name: str,
    query_column: str = "query",
    model_column: str = "model",
    label_column: str = "label",
    id_column: str = "query_id",
    source_column: str = "source",
    threshold: float = 0.5,
) -> RoutingDataset:
    """Build a dataset from long rows: one row per (query, model) pair."""
    _require_columns(
        columns,
        [query_column, model_column, label_column],
        origin,
        "Long form needs one row per (query, model) with a label.",
    )
    keyed_by_id = id_column in columns
    keys = [str(row.get(id_column) if keyed_by_id else row.get(query_column)) for row in rows]
    first_row: dict[str, int] = {}
    for r, key in enumerate(keys):
        first_row.setdefault(key, r)
    query_index = {key: i for i, key in enumerate(first_row)}
    models = list(dict.fromkeys(str(row.get(model_column)) for row in rows))
    model_index = {m: j for j, m in enumerate(models)}
    cells = [
        (query_index[k], model_index[str(row.get(model_column))])
        for k, row in zip(keys, rows, strict=True)
    ]
    _check_unique_pairs(cells, keys, models, origin)
    shape = (len(query_index), len(models))

    def scatter(column: str, convert: Any, dtype: Any, fill: Any) -> np.ndarray | None:
        if column not in columns:
            return None
        values = np.full(shape, fill, dtype=dtype)
        for r, (i, j) in enumerate(cells):
            values[i, j] = convert(rows[r].get(column), f"{origin}, row {r + 1}, column {column!r}")
        return values

    outcomes = scatter(label_column, to_float, float, np.nan)
    labels, quality = split_outcomes(outcomes, threshold, origin)
    heads = [rows[r] for r in first_row.values()]
    return RoutingDataset(
        queries=np.array([plain_text(h.get(query_column), origin) for h in heads], dtype=object),
        model_names=tuple(models),
        labels=labels,
        quality=quality,
        costs=scatter("cost", to_float, float, np.nan),
        responses=scatter("response", plain_text, object, None),
        logprobs=scatter(LOGPROBS_COLUMN, token_logprobs, object, None),
        query_ids=_column_or(heads, id_column, [f"{name}:{i}" for i in range(shape[0])]),
        sources=_column_or(heads, source_column, [name] * shape[0]),
        name=name,
    )


def _check_unique_pairs(
    cells: list[tuple[int, int]], keys: list[str], models: list[str], origin: str
) -> None:
    seen: dict[tuple[int, int], int] = {}
    repeats = []
    for r, cell in enumerate(cells):
        if cell in seen:
            repeats.append((seen[cell], r))
        seen.setdefault(cell, r)
    if repeats:
        a, b = repeats[0]
        raise ValueError(
            f"{origin}: {len(repeats)} duplicated (query, model) pair(s), e.g. "
            f"({keys[a][:60]!r}, {models[cells[a][1]]!r}) at rows {a + 1} and {b + 1}. "
            "Each (query, model) must appear once in long form; aggregate repeated runs "
            "first (their mean is a graded label in [0, 1])."
        )


# ---------------------------------------------------------------------------
# Duplicated ids and missing cells


def merge_duplicate_ids(dataset: RoutingDataset) -> tuple[RoutingDataset, int]:
    """Merge rows that share a query id into one row per id.

    Each (query, model) cell takes its values (label, quality, cost, response, logprobs)
    from the first row where its label is known. Rows that disagree on a known label raise.

    Parameters
    ----------
    dataset : RoutingDataset
        Rows in any order; ids may repeat.

    Returns
    -------
    merged : RoutingDataset
        One row per query id, in order of first appearance.
    n_merged : int
        How many rows were folded into an earlier row with the same id.
    """
    _, first, group = np.unique(dataset.query_ids, return_index=True, return_inverse=True)
    if first.size == dataset.n_queries:
        return dataset, 0
    merged = dataset.subset(np.sort(first))
    target = np.argsort(np.argsort(first))[group]
    labels = merged.labels
    merged_arrays = [merged.quality, merged.costs, merged.responses, merged.logprobs]
    row_arrays = [dataset.quality, dataset.costs, dataset.responses, dataset.logprobs]
    for row in np.setdiff1d(np.arange(dataset.n_queries), first):
        into, incoming = target[row], dataset.labels[row]
        clash = ~np.isnan(labels[into]) & ~np.isnan(incoming) & (labels[into] != incoming)
        if clash.any():
            raise ValueError(
                f"Query id {str(dataset.query_ids[row])!r} appears twice with different labels "
                f"for {[m for m, c in zip(dataset.model_names, clash, strict=True) if c]}. "
                "An id must name one query: fix the ids, or load the files separately."
            )
        fill = np.isnan(labels[into]) & ~np.isnan(incoming)
        labels[into, fill] = incoming[fill]
        for values, row_values in zip(merged_arrays, row_arrays, strict=True):
            if values is not None:
                values[into, fill] = row_values[row, fill]
    return merged, dataset.n_queries - first.size


def merge_and_report(dataset: RoutingDataset, origin: str) -> RoutingDataset:
    """Merge rows sharing a query id (see :func:`merge_duplicate_ids`) and warn how many."""
    merged, n_merged = merge_duplicate_ids(dataset)
    if n_merged:
        warnings.warn(
            f"{origin}: merged {n_merged} row(s) that repeat a query id into the earlier "
            f"row ({dataset.n_queries} rows -> {merged.n_queries} queries).",
            DuplicateQueriesWarning,
            stacklevel=3,
        )
    return merged


def handle_missing(dataset: RoutingDataset, missing: MissingPolicy, origin: str) -> RoutingDataset:
    """Report unknown (NaN) labels per model, then keep them or drop their queries.

    Parameters
    ----------
    dataset : RoutingDataset
        The loaded data.
    missing : {"keep", "drop_queries"}
        ``"keep"`` leaves NaN cells (unknown, never wrong); ``"drop_queries"`` removes
        every query with at least one unknown label.
    origin : str
        The file or data name used in the warning.

    Returns
    -------
    RoutingDataset
        ``dataset`` itself, or its complete rows. A :class:`MissingLabelsWarning` says
        how many cells were missing per model whenever there were any.
    """
    if missing not in ("keep", "drop_queries"):
        raise ValueError(f"missing must be 'keep' or 'drop_queries', got {missing!r}.")
    unknown = np.isnan(dataset.labels)
    if not unknown.any():
        return dataset
    per_model = ", ".join(
        f"{m}: {c}" for m, c in zip(dataset.model_names, unknown.sum(axis=0), strict=True) if c
    )
    incomplete = unknown.any(axis=1)
    summary = (
        f"{origin}: {unknown.sum()} of {unknown.size} correctness cells are missing "
        f"({per_model}) in {incomplete.sum()} of {dataset.n_queries} queries"
    )
    if missing == "keep":
        warnings.warn(
            f"{summary}; kept as NaN (unknown, not wrong). Pass missing='drop_queries' to "
            "drop those queries.",
            MissingLabelsWarning,
            stacklevel=3,
        )
        return dataset
    warnings.warn(f"{summary}; dropped those queries.", MissingLabelsWarning, stacklevel=3)
    return dataset.subset(~incomplete)


# ---------------------------------------------------------------------------
# The public loader


def load_table(
    path: str | Path,
    *,
    layout: Literal["auto", "long", "wide"] = "auto",
    threshold: float = 0.5,
    missing: MissingPolicy = "keep",
    query_column: str = "query",
    model_column: str = "model",
    label_column: str = "label",
    id_column: str = "query_id",
    source_column: str = "source",
    name: str | None = None,
) -> RoutingDataset:
    """Load a long- or wide-form table of per-(query, model) outcomes.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.csv``, ``.tsv``, ``.jsonl``, ``.json`` (list of records) or ``.parquet``
        file (Parquet needs ``pip install racer-routing[parquet]``).
    layout : {"auto", "long", "wide"}, default "auto"
        ``"auto"`` reads long form when the table has ``model_column`` and
        ``label_column``, wide form otherwise.
    threshold : float, default 0.5
        Graded outcomes in [0, 1] that are not all 0/1 are kept in ``quality`` and
        labelled ``quality >= threshold``.
    missing : {"keep", "drop_queries"}, default "keep"
        What to do with unknown outcomes (empty cells, or absent pairs in long form).
    query_column, model_column, label_column, id_column, source_column : str
        Column names. Long form also reads ``cost``, ``response`` and ``logprobs``
        columns; wide form reads ``<model>|cost``, ``<model>|response`` and
        ``<model>|logprobs`` (token log-probabilities, see the module's docstring).
        Without an id column, ids are ``<name>:<row>``; without a source column, every
        source is ``name``.
    name : str, optional
        The dataset name; the file stem by default.

    Returns
    -------
    RoutingDataset

    Examples
    --------
    >>> data = load_table("outcomes.jsonl", threshold=0.7)  # doctest: +SKIP
    """
    columns, rows = read_table(path)
    path = Path(path)
    name = name or path.stem
    if layout == "auto":
        layout = "long" if model_column in columns and label_column in columns else "wide"
    common = dict(
        origin=path.name,
        name=name,
        query_column=query_column,
        id_column=id_column,
        source_column=source_column,
        threshold=threshold,
    )
    if layout == "long":
        dataset = long_rows_to_dataset(
            columns, rows, model_column=model_column, label_column=label_column, **common
        )
    elif layout == "wide":
        dataset = wide_rows_to_dataset(columns, rows, **common)
    else:
        raise ValueError(f"layout must be 'auto', 'long' or 'wide', got {layout!r}.")
    return handle_missing(dataset, missing, path.name)
