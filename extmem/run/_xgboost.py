"""The XGBoost trainer: dataset + parameters -> Booster through external memory, with checkpoints and resume."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import BOOSTER_MODEL_FILE, CHECKPOINT_FILE, DEFAULT_PREFETCH, DEFAULT_ROUNDS
from extmem._layout import LAYOUT_ATTRIBUTE
from extmem._progress import ProgressBar
from extmem._stores import is_remote
from extmem.errors import OptionError, check_positive_int
from extmem.read._budget import Budget
from extmem.read._dataset import Dataset, DatasetLike, takes_dataset_options
from extmem.run._callbacks import Checkpoint, ClassMetrics, EarlyStop, FinalPredictions, History, RoundProgress
from extmem.run._checkpoint import data_change, data_stamp, load_checkpoint
from extmem.run._datasets import query_column, training_datasets
from extmem.run._params import SAMPLING_PARAMS, infer_objective, label_range, merged_params
from extmem.run._skeleton import TrainingRun, TrainResult
from extmem.run._stopping import EarlyStopping
from extmem.score._metrics import StreamingMetrics, task_of
from extmem.score._model import Model
from extmem.score._ranking import RankingMetrics
from extmem.xgb._build import MatrixOptions
from extmem.xgb._encoded import check_outside
from extmem.xgb._matrix import MatrixInfo, free_matrix, open_matrix

logger = logging.getLogger("extmem")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved in checkpoints and reports so that a run can resume or be repeated."""

    data: Dataset
    valid: Dataset | None
    rounds: int
    params: dict[str, Any]
    early_stopping_rounds: int | None
    checkpoint_every: int | None
    page_rows: int | None
    sketch_rows: int | None
    cache: str = "auto"
    memory_budget: int | str | None = None
    prefetch: int = DEFAULT_PREFETCH
    encoded_cache: str | None = None

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

    def matrix_options(self) -> MatrixOptions:
        params = self.params
        sparse_pages = params["tree_method"] == "approx"
        return MatrixOptions(
            self.page_rows,
            params.get("max_bin"),
            sparse_pages,
            self.sketch_rows,
            int(params.get("seed", 0)),
            prefetch=self.prefetch,
            cache=self.cache,
            memory_budget=self.memory_budget,
            encoded_cache=self.encoded_cache,
        )


@dataclass(frozen=True)
class _Start:
    """Where a resumed run picks up: the checkpointed booster, its metric history and time spent."""

    booster: xgb.Booster
    history: dict[str, dict[str, list[float]]]
    seconds: float
    data: dict[str, Any]
    """The stamps of the datasets the run read (:func:`data_stamp`); empty in checkpoints from before they were kept."""


def matrix_report(info: MatrixInfo) -> dict[str, Any]:
    """What one matrix's build read and held, and where its time went."""
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
        "reused_encoded_rows": stats.reused_rows,
        "largest_footer_bytes": info.selection.schema.footer_bytes,
        "seconds": stats.timings(),
    }


