"""Predict stage: a trained model + data -> probabilities (parquet file or array) and streaming metrics.

A model trained by extmem records its feature layout (columns, zero-as-missing) in the
booster attribute ``extmem_layout``; every prediction here rebuilds exactly that representation,
batch by batch, so memory is bounded by the batch whatever the number of rows.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb

from extmem._atomic import write_atomically, write_json
from extmem._defaults import BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE
from extmem._destinations import check_output_file
from extmem._memory import MemoryMonitor
from extmem._progress import ProgressBar
from extmem._sink import ParquetSink
from extmem.encode._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem.errors import OptionError, SchemaError
from extmem.read._dataset import DatasetLike, as_dataset, column_names
from extmem.read._plan import plan_source_batches
from extmem.read._source import SourceBatch
from extmem.run._incremental import IncrementalModel
from extmem.score._metrics import StreamingMetrics, task_of
from extmem.score._scorer import Scorer, as_class_columns


@dataclass(frozen=True)
class Model(Scorer):
    """A booster with the feature layout it was trained on; scores parquet datasets or in-memory arrays.

    ``iteration_range`` selects trees as in ``Booster.predict`` (default: all).
    """

    booster: xgb.Booster
    layout: FeatureLayout
    iteration_range: tuple[int, int] = (0, 0)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model:
        """Load ``model.ubj`` from a model folder written by ``extmem train`` (or a model file)."""
        file = Path(path)
        if file.is_dir():
            file = file / BOOSTER_MODEL_FILE
        if not file.is_file():
            msg = f"No model at {os.fspath(path)!r}: expected a folder holding {BOOSTER_MODEL_FILE} (written by 'extmem train') or a model file."
            raise OptionError(msg)
        try:
            booster = xgb.Booster(model_file=str(file))
        except xgb.core.XGBoostError as exc:
            msg = f"Cannot load the model {str(file)!r}: {str(exc).splitlines()[0]}"
            raise OptionError(msg) from None
        return cls.from_booster(booster, str(file))

    @classmethod
    def from_booster(cls, booster: xgb.Booster, where: str = "the booster") -> Model:
        """Wrap a booster trained by extmem (it carries the ``extmem_layout`` attribute)."""
        text = booster.attr(LAYOUT_ATTRIBUTE)
        if text is None:
            msg = f"{where} has no {LAYOUT_ATTRIBUTE!r} attribute: it was not trained by extmem, so its feature encoding is unknown."
            raise OptionError(msg)
        return cls(booster, FeatureLayout.from_json(text))

    @cached_property
    def objective(self) -> str:
        return str(json.loads(self.booster.save_config())["learner"]["objective"]["name"])

    @property
    def task(self) -> str:
        """``multiclass``, ``binary``, ``hard`` or ``regression`` (see :func:`extmem.metrics.task_of`)."""
        return task_of(self.objective)

    @cached_property
    def classes(self) -> list[str] | None:
        """Class names in class-id order (ids as text for numeric labels); None for regression."""
        if self.task == "regression":
            return None
        config = json.loads(self.booster.save_config())["learner"]["learner_model_param"]
        return self.layout.class_names(int(config["num_class"]))

    def raw_predict(self, X: Any) -> np.ndarray:
        """``booster.inplace_predict`` on features already in the model's representation."""
        return self.booster.inplace_predict(X, missing=np.nan, iteration_range=self.iteration_range)


ModelLike = str | os.PathLike[str] | Scorer | xgb.Booster


def as_model(model: ModelLike) -> Scorer:
    """A trained model from a model folder/file, a :class:`Model` or :class:`IncrementalModel`, or an extmem-trained booster.

    A folder holding ``model.npz`` (or a ``.npz`` file) is an incremental model; anything else is loaded as XGBoost's.
    """
    if isinstance(model, Scorer):
        return model
    if isinstance(model, xgb.Booster):
        return Model.from_booster(model)
    path = Path(model)
    if (path / INCREMENTAL_MODEL_FILE).is_file() or path.suffix == ".npz":
        return IncrementalModel.load(path)
    return Model.load(model)


def _output_schema(model: Scorer, carried: pa.Schema) -> pa.Schema:
    classes = model.classes
    if classes is None:
        fields = [pa.field("prediction", pa.float32())]
    else:
        fields = [pa.field(f"prob_{name}", pa.float32()) for name in classes] if model.task != "hard" else []
        names_are_ids = model.layout.classes is None
        fields.append(pa.field("predicted", pa.int64() if names_are_ids else pa.string()))
    clash = sorted(set(carried.names) & {f.name for f in fields})
    if clash:
        msg = f"The 'keep' column {clash[0]!r} has the name of an output column; rename it or leave it out."
        raise SchemaError(msg, options=("keep",))
    return pa.schema([*carried, *fields])


