"""Predict: a trained model + a dataset -> a parquet file of probabilities or values, streamed batch by batch.

Every batch is rebuilt in exactly the representation the model was trained on (its recorded
feature layout), so memory is bounded by the batch whatever the number of rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from extmem._contracts import RawBatch
from extmem._destinations import check_output_file, output_format
from extmem._measure import MemoryMonitor
from extmem._progress import ProgressBar
from extmem._sink import TABLE_FORMATS, TableSink, check_writable
from extmem.encode._probe import plan_pass
from extmem.errors import OptionError, SchemaError
from extmem.read._costs import sink_bytes
from extmem.read._dataset import DatasetLike, as_dataset, column_names, takes_dataset_options
from extmem.read._discover import would_be_a_shard
from extmem.score._model import ModelLike, as_model
from extmem.score._scorer import Scorer, as_class_columns


def prediction_field(model: Scorer) -> pa.Field:
    """The column of predicted classes (``predicted``; ``prediction`` values for regression) in predictions and explanations."""
    if model.classes is None:
        return pa.field("prediction", pa.float32())
    values = model.layout.class_values
    if values is not None:
        return pa.field("predicted", pa.from_numpy_dtype(values.dtype))
    return pa.field("predicted", pa.int64() if model.layout.classes is None else pa.string())


def prediction_array(model: Scorer, raw: np.ndarray) -> pa.Array:
    """The :func:`prediction_field` column for raw predictions."""
    if model.classes is None:
        return pa.array(raw.astype(np.float32))
    predicted = raw.astype(np.int64) if model.task == "hard" else as_class_columns(raw, model.task).argmax(axis=1)
    values = model.layout.class_values
    if values is not None:
        return pa.array(values[predicted])
    return pa.array(predicted) if model.layout.classes is None else pa.array(np.asarray(model.classes, dtype=object)[predicted])


def check_no_clash(carried: pa.Schema, names: Sequence[str], option: str = "keep") -> None:
    """Refuse carried columns named like output columns."""
    clash = sorted(set(carried.names) & set(names))
    if clash:
        msg = f"The {option!r} column {clash[0]!r} has the name of an output column; rename it or leave it out."
        raise SchemaError(msg, options=(option,))


def _output_schema(model: Scorer, carried: pa.Schema) -> pa.Schema:
    probabilities = (
        [] if model.classes is None or model.task == "hard" else [pa.field(f"prob_{name}", pa.float32()) for name in model.classes]
    )
    fields = [*probabilities, prediction_field(model)]
    check_no_clash(carried, [f.name for f in fields])
    return pa.schema([*carried, *fields])


def _output_batch(model: Scorer, batch: RawBatch, raw: np.ndarray, schema: pa.Schema) -> pa.RecordBatch:
    arrays: list[pa.Array] = list(batch.carried.columns) if batch.carried is not None else []
    if model.classes is not None and model.task != "hard":
        probabilities = as_class_columns(raw, model.task)
        arrays.extend(pa.array(probabilities[:, k].astype(np.float32)) for k in range(probabilities.shape[1]))
    arrays.append(prediction_array(model, raw))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@takes_dataset_options()
def predict(
    model: ModelLike,
    data: DatasetLike,
    out: str | os.PathLike[str],
    *,
    keep: str | Sequence[str] | None = None,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Stream ``data`` through ``model`` into the parquet file ``out`` (a CSV file if it ends in ``.csv``); mirrors ``extmem predict``.

    ``out`` gets one ``prob_<class>`` column per class and ``predicted`` (or ``prediction`` for
    regression), after the ``keep`` columns copied from the input (ids such as ``gene_id``), in
    input row order. ``options`` are :class:`Dataset` fields (``filter``, ``max_rows``,
    ``batch_rows``); under ``memory_budget`` (default: the process's data limit) ``batch_rows``
    is the largest allowed. The file appears only when complete; an existing one is replaced only
    with ``overwrite``. Returns rows, seconds and peak memory.
    """
    check_output_file(out, overwrite=overwrite)
    file_format = output_format(out, TABLE_FORMATS)
    trained = as_model(model)
    dataset = as_dataset(data, options)
    if would_be_a_shard(out, dataset.paths):
        msg = f"The 'out' file {os.fspath(out)!r} would lie among the shards it scores: the next read of {dataset.paths[0]!r} would take it for one. Write it elsewhere."
        raise OptionError(msg, options=("out",))
    carry = column_names(keep, "keep")
    started = time.perf_counter()
    with MemoryMonitor() as monitor:
        selection = trained.select(dataset, carry)
        schema = _output_schema(trained, selection.carried_schema)
        written = 4 * len(schema) + 8  # bytes per row besides the carried columns (an upper bound)
        plan = plan_pass(
            selection,
            memory_budget,
            extra_bytes=lambda profile: sink_bytes(profile.carried_bytes_per_row + written, profile.rows, len(schema)),
        )
        check_writable(schema, file_format, out)
        with (
            TableSink(out, schema, replace=overwrite, file_format=file_format) as sink,
            ProgressBar(selection.rows, "predicting", "rows", progress) as bar,
        ):
            for batch, raw in trained.score(selection, plan.batch_rows, whole_rows=plan.page_rows):
                sink.write(_output_batch(trained, batch, raw, schema))
                bar.update(batch.rows)
    return {
        "rows": sink.rows,
        "out": os.fspath(out),
        "columns": schema.names,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "memory_plan": plan.to_dict(),
    }