@takes_dataset_options()
def train(
    data: DatasetLike,
    label: str | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    params: Mapping[str, Any] | None = None,
    valid: DatasetLike | None = None,
    valid_fraction: float | None = None,
    group_by: str | None = None,
    early_stopping_rounds: int | None = None,
    checkpoint_every: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    page_rows: int | None = None,
    sketch_rows: int | None = None,
    cache: str = "auto",
    memory_budget: int | str | None = None,
    prefetch: int = DEFAULT_PREFETCH,
    encoded_cache: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> TrainResult:
    """Train XGBoost on a parquet dataset through external memory; mirrors ``extmem train``.

    ``data`` is a path or :class:`Dataset`; ``label`` and ``options`` are dataset options over
    it (``preset="splice-sites"`` gives the splice-site label, classes and count columns).
    ``params`` are XGBoost parameters over extmem's defaults (``hist``, eta 0.1, depth 6,
    seed 0); the objective is inferred from the labels unless given. Quantile cuts come from
    all rows when their sketch fits the memory plan, else (or above ``sketch_rows`` rows, if
    given) from a uniform sample of rows (see :func:`extmem.dmatrix`).
    Validation data is either ``valid`` (read with the training columns and options) or the
    ``valid_fraction`` of rows split off deterministically, by ``group_by`` groups if given.
    ``early_stopping_rounds`` watches the first eval metric on the validation data and keeps
    the best round's trees. With ``out``, writes the model folder ``out`` (``model.ubj`` and
    ``report.json``) in one step at the end; it must not exist or be empty, unless ``overwrite``
    and it holds an extmem model. With ``checkpoint_every``, a resumable checkpoint is saved
    there every that many rounds (see :func:`resume`). ``progress``: bars on stderr (default:
    when stderr is a terminal). ``cache``, ``memory_budget`` and ``prefetch`` are as in
    :func:`extmem.dmatrix`; the plan is logged and reported. Cache files never outlive the
    call, except in ``encoded_cache`` (a folder): there the encoded rows of the first read
    are kept, and a later run on the same shards with the same options replays them instead of
    reading the parquet (see :func:`extmem.dmatrix`). Returns the booster and the report (``booster, report = extmem.train(...)``).
    """
    for name, value in (("rounds", rounds), ("checkpoint_every", checkpoint_every)):
        check_positive_int(value, name, allow_none=True)
    merged = merged_params(params, qid=query_column(data, options))
    dataset, valid_dataset = training_datasets(
        data, label, options, valid, valid_fraction, group_by, int(merged["seed"]), early_stopping_rounds, queries=True
    )
    if checkpoint_every is not None and (out is None or is_remote(os.fspath(out))):
        msg = "The 'checkpoint_every' option needs a local output folder ('out'): checkpoints are rewritten as the run goes."
        raise OptionError(msg, options=("checkpoint_every", "out"))
    if out is not None and (Path(out) / CHECKPOINT_FILE).exists() and not overwrite:
        msg = f"{os.fspath(out)!r} holds a checkpoint of an unfinished run: continue it with 'extmem resume', or pass 'overwrite' to start over."
        raise OptionError(msg, options=("overwrite",))
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
        None if encoded_cache is None else os.fspath(encoded_cache),
    )
    config.matrix_options()  # refuse bad values before any reading
    Budget.resolve(memory_budget)
    return _run(config, TrainingRun("xgboost", "xgboost", out=out, overwrite=overwrite, cache_dir=cache_dir), progress, None)


def resume(out: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None, progress: bool | None = None) -> TrainResult:
    """Continue the run whose checkpoint is in the model folder ``out``, with its saved data, parameters and history.

    The result equals an uninterrupted run when training is deterministic: XGBoost does not
    save its random state, so with row or column subsampling the resumed trees differ.
    """
    checkpoint = Path(out) / CHECKPOINT_FILE
    if not checkpoint.is_file():
        done = f" (the run finished: see {BOOSTER_MODEL_FILE})" if (Path(out) / BOOSTER_MODEL_FILE).is_file() else ""
        msg = f"No checkpoint to resume in {os.fspath(out)!r}{done}; train with 'checkpoint_every' to write one."
        raise OptionError(msg, options=("checkpoint_every",))
    booster, state = load_checkpoint(checkpoint)
    try:
        config = TrainConfig.from_dict(state["config"])
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"The checkpoint {str(checkpoint)!r} holds a configuration this extmem cannot read ({exc})."
        raise OptionError(msg) from None
    sampled = [name for name in SAMPLING_PARAMS if float(config.params.get(name, 1)) < 1]
    if sampled:
        logger.warning(
            "extmem: %s < 1: XGBoost does not checkpoint its random state, so the resumed model will differ from an uninterrupted run.",
            "/".join(sampled),
        )
    run = TrainingRun("xgboost", "xgboost", out=out, cache_dir=cache_dir, check_out=False)
    return _run(config, run, progress, _Start(booster, state["history"], float(state["seconds"]), state.get("data", {})))


