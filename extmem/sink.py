"""Atomic outputs: files appear complete under their final name, or not at all.

Everything is written to a hidden ``.NAME.partial`` file beside the target and renamed into
place only when complete; on any error (or Ctrl-C) the partial file is deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_ROW_GROUP_ROWS = 65536
REPORT_FILE = "report.json"
"""The run report written beside a trained model."""
BOOSTER_MODEL_FILE = "model.ubj"
"""An XGBoost model in a model folder."""
INCREMENTAL_MODEL_FILE = "model.npz"
"""An incremental (scikit-learn) model in a model folder."""
DATA_PAGE_BYTES = 1 << 20
"""Parquet data page size: pages of about 1 MiB keep decoding buffers small and reads selective."""


def partial_path(path: Path) -> Path:
    """The hidden name ``path`` is written under until it is complete."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def write_atomically(path: str | os.PathLike[str], write: Callable[[str], object]) -> None:
    """Write through ``write(partial_path)``, then rename into place: never a half-written file."""
    target = Path(path)
    partial = partial_path(target)
    try:
        write(str(partial))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (numpy scalars and arrays become numbers and lists)."""
    text = json.dumps(data, indent=2, default=_json_default)
    write_atomically(path, lambda partial: Path(partial).write_text(text))


class ParquetSink:
    """Streams record batches into one parquet file, buffered into row groups of ``row_group_rows``.

    Use as a context manager: the file is renamed into place on a clean exit and deleted
    otherwise. Memory is one row group of output, whatever the number of rows written.
    """

    def __init__(
        self, path: str | os.PathLike[str], schema: pa.Schema, *, row_group_rows: int = DEFAULT_ROW_GROUP_ROWS, compression: str = "zstd"
    ) -> None:
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.compression = compression
        self.rows = 0
        self._partial = partial_path(self.path)
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def __enter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._partial, self.schema, compression=self.compression, data_page_size=DATA_PAGE_BYTES)
        return self

    def write(self, batch: pa.RecordBatch) -> None:
        """Queue ``batch`` (whose schema must equal the sink's); each full row group is written at once."""
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self._pending_rows >= self.row_group_rows:
            table = pa.Table.from_batches(self._pending, self.schema)
            self._write(table.slice(0, self.row_group_rows))
            rest = table.slice(self.row_group_rows)
            self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def _write(self, table: pa.Table) -> None:
        if table.num_rows and self._writer is not None:
            self._writer.write_table(table, row_group_size=table.num_rows)

    def _flush(self) -> None:
        if self._pending:
            self._write(pa.Table.from_batches(self._pending, self.schema))
        self._pending, self._pending_rows = [], 0

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self._flush()
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                os.replace(self._partial, self.path)
        finally:
            self._partial.unlink(missing_ok=True)


def publish_model(folder: Path, model_file: str, write_model: Callable[[str], object], report: dict[str, Any]) -> None:
    """Write a model folder: ``model_file`` through ``write_model`` and ``report.json``, each atomically.

    The model file of the other kind goes, so that the folder holds only the model just written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / model_file, write_model)
    for name in (BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE):
        if name != model_file:
            (folder / name).unlink(missing_ok=True)
    write_json(folder / REPORT_FILE, report)
