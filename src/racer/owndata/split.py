"""Split one data file into train, calibration and test files of the same format.

``racer split`` is how a newcomer gets the ``--train``, ``--calibration`` and ``--test``
files the other commands take from one file of their own: a RouterBench-style CSV, a
RouterDC JSON list, or JSONL (``racer collect`` / ``racer grade`` output, one row per
query and model). Records are copied unchanged; only which file each goes to is drawn.

A query never lands in two splits: records that share a query id or a query text
(case and spacing ignored) form one query and move together. The draw is seeded, and
stratified by a column when one is given (each value split in the same proportions).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPLIT_NAMES", "SplitFile", "query_groups", "split_file", "split_queries"]

SPLIT_NAMES = ("train", "calibration", "test")
TEXT_FIELDS = ("query", "prompt", "question")
ID_FIELDS = ("query_id", "sample_id", "id")
FORMATS = (".csv", ".json", ".jsonl")


@dataclass(frozen=True)
class SplitFile:
    """One written split: its name, path, and how many queries and records it holds."""

    name: str
    path: Path
    n_queries: int
    n_records: int


def _read(path: Path) -> tuple[list[dict[str, Any]], list[str] | None]:
    """The records of a CSV, JSON list or JSONL file (and the CSV header)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                return list(reader), list(reader.fieldnames or [])
        if suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(records, list):
                raise ValueError(
                    f"{path.name}: a JSON file to split must hold a list of records (RouterDC "
                    f"format); it holds a {type(records).__name__}."
                )
            return records, None
        records = []
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(
                            f"{path.name}, line {number} is not valid JSON: {error.msg}."
                        ) from None
        return records, None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path.name}: not a UTF-8 text file (byte at position {error.start})."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, column "
            f"{error.colno}."
        ) from None


def query_groups(records: Sequence[dict[str, Any]]) -> np.ndarray:
    """The query each record belongs to, as integers 0..Q-1 in order of first appearance.

    Records sharing an id (``query_id``, ``sample_id`` or ``id``) or a text (``query``,
    ``prompt`` or ``question``, case and spacing ignored) are one query.

    Raises
    ------
    ValueError
        When a record has neither an id nor a text field.
    """
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    record_keys = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ValueError(f"record {number} is not an object with named fields.")
        keys = [f"id:{record[f]}" for f in ID_FIELDS if record.get(f) not in (None, "")][:1]
        text = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
        if text is not None:
            keys.append("text:" + " ".join(text.casefold().split()))
        if not keys:
            raise ValueError(
                f"record {number} has no query id ({', '.join(ID_FIELDS)}) and no query text "
                f"({', '.join(TEXT_FIELDS)}); cannot tell which query it belongs to."
            )
        for key in keys:
            parent.setdefault(key, key)
        for key in keys[1:]:
            parent[root(key)] = root(keys[0])
        record_keys.append(keys[0])
    numbers: dict[str, int] = {}
    return np.array([numbers.setdefault(root(k), len(numbers)) for k in record_keys], dtype=int)


def split_queries(
    strata: Sequence[str], fractions: Sequence[float], seed: int = 0
) -> np.ndarray:
    """The split (0, 1, 2, ...) of each query, drawn per stratum in the given proportions.

    Parameters
    ----------
    strata : sequence of str, length Q
        The stratum of each query (all equal for no stratification).
    fractions : sequence of float
        The share of each split; positive, summing to 1.
    seed : int
        Seed of the draw.

    Returns
    -------
    numpy.ndarray of int, shape (Q,)
        Within each stratum of size m, split k gets ``round(m * cumsum)`` cut points:
        the counts differ from ``m * fraction`` by less than one.
    """
    rng = np.random.default_rng(seed)
    strata = np.asarray(strata, dtype=object)
    assignment = np.empty(len(strata), dtype=int)
    cuts = np.cumsum(fractions)
    for value in sorted(set(strata.tolist()), key=str):
        members = np.flatnonzero(strata == value)
        order = rng.permutation(members)
        bounds = np.round(cuts * len(order)).astype(int)
        assignment[order] = np.searchsorted(bounds, np.arange(len(order)), side="right")
    return assignment