def _open(config: TrainConfig, run: TrainingRun, progress: bool | None) -> list[tuple[xgb.DMatrix, str, MatrixInfo]]:
    """The training matrix, and the validation matrix if any (the training columns, and cuts unless ``approx``)."""
    build = config.matrix_options()
    matrices: list[tuple[xgb.DMatrix, str, MatrixInfo]] = []
    with ProgressBar(None, "reading", "rows", progress) as reading:
        dtrain, info = open_matrix(
            config.data, run.cache_folder(), build, on_rows=reading.update, on_total=reading.add_total, keep_spool=config.valid is None
        )
        run.on_exit(lambda: free_matrix(dtrain))
        matrices.append((dtrain, "train", info))
        if config.valid is not None:
            ref = None if build.sparse_pages else dtrain
            dvalid, valid_info = open_matrix(
                config.valid,
                run.cache_folder(),
                build,
                layout=info.layout,
                ref=ref,
                on_rows=reading.update,
                on_total=reading.add_total,
                keep_spool=True,
            )
            run.on_exit(lambda: free_matrix(dvalid))
            matrices.append((dvalid, "valid", valid_info))
    return matrices


def _run(config: TrainConfig, run: TrainingRun, progress: bool | None, start: _Start | None) -> TrainResult:
    check_outside(config.encoded_cache, run.out)
    params = dict(config.params)
    with run:
        with run.stage("read and build"):
            matrices = _open(config, run, progress)
        # what a checkpoint records of the data and a resumption compares: a stat (or a store request) per shard, so only then
        stamps = {name: data_stamp(info) for _, name, info in matrices} if start or config.checkpoint_every else {}
        change = data_change(start.data, stamps) if start else None
        if change is not None:
            msg = f"Cannot resume {str(run.out)!r}: {change} since the checkpoint, and a resumed run must read the rows it began on. Restore the data, or train anew with 'overwrite'."
            raise OptionError(msg, options=("overwrite",))
        dtrain, _, train_info = matrices[0]
        layout = train_info.layout
        cache_bytes = sum(info.cache.size_bytes() for _, _, info in matrices)
        params.update(infer_objective(layout, *label_range(dtrain.get_label()), params))
        history = History(start.history if start else None)
        callbacks: list[xgb.callback.TrainingCallback] = [history]
        classes = layout.class_names(int(params.get("num_class", 2)))
        task = task_of(str(params["objective"]))
        if len(matrices) > 1 and task in ("multiclass", "binary"):
            valid_matrix, valid_name, _ = matrices[-1]
            callbacks.insert(0, ClassMetrics(valid_matrix, valid_name, task, classes))
        stopping = early_stop = None
        if config.early_stopping_rounds is not None:
            stopping = EarlyStopping(config.early_stopping_rounds, str(np.atleast_1d(params["eval_metric"])[0]))
            early_stop = EarlyStop(history, stopping, "valid")
            callbacks.append(early_stop)
        elapsed = start.seconds if start else 0.0
        if config.checkpoint_every is not None:
            assert isinstance(run.out, Path)
            run.out.mkdir(parents=True, exist_ok=True)
            saved_config = replace(config, params=params).to_dict()
            callbacks.append(
                Checkpoint(
                    run.out / CHECKPOINT_FILE,
                    config.checkpoint_every,
                    lambda: {"config": saved_config, "history": history.log, "seconds": elapsed + run.monitor.seconds, "data": stamps},
                )
            )
        evals = [(matrix, name) for matrix, name, _ in matrices]
        done = start.booster.num_boosted_rounds() if start else 0
        remaining = 0 if early_stop is not None and early_stop.should_stop() else max(config.rounds - done, 0)
        evaluation_matrix, evaluation_name, evaluation_info = matrices[-1]
        final = [FinalPredictions(evaluation_matrix)] if params.get("booster", "gbtree") == "gbtree" else []
        with run.stage("boosting"), ProgressBar(config.rounds, "training", "rounds", progress) as bar:
            bar.update(done)
            rounds = RoundProgress(bar)
            booster = xgb.train(
                params,
                dtrain,
                num_boost_round=remaining,
                evals=evals,
                verbose_eval=False,
                callbacks=[*callbacks, rounds, *final],
                xgb_model=start.booster if start else None,
            )
        with run.stage("evaluation"):
            cached = final[0].predictions if final else None
            booster = _without_training_state(booster)
            booster.set_attr(**{LAYOUT_ATTRIBUTE: layout.to_json()})
            model = Model(booster, layout)
            evaluation = _metrics(
                model, evaluation_matrix, evaluation_info, cached, [str(name) for name in np.atleast_1d(params["eval_metric"])]
            )
    watched = history.log.get("valid", {}).get(stopping.metric, []) if stopping else []
    common = {
        "rows": train_info.stats.rows,
        "features": len(layout.names),
        "classes": layout.classes,
        "params": params,
        "rounds": booster.num_boosted_rounds(),
        "metrics": {name: {metric: values[-1] for metric, values in metrics.items()} for name, metrics in history.log.items()},
        "evaluation": {evaluation_name: evaluation.result()},
        "history": history.log,
        "early_stopping": stopping.summary(watched, config.rounds) if stopping else None,
        "config": replace(config, params=params).to_dict(),
        "data": {name: matrix_report(info) for _, name, info in matrices},
        "memory_plan": {name: info.plan.to_dict() for _, name, info in matrices},
        "cache_bytes": cache_bytes,
        "dropped_columns": dict(train_info.selection.dropped),
    }
    details = {"resumed_from_round": done if start else None, "seconds_before_resume": elapsed, "round_seconds": rounds.timings()}
    return run.finish(booster, BOOSTER_MODEL_FILE, lambda: bytes(booster.save_raw("ubj")), common, details)


