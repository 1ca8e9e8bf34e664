"""Inputs and outputs of batch routing: files, folders and URIs read and written with pyarrow.

pyarrow (the ``parquet`` extra) is imported on first use, so that importing this module,
and plain-text routing, work without it.

The input is cut into *work units*: a slice of at most ``unit_rows`` rows of one
Parquet row group, or one whole JSONL file. Units, and the batches inside them, start
at fixed places of the input (a row group or file start, then every ``batch_size``
rows), so every engine embeds and scores exactly the same batches and its output is
bit-identical: base routers multiply matrices whose rounding depends on the batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

__all__ = [
    "FORMATS",
    "PYARROW_HINT",
    "OrderedWriter",
    "WorkUnit",
    "input_files",
    "read_unit",
    "require_pyarrow",
    "work_units",
]

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
PYARROW_HINT = 'pip install "racer-routing[parquet]"'


def require_pyarrow() -> None:
    """Raise an ImportError that says how to install pyarrow when it is missing.

    Raises
    ------
    ImportError
        pyarrow is not installed.
    """
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(
            f"Routing Parquet or JSONL files needs pyarrow: {PYARROW_HINT}."
        ) from None


@dataclass(frozen=True)
class WorkUnit:
    """Rows ``start:stop`` of one Parquet row group, or a whole JSONL file (``row_group`` None).

    ``stop`` is None for a whole JSONL file.
    """

    uri: str
    format: str
    row_group: int | None = None
    start: int = 0
    stop: int | None = None


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path in it of a local path or a URI (s3://, gs://...)."""
    require_pyarrow()
    import pyarrow.fs as pafs

    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), str(Path(location).resolve())


def _uri(filesystem: pafs.FileSystem, path: str, location: str) -> str:
    if "://" not in location:
        return path
    scheme = location.split("://", 1)[0]
    return f"{scheme}://{path}"


def _format_of(path: str) -> str | None:
    return FORMATS.get(Path(path).suffix.lower())


def input_files(locations: Sequence[str]) -> tuple[list[str], str]:
    """The files to route, in order, and their common format.

    Parameters
    ----------
    locations : sequence of str
        Parquet or JSONL files, folders of them (searched recursively, files taken in
        sorted path order), or URIs that pyarrow reads (``s3://``, ``gs://``, ``hdfs://``).

    Returns
    -------
    files : list of str
        The files, in the order given (each folder's files sorted by path).
    format : {"parquet", "jsonl"}

    Raises
    ------
    FileNotFoundError
        A location that does not exist, or a folder without Parquet/JSONL files.
    ValueError
        Files of another format, or a mix of Parquet and JSONL.
    """
    import pyarrow.fs as pafs

    files: list[str] = []
    for location in locations:
        filesystem, path = _filesystem(location)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"The input {location!r} does not exist.")
        if info.type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            inside = sorted(
                f.path for f in found if f.type == pafs.FileType.File and _format_of(f.path)
            )
            if not inside:
                raise FileNotFoundError(
                    f"The input folder {location!r} holds no Parquet or JSONL files "
                    f"(suffixes {sorted(FORMATS)})."
                )
            files += [_uri(filesystem, p, location) for p in inside]
        else:
            if _format_of(path) is None:
                raise ValueError(
                    f"The input {location!r} is neither Parquet nor JSONL: name it with one "
                    f"of the suffixes {sorted(FORMATS)}."
                )
            files.append(_uri(filesystem, path, location))
    formats = {_format_of(f) for f in files}
    if len(formats) != 1:
        raise ValueError("Route Parquet or JSONL files, not both in one run: convert one kind.")
    return files, formats.pop()


def work_units(files: Sequence[str], file_format: str, unit_rows: int) -> list[WorkUnit]:
    """The input cut into work units, in input order (see the module docstring).

    Parquet footers are read here (no data); a JSONL file is one unit.
    """
    if unit_rows < 1:
        raise ValueError(f"unit_rows must be at least 1; got {unit_rows}.")
    units: list[WorkUnit] = []
    for uri in files:
        if file_format == "jsonl":
            units.append(WorkUnit(uri, "jsonl"))
            continue
        filesystem, path = _filesystem(uri)
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(path, filesystem=filesystem).metadata
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            for start in range(0, rows, unit_rows):
                units.append(WorkUnit(uri, "parquet", group, start, min(start + unit_rows, rows)))
    return units