def _write(path: Path, records: list[dict[str, Any]], header: list[str] | None) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header or [])
            writer.writeheader()
            writer.writerows(records)
    elif suffix == ".json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )


def split_file(
    path: str | Path,
    out: str | Path,
    *,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    group_by: str | None = None,
    overwrite: bool = False,
) -> list[SplitFile]:
    """Split ``path`` into ``out/train``, ``out/calibration`` and ``out/test`` files.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.csv``, ``.json`` (a list of records) or ``.jsonl`` file.
    out : str or pathlib.Path
        The folder for the three files (created), each with ``path``'s suffix.
    fractions : sequence of 3 floats, default (0.6, 0.2, 0.2)
        Shares of the queries for train, calibration and test; positive, summing to 1.
    seed : int, default 0
        Seed of the draw.
    group_by : str, optional
        A column to stratify by (for example RouterBench's ``eval_name``).
    overwrite : bool, default False
        Replace split files already in ``out``.

    Returns
    -------
    list of SplitFile
        The files written, in the order train, calibration, test.

    Raises
    ------
    ValueError
        Bad fractions, an unknown format or column, too few queries, or split files
        already in ``out`` without ``overwrite=True``.
    """
    path, out = Path(path), Path(out)
    if not path.is_file():
        raise FileNotFoundError(f"No data file at {str(path)!r}; pass an existing file.")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{path.name}: can split {', '.join(FORMATS)} files (RouterBench CSV, RouterDC "
            f"JSON, JSONL); got {suffix or 'no suffix'!r}."
        )
    fractions = [float(f) for f in fractions]
    if len(fractions) != len(SPLIT_NAMES) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"fractions must be {len(SPLIT_NAMES)} positive shares summing to 1 (train, "
            f"calibration, test), for example 0.6,0.2,0.2; got {fractions}."
        )
    targets = [out / f"{name}{suffix}" for name in SPLIT_NAMES]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{str(out)!r} is a file; choose a folder for the split files.")
    present = [t.name for t in targets if t.exists()]
    if present and not overwrite:
        raise ValueError(
            f"{str(out)!r} already holds {present}; pass overwrite=True to replace them, or "
            "choose another folder."
        )
    records, header = _read(path)
    groups = query_groups(records)
    n_queries = int(groups.max()) + 1 if len(groups) else 0
    if n_queries < len(SPLIT_NAMES):
        raise ValueError(
            f"{path.name} holds {n_queries} queries; splitting needs at least "
            f"{len(SPLIT_NAMES)}, one per split."
        )
    first = np.unique(groups, return_index=True)[1]
    if group_by is None:
        strata = ["all"] * n_queries
    else:
        if not any(group_by in record for record in records):
            raise ValueError(
                f"{path.name} has no column {group_by!r} to stratify by; its columns are "
                f"{sorted(records[0])}."
            )
        strata = [str(records[i].get(group_by)) for i in first]
    split_of_query = split_queries(strata, fractions, seed)
    sizes = np.bincount(split_of_query, minlength=len(SPLIT_NAMES))
    if not sizes.all():
        raise ValueError(
            f"{path.name}'s {n_queries} queries give an empty {SPLIT_NAMES[int(np.argmin(sizes))]} "
            f"split with fractions {fractions}; use larger shares or more data."
        )
    split_of_record = split_of_query[groups]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (name, target) in enumerate(zip(SPLIT_NAMES, targets, strict=True)):
        chosen = [r for r, s in zip(records, split_of_record, strict=True) if s == k]
        _write(target, chosen, header)
        written.append(SplitFile(name, target, int((split_of_query == k).sum()), len(chosen)))
    return written