def _metrics(
    model: Model, matrix: xgb.DMatrix, info: MatrixInfo, cached: np.ndarray | None, eval_metrics: list[str]
) -> StreamingMetrics | RankingMetrics:
    """The model's metrics on the rows of a matrix it was trained with: from the ``cached`` predictions if given, else
    predicted from the matrix's kept page spool (the rows already encoded, as CSR). A ranking model's are its
    ranking ``eval_metrics`` over the matrix's queries.

    ``cached``: the final model's predictions for the matrix from XGBoost's prediction cache (see
    :class:`FinalPredictions`). Either way nothing is decoded again, and XGBoost's
    prediction from a quantized matrix (in time proportional to rows times features: minutes for hashed feature
    spaces) is avoided.
    """
    assert info.spool is not None, "the trainer keeps the page spool of its evaluation matrix"
    ranking = model.ranking_metrics(eval_metrics) if model.ranking else None
    metrics = StreamingMetrics(model.task, model.classes)

    def add(labels: np.ndarray, predictions: np.ndarray, weight: np.ndarray | None, qid: np.ndarray | None) -> None:
        if ranking is not None:
            assert qid is not None
            ranking.update(labels, predictions, qid, weight)
        else:
            metrics.update(labels, predictions, weight)

    if cached is not None:
        weight, sizes = matrix.get_weight(), matrix.get_group()
        if ranking is not None and weight.size:
            weight = np.repeat(weight, sizes)  # a ranking matrix holds one weight per query
        add(matrix.get_label(), cached, weight if weight.size else None, np.repeat(np.arange(sizes.size), sizes))
    else:
        for page in info.spool.replay(len(model.layout.names)):
            assert page.label is not None
            add(page.label, model.raw_predict(page.X), page.weight, page.qid)
    info.spool.clear()
    return ranking if ranking is not None else metrics


def _without_training_state(booster: xgb.Booster) -> xgb.Booster:
    """The same model in a new booster, the trained one freed with its training state.

    A booster keeps its gradients and its prediction caches (bytes per row and class) after
    training; whatever runs next (evaluation's metrics, saving) should not sit on top of them.
    """
    fresh = xgb.Booster(model_file=bytearray(booster.save_raw("ubj")))
    booster.__del__()
    return fresh
