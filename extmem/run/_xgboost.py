"""Train stage: dataset description + parameters -> Booster, `model.ubj` and `report.json`; checkpoints and resume."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import BOOSTER_MODEL_FILE, CHECKPOINT_FILE, DEFAULT_PAGE_ROWS, DEFAULT_SKETCH_ROWS, DEFAULT_XGBOOST_PARAMS
from extmem._folders import PrivateFolder
from extmem._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem._memory import MemoryMonitor
from extmem._progress import ProgressBar, RoundProgress
from extmem._sink import check_model_folder, publish_model
from extmem._version import __version__
from extmem.errors import OptionError, check_positive_int
from extmem.read._dataset import Dataset, DatasetLike
from extmem.read._plan import Budget, CacheKind
from extmem.run._callbacks import RUN_ATTRIBUTE, Checkpoint, EarlyStop, History, class_metrics
from extmem.run._datasets import training_datasets
from extmem.score._metrics import StreamingMetrics
from extmem.score._model import Model
from extmem.xgb._build import MatrixOptions
from extmem.xgb._matrix import MatrixInfo, free_matrix, open_matrix

logger = logging.getLogger("extmem")

_CLASSIFICATION_METRICS = {"binary": ["logloss", "auc"], "multi": ["mlogloss", "merror"]}
_SAMPLING_PARAMS = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")


@dataclass(frozen=True)
class TrainResult:
    """The trained booster and the report written to ``report.json``."""

    booster: xgb.Booster
    report: dict[str, Any]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved in checkpoints so that a run can resume."""

    data: Dataset
    valid: Dataset | None
    rounds: int
    params: dict[str, Any]
    early_stopping_rounds: int | None
    checkpoint_every: int | None
    page_rows: int
    sketch_rows: int
    cache: CacheKind = "auto"
    memory_budget: int | str | None = None
    prefetch: int = 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"] = self.data.to_dict()
        out["valid"] = self.valid.to_dict() if self.valid is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        fields = dict(data)
        fields["data"] = Dataset.from_dict(fields["data"])
        fields["valid"] = Dataset.from_dict(fields["valid"]) if fields["valid"] is not None else None
        return cls(**fields)


@dataclass(frozen=True)
class _Start:
    """Where a resumed run picks up: the checkpointed booster, its metric history and time spent."""

    booster: xgb.Booster
    history: dict[str, dict[str, list[float]]]
    seconds: float


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


