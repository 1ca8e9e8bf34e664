"""One entry point that reads any supported routing-data file, folder or list of files."""

from __future__ import annotations

import csv
import inspect
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from racer.data.dataset import RoutingDataset
from racer.data.generic import (
    TABLE_SUFFIXES,
    MissingLabelsWarning,
    MissingPolicy,
    existing_file,
    handle_missing,
    load_table,
    merge_and_report,
)
from racer.data.routellm import is_routellm_header, load_routellm
from racer.data.routerbench import is_routerbench_header, load_routerbench
from racer.data.routerdc import is_routerdc_records, load_routerdc

__all__ = ["concat_datasets", "detect_format", "load_dataset"]

Format = Literal["routerdc", "routerbench", "routellm", "table"]
PathLike = str | Path

LOADERS: dict[str, Callable[..., RoutingDataset]] = {
    "routerdc": load_routerdc,
    "routerbench": load_routerbench,
    "routellm": load_routellm,
    "table": load_table,
}


def detect_format(path: PathLike) -> Format:
    """Which loader reads ``path``: ``"routerdc"``, ``"routerbench"``, ``"routellm"`` or
    ``"table"``.

    A JSON list of objects with a ``scores`` mapping is RouterDC; a CSV with
    ``sample_id``, ``prompt`` and ``<model>|total_cost`` columns is RouterBench; a CSV
    with ``prompt`` and ``<model>_response`` columns is RouteLLM's; any other CSV, TSV,
    JSONL, JSON list of records or Parquet file is a generic table.
    """
    path = existing_file(path, "data file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "routerdc" if is_routerdc_records([_first_json_element(path)]) else "table"
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        if is_routerbench_header(header):
            return "routerbench"
        return "routellm" if is_routellm_header(header) else "table"
    if suffix in TABLE_SUFFIXES:
        return "table"
    raise ValueError(
        f"Cannot read {path.name!r}: unknown format {suffix!r}. Expected RouterDC JSON, "
        f"RouterBench CSV, or a table ({', '.join(TABLE_SUFFIXES)})."
    )


def _first_json_element(path: Path) -> Any:
    """The first element of a JSON list, or None; the rest is left for the loader to parse."""
    text = path.read_text(encoding="utf-8")
    opening = re.match(r"\s*\[\s*", text)
    if opening is None:
        return None
    try:
        return json.JSONDecoder().raw_decode(text, opening.end())[0]
    except json.JSONDecodeError:  # the loader reports it with the file's name
        return None


def _expand(paths: PathLike | Sequence[PathLike]) -> tuple[list[Path], str]:
    """The files to read and a default name for the pooled data."""
    if isinstance(paths, str | Path):
        path = Path(paths)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"No data files in the folder {str(path)!r}; expected files ending in "
                    f"{', '.join(TABLE_SUFFIXES)}."
                )
            return files, path.name
        return [path], path.stem
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("Expected a path or a non-empty list of paths, got an empty list.")
    return files, "+".join(p.stem for p in files)


