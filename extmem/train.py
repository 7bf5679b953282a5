"""Train stage: dataset description + parameters -> Booster, `model.ubj` and `report.json`."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from ._version import __version__
from .cache import CacheDir
from .dataset import DEFAULT_PAGE_ROWS, Dataset, DatasetLike, as_dataset
from .errors import OptionError
from .iterator import DEFAULT_SKETCH_ROWS
from .layout import FeatureLayout
from .matrix import MatrixInfo, free_matrix, open_matrix
from .memory import MemoryMonitor
from .progress import ProgressBar, RoundProgress

LAYOUT_ATTRIBUTE = "extmem_layout"
DEFAULT_PARAMS: Mapping[str, Any] = {"tree_method": "hist", "eta": 0.1, "max_depth": 6, "seed": 0}
_CLASSIFICATION_METRICS = {"binary": ["logloss", "auc"], "multi": ["mlogloss", "merror"]}


@dataclass(frozen=True)
class TrainResult:
    """The trained booster and the report written to ``report.json``."""

    booster: xgb.Booster
    report: dict[str, Any]


def infer_objective(labels: np.ndarray, layout: FeatureLayout, params: Mapping[str, Any]) -> dict[str, Any]:
    """Objective, num_class and eval metrics for ``labels`` unless ``params`` sets them.

    String labels: binary with two classes, multi-class otherwise. Numeric labels: binary if
    all are 0/1, multi-class if all are small non-negative integers, regression otherwise.
    """
    chosen: dict[str, Any] = {}
    if layout.label_map is not None:
        classes = len(set(layout.label_map.values()))
    else:
        values = np.unique(labels)
        integral = bool(np.all(values == np.round(values))) and values.size > 0 and values.min() >= 0
        classes = int(values.max()) + 1 if integral and values.max() < 1000 and values.size > 1 else 0
    if "objective" not in params:
        if classes == 2:
            chosen["objective"] = "binary:logistic"
        elif classes > 2:
            chosen["objective"] = "multi:softprob"
        else:
            chosen["objective"] = "reg:squarederror"
    objective = str(params.get("objective", chosen.get("objective")))
    if objective.startswith("multi:") and "num_class" not in params:
        if classes < 2:
            msg = f"The objective {objective!r} needs integer class labels or 'num_class'; the labels are not classes."
            raise OptionError(msg)
        chosen["num_class"] = classes
    if "eval_metric" not in params:
        kind = "binary" if objective.startswith("binary:") else "multi" if objective.startswith("multi:") else None
        chosen["eval_metric"] = _CLASSIFICATION_METRICS[kind] if kind else ["rmse"]
    return chosen


def _classification_scores(booster: xgb.Booster, matrix: xgb.DMatrix, objective: str) -> dict[str, float]:
    """Macro-F1 and accuracy of hard predictions (class-id outputs only)."""
    from sklearn.metrics import accuracy_score, f1_score

    predictions = booster.predict(matrix)
    if objective == "multi:softprob":
        predicted = predictions.argmax(axis=1)
    elif objective == "binary:logistic":
        predicted = (predictions > 0.5).astype(int)
    else:
        return {}
    labels = matrix.get_label().astype(int)
    return {"macro_f1": float(f1_score(labels, predicted, average="macro")), "accuracy": float(accuracy_score(labels, predicted))}


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Write through ``write(partial_path)``, then rename into place: never a half-written file."""
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        write(str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _data_report(info: MatrixInfo) -> dict[str, Any]:
    stats = info.stats
    return {
        "shards": len(info.source.schema.shards),
        "rows": stats.rows,
        "stored_values": stats.stored_values,
        "pages": stats.pages,
        "batches": stats.read.batches,
        "passes": stats.passes,
        "row_groups_read": stats.read.row_groups_read,
        "row_groups_skipped": stats.read.row_groups_skipped,
        "cuts_from_rows": stats.cuts_from_rows,
    }


def train(
    data: DatasetLike,
    label: str | None = "splice_type",
    *,
    out: str | os.PathLike[str] | None = None,
    rounds: int = 100,
    params: Mapping[str, Any] | None = None,
    valid: DatasetLike | None = None,
    early_stopping_rounds: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int = DEFAULT_PAGE_ROWS,
    sketch_rows: int = DEFAULT_SKETCH_ROWS,
    progress: bool = False,
    **options: Any,
) -> TrainResult:
    """Train XGBoost on a parquet dataset through external memory; mirrors ``extmem train``.

    ``params`` are XGBoost parameters over extmem's defaults (``hist``, eta 0.1, depth 6,
    seed 0); the objective is inferred from the labels unless given. Above ``sketch_rows``
    rows, quantile cuts come from a uniform sample of row groups (see :func:`extmem.dmatrix`).
    ``valid`` is read with the training columns and the same options. With ``out``, writes
    ``model.ubj`` and ``report.json`` there, each atomically. Cache files never outlive the call.
    """
    for name, value in (("rounds", rounds), ("early_stopping_rounds", early_stopping_rounds)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            msg = f"The '{name}' option must be a positive integer. Got {value!r} instead."
            raise OptionError(msg)
    if early_stopping_rounds is not None and valid is None:
        msg = "The 'early_stopping_rounds' option needs validation data ('valid')."
        raise OptionError(msg)
    dataset = as_dataset(data, label, options)
    if dataset.label is None:
        msg = "Training needs a label column; the 'label' option is None."
        raise OptionError(msg)
    merged: dict[str, Any] = {**DEFAULT_PARAMS, **(params or {})}
    sparse_pages = merged["tree_method"] == "approx"
    if merged["tree_method"] not in ("hist", "approx"):
        msg = f"The tree_method {merged['tree_method']!r} cannot train from external memory; use 'hist' or 'approx'."
        raise OptionError(msg)
    started = time.perf_counter()
    with MemoryMonitor() as monitor, ExitStack() as stack:
        build = {"page_rows": page_rows, "max_bin": merged.get("max_bin"), "sparse_pages": sparse_pages}
        cuts = {"sketch_rows": sketch_rows, "seed": int(merged.get("seed", 0))}
        evals: list[tuple[xgb.DMatrix, str]] = []
        valid_info = None
        with ProgressBar(None, "reading", "rows", progress) as reading:
            dtrain, train_info = open_matrix(dataset, stack.enter_context(CacheDir(cache_dir)), on_rows=reading.update, **build, **cuts)
            stack.callback(free_matrix, dtrain)
            evals.append((dtrain, "train"))
            if valid is not None:
                valid_dataset = as_dataset(valid, dataset.label, _shared_options(dataset))
                ref = None if sparse_pages else dtrain
                cache = stack.enter_context(CacheDir(cache_dir))
                dvalid, valid_info = open_matrix(valid_dataset, cache, layout=train_info.layout, ref=ref, on_rows=reading.update, **build)
                stack.callback(free_matrix, dvalid)
                evals.append((dvalid, "valid"))
        cache_bytes = train_info.cache.size_bytes() + (valid_info.cache.size_bytes() if valid_info else 0)
        merged.update(infer_objective(dtrain.get_label(), train_info.layout, merged))
        history: dict[str, dict[str, list[float]]] = {}
        with ProgressBar(rounds, "training", "rounds", progress) as bar:
            booster = xgb.train(
                merged,
                dtrain,
                num_boost_round=rounds,
                evals=evals,
                evals_result=history,
                early_stopping_rounds=early_stopping_rounds,
                verbose_eval=False,
                callbacks=[RoundProgress(bar)],
            )
        scores = _classification_scores(booster, evals[-1][0], str(merged["objective"]))
    booster.set_attr(**{LAYOUT_ATTRIBUTE: train_info.layout.to_json()})
    report = {
        "extmem_version": __version__,
        "xgboost_version": xgb.__version__,
        "rows": train_info.stats.rows,
        "features": len(train_info.layout.names),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "cache_bytes": cache_bytes,
        "seconds": round(time.perf_counter() - started, 3),
        "rounds": booster.num_boosted_rounds(),
        "best_iteration": getattr(booster, "best_iteration", None) if early_stopping_rounds else None,
        "params": merged,
        "classes": train_info.layout.classes,
        "metrics": {name: {metric: values[-1] for metric, values in metrics.items()} for name, metrics in history.items()},
        "scores": {evals[-1][1]: scores} if scores else {},
        "history": history,
        "data": {"train": _data_report(train_info), **({"valid": _data_report(valid_info)} if valid_info else {})},
        "options": {
            "batch_rows": dataset.batch_rows,
            "page_rows": page_rows,
            "sketch_rows": sketch_rows,
            "filter": dataset.filter,
            "max_rows": dataset.max_rows,
        },
        "dropped_columns": train_info.source.dropped,
    }
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(out_dir / "model.ubj", booster.save_model)
        _write_atomically(out_dir / "report.json", lambda path: Path(path).write_text(json.dumps(report, indent=2, default=_json_default)))
    return TrainResult(booster, report)


def _shared_options(dataset: Dataset) -> dict[str, Any]:
    """Options a validation dataset inherits from the training dataset (not its path or row cap)."""
    return {
        "weight": dataset.weight,
        "label_map": dataset.label_map,
        "filter": dataset.filter,
        "batch_rows": dataset.batch_rows,
        "zero_is_missing": dataset.zero_is_missing,
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