def read_unit(
    unit: WorkUnit, columns: Sequence[str], cache: dict[str, Any] | None = None
) -> pa.Table:
    """The rows of one unit, only ``columns`` (those missing from the file are left out).

    ``cache`` (a dict owned by the caller) keeps the last Parquet row group read, so that
    consecutive units of one row group read it once.
    """
    filesystem, path = _filesystem(unit.uri)
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if unit.format == "jsonl":
        with filesystem.open_input_stream(path) as stream:
            table = pajson.read_json(stream)
        return table.select([c for c in columns if c in table.column_names])
    key = f"{unit.uri}#{unit.row_group}"
    if cache is not None and cache.get("key") == key:
        table = cache["table"]
    else:
        parquet = pq.ParquetFile(path, filesystem=filesystem)
        names = set(parquet.schema_arrow.names)
        table = parquet.read_row_group(unit.row_group, columns=[c for c in columns if c in names])
        if cache is not None:
            cache.update(key=key, table=table)
    stop = table.num_rows if unit.stop is None else unit.stop
    return table.slice(unit.start, stop - unit.start)


class OrderedWriter:
    """Writes routed batches, in the order received, to one Parquet or JSONL file or a folder.

    ``path`` ending in ``.parquet`` or ``.jsonl`` is one file; any other path is a folder
    of Parquet parts ``part-00000.parquet``, ... of at most ``rows_per_part`` rows each, in
    order. Rows without an input id get their 0-based row number over the whole input.

    Parameters
    ----------
    path : str
        Output file, folder or URI.
    rows_per_part : int, default=1_000_000
        Rows per part file when ``path`` is a folder.
    """

    def __init__(self, path: str, rows_per_part: int = 1_000_000) -> None:
        self.filesystem, self.path = _filesystem(path)
        self.format = _format_of(self.path) if Path(self.path).suffix else None
        self.rows_per_part = rows_per_part
        self.n_rows = 0
        self._part = 0
        self._part_rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._stream: Any = None
        if self.format is None:
            import pyarrow.fs as pafs

            found = self.filesystem.get_file_info(
                pafs.FileSelector(self.path, allow_not_found=True)
            )
            if found:
                raise ValueError(
                    f"The output folder {path!r} is not empty; remove it or choose another, "
                    "so that old parts do not mix with new ones."
                )
            self.filesystem.create_dir(self.path, recursive=True)
        else:
            parent = str(Path(self.path).parent)
            self.filesystem.create_dir(parent, recursive=True)

    def _with_ids(self, table: pa.Table) -> pa.Table:
        if table.column_names[0] == "id":
            return table
        import pyarrow as pa

        ids = pa.array([str(i) for i in range(self.n_rows, self.n_rows + table.num_rows)])
        return table.add_column(0, "id", ids)

    def _parquet_writer(self, schema: pa.Schema) -> pq.ParquetWriter:
        import pyarrow.parquet as pq

        if self.format == "parquet":
            if self._parquet is None:
                self._parquet = pq.ParquetWriter(self.path, schema, filesystem=self.filesystem)
            return self._parquet
        if self._parquet is not None and self._part_rows >= self.rows_per_part:
            self._parquet.close()
            self._parquet, self._part, self._part_rows = None, self._part + 1, 0
        if self._parquet is None:
            part = f"{self.path}/part-{self._part:05d}.parquet"
            self._parquet = pq.ParquetWriter(part, schema, filesystem=self.filesystem)
        return self._parquet

    def write(self, table: pa.Table) -> None:
        """Append routed rows (``id`` first when the input had ids)."""
        table = self._with_ids(table)
        if self.format == "jsonl":
            if self._stream is None:
                self._stream = self.filesystem.open_output_stream(self.path)
            lines = "".join(json.dumps(row) + "\n" for row in table.to_pylist())
            self._stream.write(lines.encode("utf-8"))
        else:
            start = 0
            while start < table.num_rows:
                writer = self._parquet_writer(table.schema)
                room = table.num_rows - start
                if self.format is None:
                    room = min(room, self.rows_per_part - self._part_rows)
                writer.write_table(table.slice(start, room))
                self._part_rows += room
                start += room
        self.n_rows += table.num_rows

    def close(self) -> None:
        """Finish the output files."""
        if self._parquet is not None:
            self._parquet.close()
        if self._stream is not None:
            self._stream.close()