def _load_one(path: Path, data_format: str, options: dict[str, Any]) -> RoutingDataset:
    try:
        return _read_one(path, data_format, options)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not a UTF-8 text file (byte {error.object[error.start]:#04x} at "
            f"position {error.start} cannot be decoded). Expected RouterDC JSON, RouterBench "
            "CSV or a table; re-export it as UTF-8."
        ) from None


def _read_one(path: Path, data_format: str, options: dict[str, Any]) -> RoutingDataset:
    if data_format == "auto":
        data_format = detect_format(path)
    if data_format not in LOADERS:
        raise ValueError(f"format must be 'auto' or one of {sorted(LOADERS)}, got {data_format!r}.")
    loader = LOADERS[data_format]
    accepted = set(inspect.signature(loader).parameters) - {"path", "missing", "name"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(
            f"{path.name} is read as {data_format!r}, which takes the options "
            f"{sorted(accepted)}; got unknown option(s) {unknown}."
        )
    with warnings.catch_warnings():  # reported once, for the pooled data, by load_dataset
        warnings.simplefilter("ignore", MissingLabelsWarning)
        return loader(path, missing="keep", **options)


def concat_datasets(
    datasets: Sequence[RoutingDataset], *, sources: Sequence[str] | None = None, name: str
) -> RoutingDataset:
    """Stack datasets that share the same models (in any column order) into one.

    Parameters
    ----------
    datasets : sequence of RoutingDataset
        Parts with the same set of models; columns follow the first part's order.
    sources : sequence of str, optional
        One source per part that replaces its rows' sources (for example file stems).
    name : str
        The pooled dataset's name.

    Returns
    -------
    RoutingDataset
        Rows of every part in order. ``quality`` where only some parts have one is
        filled with the others' 0/1 labels; unknown costs are NaN, responses and logprobs None.
    """
    first = datasets[0]
    for part in datasets[1:]:
        if set(part.model_names) != set(first.model_names):
            raise ValueError(
                f"Cannot pool {first.name!r} and {part.name!r}: their models differ "
                f"(only in the first: {sorted(set(first.model_names) - set(part.model_names))}, "
                f"only in the second: {sorted(set(part.model_names) - set(first.model_names))})."
                " Load them separately, or keep common models with select_models()."
            )
    parts = [part.select_models(first.model_names) for part in datasets]

    def stack(attribute: str, fill: Callable[[RoutingDataset], np.ndarray]) -> np.ndarray | None:
        values = [getattr(part, attribute) for part in parts]
        if all(v is None for v in values):
            return None
        return np.concatenate(
            [fill(p) if v is None else v for p, v in zip(parts, values, strict=True)]
        )

    row_sources = (
        np.concatenate([np.full(p.n_queries, s) for p, s in zip(parts, sources, strict=True)])
        if sources is not None
        else np.concatenate([p.sources for p in parts])
    )
    return RoutingDataset(
        queries=np.concatenate([p.queries for p in parts]),
        model_names=first.model_names,
        labels=np.concatenate([p.labels for p in parts]),
        quality=stack("quality", lambda p: p.labels),
        costs=stack("costs", lambda p: np.full(p.labels.shape, np.nan)),
        responses=stack("responses", lambda p: np.full(p.labels.shape, None, dtype=object)),
        logprobs=stack("logprobs", lambda p: np.full(p.labels.shape, None, dtype=object)),
        query_ids=np.concatenate([p.query_ids for p in parts]),
        sources=row_sources,
        name=name,
    )


def load_dataset(
    path: PathLike | Sequence[PathLike],
    *,
    format: Literal["auto", "routerdc", "routerbench", "routellm", "table"] = "auto",
    models: Sequence[str] | None = None,
    missing: MissingPolicy = "keep",
    name: str | None = None,
    **options: Any,
) -> RoutingDataset:
    """Load routing data from a file, a folder or a list of files, whatever the format.

    Parameters
    ----------
    path : str, pathlib.Path, or a sequence of them
        A RouterDC JSON file, a RouterBench CSV, a RouteLLM response CSV
        (:func:`racer.data.routellm.load_routellm`), a generic long or wide table (CSV,
        TSV, JSONL, JSON records, Parquet), a folder of such files, or a list of files.
        Several files are pooled: they must score the same models, each row's source
        becomes its file stem, and rows that repeat a query id across files are merged
        (with a warning).
    format : {"auto", "routerdc", "routerbench", "routellm", "table"}, default "auto"
        The reader; ``"auto"`` picks it per file (see :func:`detect_format`).
    models : sequence of str, optional
        Keep only these models, in this order; unknown names raise ValueError.
    missing : {"keep", "drop_queries"}, default "keep"
        Unknown outcomes are NaN, never wrong: keep them, or drop the queries that
        have one (among ``models``). A warning gives the counts per model.
    name : str, optional
        The dataset name; the file stem, folder name or joined stems by default.
    **options
        Passed to the reader: ``kind``, ``pass_threshold`` (RouterDC);
        ``merge_duplicates``, ``read_responses``, ``threshold`` (RouterBench);
        ``layout``, ``threshold`` and column names (tables, see :func:`load_table`).

    Returns
    -------
    RoutingDataset

    Examples
    --------
    >>> data = load_dataset("routerdc/gsm8k-test.json", pass_threshold=0.7)  # doctest: +SKIP
    >>> pooled = load_dataset(["mmlu_train.json", "gsm8k-train.json"])  # doctest: +SKIP
    >>> set(pooled.sources)  # doctest: +SKIP
    {'mmlu_train', 'gsm8k-train'}
    """
    files, default_name = _expand(path)
    name = name or default_name
    parts = [_load_one(file, format, options) for file in files]
    if len(parts) == 1:
        dataset = parts[0]
    else:
        dataset = concat_datasets(parts, sources=[f.stem for f in files], name=name)
        dataset = merge_and_report(dataset, name)
    if models is not None:
        dataset = dataset.select_models(list(models))
    dataset = handle_missing(dataset, missing, name)
    return replace(dataset, name=name)
