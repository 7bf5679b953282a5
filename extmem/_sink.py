"""Streaming parquet (and CSV) output and model folders, written atomically (see :mod:`extmem._atomic`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from extmem._atomic import atomic_file, write_atomically, write_json
from extmem._defaults import (
    BOOSTER_MODEL_FILE,
    DEFAULT_ROW_GROUP_ROWS,
    INCREMENTAL_MODEL_FILE,
    MODEL_FOLDER_FILES,
    REPORT_FILE,
    output_row_group_bytes,
)
from extmem._destinations import RemoteFolder, check_output_folder, publish_folder, staging_folder
from extmem.errors import OptionError

DATA_PAGE_BYTES = 1 << 20
"""Parquet data page size: pages of about 1 MiB keep decoding buffers small and reads selective."""


TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "CSV", "": "parquet"}
"""Formats of a streamed table by its file's suffix."""


def check_writable(schema: pa.Schema, file_format: str, path: str | os.PathLike[str], option: str = "out") -> None:
    """Refuse, before any work, a column the format cannot hold (CSV has no lists, structs or maps)."""
    if file_format != "CSV":
        return
    for field in schema:
        try:
            pa_csv.write_csv(pa.schema([field]).empty_table(), pa.BufferOutputStream())
        except pa.ArrowException:
            msg = f"The column {field.name!r} is {field.type}, which a CSV file cannot hold ('{option}' {os.fspath(path)!r}); write parquet instead."
            raise OptionError(msg, options=(option,)) from None


PENDING_PIECES = 8
"""Output batches a sink holds apart before joining them. Under the command line's allocator settings, small output
batches held until a row group fills pinned glibc's heap between the batches decoded meanwhile: predictions of 120,000
rows of 4,099 columns in one row group, in 256-row batches, peaked at 2.3 GiB; joined every 8 batches, 0.5 GiB."""


class TableSink:
    """Streams record batches into one parquet file (or CSV file, ``file_format="CSV"``), buffered into row groups of ``row_group_rows``.

    A row group ends early once it holds ``row_group_bytes`` (default: see :func:`output_row_group_bytes`). Use as a context
    manager: the file replaces ``path`` on a clean exit (only if no file has that name, without
    ``replace``) and is deleted otherwise. Memory is one row group of output (see
    :func:`extmem.read._costs.sink_bytes`), whatever the number of rows written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        *,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        row_group_bytes: int | None = None,
        compression: str = "zstd",
        replace: bool = True,
        file_format: str = "parquet",
    ) -> None:
        self.path = path
        self.file_format = file_format
        self.replace = replace
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = output_row_group_bytes(len(schema)) if row_group_bytes is None else row_group_bytes
        self.compression = compression
        self.rows = 0
        self._stack = contextlib.ExitStack()
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self._pending: list[pa.RecordBatch] = []

    def __enter__(self) -> Self:
        file = self._stack.enter_context(atomic_file(self.path, replace=self.replace))
        if self.file_format == "CSV":
            self._writer = pa_csv.CSVWriter(file, self.schema)
        else:
            self._writer = pq.ParquetWriter(file, self.schema, compression=self.compression, data_page_size=DATA_PAGE_BYTES)
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        """Queue ``batch`` (whose schema must equal the sink's); each full row group is written at once."""
        self._pending.append(batch)
        self.rows += batch.num_rows
        if sum(piece.nbytes for piece in self._pending) >= self.row_group_bytes and self._pending_rows < self.row_group_rows:
            self._write(pa.Table.from_batches(self._pending, self.schema))  # a row group of fewer, wider rows
            self._pending = []
            return
        if len(self._pending) >= PENDING_PIECES:  # one block, not many small ones pinning the heap between the batches read meanwhile
            self._pending = pa.Table.from_batches(self._pending, self.schema).combine_chunks().to_batches()
        while self._pending_rows >= self.row_group_rows:
            table = pa.Table.from_batches(self._pending, self.schema)
            self._write(table.slice(0, self.row_group_rows))
            rest = table.slice(self.row_group_rows)
            self._pending = rest.to_batches()

    @property
    def _pending_rows(self) -> int:
        return sum(piece.num_rows for piece in self._pending)

    def _write(self, table: pa.Table) -> None:
        if table.num_rows and isinstance(self._writer, pq.ParquetWriter):
            self._writer.write_table(table, row_group_size=table.num_rows)
        elif table.num_rows and self._writer is not None:
            self._writer.write_table(table)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None and self._pending:
                self._write(pa.Table.from_batches(self._pending, self.schema))
            self._pending = []
            if self._writer is not None:
                self._writer.close()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        self._stack.__exit__(exc_type, exc, tb)


def check_model_folder(path: str | os.PathLike[str], *, overwrite: bool) -> Path | RemoteFolder:
    """Refuse, before any work, a model folder that holds anything but an extmem model (or anything, without ``overwrite``)."""
    return check_output_folder(path, overwrite=overwrite, own_names=MODEL_FOLDER_FILES, manifest=None)


def publish_model(folder: Path | RemoteFolder, model_file: str, model: bytes, report: dict[str, Any], *, replace: bool) -> dict[str, Any]:
    """Write a model folder, ``model_file`` holding ``model`` and ``report.json``, and swap it in as ``folder`` in one step.

    The report records the folder's files and the model file's checksum, which loading checks
    before parsing it; it is returned as written. What ``folder`` held before (a previous model,
    a finished run's checkpoint) goes; without ``replace``, a folder another run filled meanwhile stays.
    """
    report = {**report, "files": sorted({model_file, REPORT_FILE}), "checksums": {model_file: sha256(model)}}
    with staging_folder(folder) as staging:
        write_atomically(staging.path / model_file, lambda file: file.write(model))
        write_json(staging.path / REPORT_FILE, report)
        publish_folder(staging, folder, replace=replace)
    return report


def sha256(content: bytes) -> str:
    """The checksum recorded for a model file."""
    return "sha256:" + hashlib.sha256(content).hexdigest()


__all__ = [
    "BOOSTER_MODEL_FILE",
    "INCREMENTAL_MODEL_FILE",
    "TABLE_FORMATS",
    "TableSink",
    "check_model_folder",
    "check_writable",
    "publish_model",
    "write_atomically",
    "write_json",
]