def _output_batch(model: Scorer, batch: SourceBatch, raw: np.ndarray, schema: pa.Schema) -> pa.RecordBatch:
    arrays: list[pa.Array] = list(batch.carried.columns) if batch.carried is not None else []
    classes = model.classes
    if classes is None:
        arrays.append(pa.array(raw.astype(np.float32)))
    else:
        if model.task == "hard":
            predicted = raw.astype(np.int64)
        else:
            probabilities = as_class_columns(raw, model.task)
            arrays.extend(pa.array(probabilities[:, k].astype(np.float32)) for k in range(probabilities.shape[1]))
            predicted = probabilities.argmax(axis=1)
        arrays.append(pa.array(predicted) if model.layout.classes is None else pa.array(np.asarray(classes, dtype=object)[predicted]))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
    """Stream ``data`` through ``model`` into the parquet file ``out``; mirrors ``extmem predict``.

    ``out`` gets one ``prob_<class>`` column per class and ``predicted`` (or ``prediction`` for
    regression), after the ``keep`` columns copied from the input (ids such as ``gene_id``), in
    input row order. ``options`` are :class:`Dataset` fields (``filter``, ``max_rows``,
    ``batch_rows``); under ``memory_budget`` (default: the process's data limit) ``batch_rows``
    is the largest allowed. The file appears only when complete; an existing one is replaced only
    with ``overwrite``. Returns rows, seconds and peak memory.
    """
    check_output_file(out, overwrite=overwrite)
    trained = as_model(model)
    dataset = as_dataset(data, None, options)
    carry = column_names(keep, "keep")
    started = time.perf_counter()
    with MemoryMonitor() as monitor:
        source = trained.source(dataset, carry)
        plan = plan_source_batches(source, memory_budget)
        schema = _output_schema(trained, source.carried_schema)
        with ParquetSink(out, schema) as sink, ProgressBar(source.schema.rows, "predicting", "rows", progress) as bar:
            for batch, raw in trained.score(source):
                sink.write(_output_batch(trained, batch, raw, schema))
                bar.update(batch.features.rows)
    return {
        "rows": sink.rows,
        "out": os.fspath(out),
        "columns": schema.names,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "memory_plan": plan.to_dict(),
    }


def evaluate(
    model: ModelLike,
    data: DatasetLike,
    *,
    label: str | None = None,
    out: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Streaming metrics of ``model`` on ``data`` (label: the model's, unless ``label`` is given); mirrors ``extmem evaluate``.

    Classifiers get accuracy, macro-F1, log-loss, per-class precision/recall/F1/ROC-AUC/PR-AUC
    and a confusion matrix; regressors get RMSE, MAE and R². ``out`` writes them as JSON; ``plot``
    writes a PNG of the precision-recall curves (needs matplotlib: ``pip install 'extmem[plot]'``,
    checked before any work); existing files are replaced only with ``overwrite``.
    ``memory_budget`` bounds the batch rows as in :func:`predict`.
    """
    if out is not None:
        check_output_file(out, overwrite=overwrite, option="out")
    if plot is not None:
        check_output_file(plot, overwrite=overwrite, option="plot")
        _pyplot()
    trained = as_model(model)
    dataset = as_dataset(data, label or trained.layout.label, options)
    if dataset.label is None:
        msg = "Evaluation needs a label column; the model records none, so pass 'label'."
        raise OptionError(msg)
    started = time.perf_counter()
    metrics = StreamingMetrics(trained.task, trained.classes)
    with MemoryMonitor() as monitor:
        source = trained.source(dataset)
        plan_source_batches(source, memory_budget)
        with ProgressBar(source.schema.rows, "evaluating", "rows", progress) as bar:
            for batch, raw in trained.score(source):
                assert batch.label is not None
                metrics.update(batch.label, raw, batch.weight)
                bar.update(batch.features.rows)
    if metrics.rows == 0:
        msg = f"No rows of {', '.join(dataset.paths)} to evaluate" + (f" match the 'filter' {dataset.filter!r}." if dataset.filter else ".")
        raise SchemaError(msg, options=("filter",))
    result = metrics.result()
    if plot is not None:
        plot_pr_curves(metrics, plot)
    result.update(
        seconds=round(time.perf_counter() - started, 3), peak_rss_bytes=monitor.peak_rss_bytes, peak_anon_bytes=monitor.peak_anon_bytes
    )
    if out is not None:
        write_json(out, result)
    return result


def _pyplot() -> Any:
    """matplotlib's pyplot on its file-only backend, or an error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        msg = "Plotting ('plot') needs matplotlib: pip install 'extmem[plot]'."
        raise OptionError(msg, options=("plot",)) from None
    return plt


def plot_pr_curves(metrics: StreamingMetrics, path: str | os.PathLike[str]) -> None:
    """Write a PNG of each class's precision-recall curve (atomically)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    summary = metrics.result()
    for name, (precision, recall) in metrics.pr_curves().items():
        area = summary["per_class"][name].get("pr_auc", summary.get("pr_auc"))
        axes.step(
            np.concatenate([[0.0], recall]), np.concatenate([[precision[0]], precision]), where="post", label=f"{name} (AP {area:.3f})"
        )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall by class")
    axes.legend(loc="lower left")
    write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=120))
    plt.close(figure)