_UNUSED_PARAMS = re.compile(r"Parameters: \{(.*?)\} are not used")


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse parameters XGBoost does not know (it would only warn and ignore them) or rejects.

    XGBoost's own check runs on a one-round probe over a two-row matrix.
    """
    probe = {key: value for key, value in params.items() if key not in ("eval_metric",)}
    if str(probe.get("objective", "")).startswith("multi:"):
        probe.setdefault("num_class", 2)
    matrix = xgb.DMatrix(np.array([[0.0], [1.0]], dtype=np.float32), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgb.train(probe, matrix, 1)
        except xgb.core.XGBoostError as exc:
            reason = next((line for line in str(exc).splitlines() if line.strip()), str(exc))
            msg = f"XGBoost rejects a parameter: {reason.split(': ', 1)[-1]}"
            raise OptionError(msg) from None
    for warning in caught:
        unused = _UNUSED_PARAMS.search(str(warning.message).replace("\n", " "))
        if unused:
            names = [name.strip().strip('"') for name in unused.group(1).split(",") if name.strip()]
            msg = f"XGBoost parameter {names[0]!r} ('params') is unknown; XGBoost would silently ignore it."
            raise OptionError(msg, options=("params",))


def _data_report(info: MatrixInfo) -> dict[str, Any]:
    stats = info.stats
    return {
        "shards": len(info.selection.schema.shards),
        "rows": stats.rows,
        "stored_values": stats.stored_values,
        "pages": stats.pages,
        "batches": stats.read.batches,
        "passes": stats.passes,
        "row_groups_read": stats.read.row_groups_read,
        "row_groups_skipped": stats.read.row_groups_skipped,
        "cuts_from_rows": stats.cuts_from_rows,
        "spooled_bytes": stats.spooled_bytes,
    }


def train(
    data: DatasetLike,
    label: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    rounds: int = 100,
    params: Mapping[str, Any] | None = None,
    valid: DatasetLike | None = None,
    valid_fraction: float | None = None,
    group_by: str | None = None,
    early_stopping_rounds: int | None = None,
    checkpoint_every: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int = DEFAULT_PAGE_ROWS,
    sketch_rows: int = DEFAULT_SKETCH_ROWS,
    cache: CacheKind = "auto",
    memory_budget: int | str | None = None,
    prefetch: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> TrainResult:
    """Train XGBoost on a parquet dataset through external memory; mirrors ``extmem train``.

    ``params`` are XGBoost parameters over extmem's defaults (``hist``, eta 0.1, depth 6,
    seed 0); the objective is inferred from the labels unless given. Above ``sketch_rows``
    rows, quantile cuts come from a uniform sample of rows (see :func:`extmem.dmatrix`).
    Validation data is either ``valid`` (read with the training columns and options) or the
    ``valid_fraction`` of rows split off deterministically, by ``group_by`` groups if given.
    ``early_stopping_rounds`` watches the first eval metric on the validation data and keeps
    the best round's trees. With ``out``, writes the model folder ``out`` (``model.ubj`` and
    ``report.json``) in one step at the end; it must not exist or be empty, unless ``overwrite``
    and it holds an extmem model. With ``checkpoint_every``, a resumable ``checkpoint.ubj`` is
    saved there every that many rounds (see :func:`resume`). ``progress``: bars on stderr
    (default: when stderr is a terminal). ``cache``, ``memory_budget`` and ``prefetch`` are as in
    :func:`extmem.dmatrix`; the plan is logged and reported. Cache files never outlive the call.
    """
    for name, value in (("rounds", rounds), ("checkpoint_every", checkpoint_every)):
        check_positive_int(value, name, allow_none=True)
    seed = int((params or {}).get("seed", 0))
    dataset, valid_dataset = training_datasets(data, label, options, valid, valid_fraction, group_by, seed, early_stopping_rounds)
    if checkpoint_every is not None and out is None:
        msg = "The 'checkpoint_every' option needs an output folder ('out')."
        raise OptionError(msg)
    merged: dict[str, Any] = {**DEFAULT_XGBOOST_PARAMS, **(params or {})}
    if merged["tree_method"] not in ("hist", "approx"):
        msg = f"The tree_method {merged['tree_method']!r} cannot train from external memory; use 'hist' or 'approx'."
        raise OptionError(msg)
    check_params(merged)
    if out is not None:
        if (Path(out) / CHECKPOINT_FILE).exists() and not overwrite:
            msg = f"{os.fspath(out)!r} holds a checkpoint of an unfinished run: continue it with 'extmem resume', or set 'overwrite' to start over."
            raise OptionError(msg, options=("overwrite",))
        check_model_folder(out, overwrite=overwrite)
    MatrixOptions(page_rows, sketch_rows=sketch_rows, prefetch=prefetch, cache=cache)  # refuse bad values before any reading
    Budget.resolve(memory_budget)
    config = TrainConfig(
        dataset,
        valid_dataset,
        rounds,
        merged,
        early_stopping_rounds,
        checkpoint_every,
        page_rows,
        sketch_rows,
        cache,
        memory_budget,
        prefetch,
    )
    return _run(config, out, cache_dir, progress, None)


def resume(out: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None) -> TrainResult:
    """Continue the run whose ``checkpoint.ubj`` is in ``out``, with its saved data, parameters and history.

    The result equals an uninterrupted run when training is deterministic: XGBoost does not
    save its random state, so with row or column subsampling the resumed trees differ.
    """
    checkpoint = Path(out) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        done = " (the run finished: see model.ubj)" if (Path(out) / BOOSTER_MODEL_FILE).is_file() else ""
        msg = f"No checkpoint to resume in {os.fspath(out)!r}{done}; train with 'checkpoint_every' to write one."
        raise OptionError(msg, options=("checkpoint_every",))
    booster = xgb.Booster(model_file=str(checkpoint))
    state = json.loads(booster.attr(RUN_ATTRIBUTE) or "{}")
    booster.set_attr(**{RUN_ATTRIBUTE: None})
    config = TrainConfig.from_dict(state["config"])
    sampled = [name for name in _SAMPLING_PARAMS if float(config.params.get(name, 1)) < 1]
    if sampled:
        logger.warning(
            "extmem: %s < 1: XGBoost does not checkpoint its random state, so the resumed model will differ from an uninterrupted run.",
            "/".join(sampled),
        )
    return _run(config, out, cache_dir, progress, _Start(booster, state["history"], state["seconds"]))


def _run(
    config: TrainConfig,
    out: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool | None,
    start: _Start | None,
) -> TrainResult:
    merged = dict(config.params)
    sparse_pages = merged["tree_method"] == "approx"
    out_dir = Path(out) if out is not None else None
    started = time.perf_counter()
    with MemoryMonitor() as monitor, ExitStack() as stack:
        build = MatrixOptions(
            config.page_rows,
            merged.get("max_bin"),
            sparse_pages,
            config.sketch_rows,
            int(merged.get("seed", 0)),
            prefetch=config.prefetch,
            cache=config.cache,
            memory_budget=config.memory_budget,
        )
        evals: list[tuple[xgb.DMatrix, str]] = []
        valid_info = None
        with ProgressBar(None, "reading", "rows", progress) as reading:
            dtrain, train_info = open_matrix(config.data, stack.enter_context(PrivateFolder(cache_dir)), build, on_rows=reading.update)
            stack.callback(free_matrix, dtrain)
            evals.append((dtrain, "train"))
            if config.valid is not None:
                ref = None if sparse_pages else dtrain
                cache = stack.enter_context(PrivateFolder(cache_dir))
                dvalid, valid_info = open_matrix(config.valid, cache, build, layout=train_info.layout, ref=ref, on_rows=reading.update)
                stack.callback(free_matrix, dvalid)
                evals.append((dvalid, "valid"))
        cache_bytes = train_info.cache.size_bytes() + (valid_info.cache.size_bytes() if valid_info else 0)
        merged.update(infer_objective(dtrain.get_label(), train_info.layout, merged))
        history = History(start.history if start else None)
        callbacks: list[xgb.callback.TrainingCallback] = [history]
        early_stop = None
        if config.early_stopping_rounds is not None:
            metric = np.atleast_1d(merged["eval_metric"])[0]
            early_stop = EarlyStop(history, config.early_stopping_rounds, "valid", str(metric))
            callbacks.append(early_stop)
        if config.checkpoint_every is not None:
            assert out_dir is not None
            out_dir.mkdir(parents=True, exist_ok=True)
            saved_config = replace(config, params=merged).to_dict()
            elapsed = start.seconds if start else 0.0

            def state(_: xgb.Booster) -> dict[str, Any]:
                return {"config": saved_config, "history": history.log, "seconds": elapsed + time.perf_counter() - started}

            callbacks.append(Checkpoint(out_dir / CHECKPOINT_FILE, config.checkpoint_every, state))
        classes = train_info.layout.class_names(int(merged.get("num_class", 2)))
        done = start.booster.num_boosted_rounds() if start else 0
        remaining = 0 if early_stop is not None and early_stop.should_stop() else max(config.rounds - done, 0)
        with ProgressBar(config.rounds, "training", "rounds", progress) as bar:
            bar.update(done)
            booster = xgb.train(
                merged,
                dtrain,
                num_boost_round=remaining,
                evals=evals,
                custom_metric=class_metrics(str(merged["objective"]), classes, evals[-1][0] if len(evals) > 1 else None),
                verbose_eval=False,
                callbacks=[*callbacks, RoundProgress(bar)],
                xgb_model=start.booster if start else None,
            )
        booster.set_attr(**{LAYOUT_ATTRIBUTE: train_info.layout.to_json()})
        model = Model(booster, train_info.layout)
        evaluation_name, evaluation_matrix = evals[-1][1], evals[-1][0]
        evaluation = StreamingMetrics(model.task, model.classes)
        evaluation.update(evaluation_matrix.get_label(), booster.predict(evaluation_matrix), _weights(evaluation_matrix))
    report = {
        "extmem_version": __version__,
        "xgboost_version": xgb.__version__,
        "rows": train_info.stats.rows,
        "features": len(train_info.layout.names),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "cache_bytes": cache_bytes,
        "seconds": round(time.perf_counter() - started + (start.seconds if start else 0.0), 3),
        "resumed_from_round": done if start else None,
        "rounds": booster.num_boosted_rounds(),
        "best_iteration": early_stop.best_iteration if early_stop else None,
        "params": merged,
        "classes": train_info.layout.classes,
        "metrics": {name: {metric: values[-1] for metric, values in metrics.items()} for name, metrics in history.log.items()},
        "evaluation": {evaluation_name: evaluation.result()},
        "history": history.log,
        "data": {"train": _data_report(train_info), **({"valid": _data_report(valid_info)} if valid_info else {})},
        "memory_plan": {"train": train_info.plan.to_dict(), **({"valid": valid_info.plan.to_dict()} if valid_info else {})},
        "options": {
            "batch_rows": config.data.batch_rows,
            "page_rows": config.page_rows,
            "cache": config.cache,
            "memory_budget": config.memory_budget,
            "prefetch": config.prefetch,
            "sketch_rows": config.sketch_rows,
            "filter": config.data.filter,
            "max_rows": config.data.max_rows,
            "holdout": asdict(config.data.holdout) if config.data.holdout else None,
            "checkpoint_every": config.checkpoint_every,
        },
        "dropped_columns": dict(train_info.selection.dropped),
    }
    if out_dir is not None:
        publish_model(out_dir, BOOSTER_MODEL_FILE, bytes(booster.save_raw("ubj")), report)
    return TrainResult(booster, report)


def _weights(matrix: xgb.DMatrix) -> np.ndarray | None:
    weights = matrix.get_weight()
    return weights if weights.size else None
