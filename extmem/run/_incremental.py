"""Incremental trainer: scikit-learn ``partial_fit`` models fed by the same source -> blocks stream as XGBoost.

The first pass reads the dataset once into a page spool in a private cache folder, gathering
per-feature statistics (for standardisation) and class weights on the way. Each epoch then
replays the spooled pages in a shuffled order, rows shuffled within each page, into
``partial_fit``. Memory depends on the page, never on the number of rows.

Features are prepared per kind of column. Count columns (``layout.zero_is_missing``, the
k-mers) stay sparse: linear models see them divided by their standard deviation, naive Bayes
sees the raw counts (multinomial). Value columns (scores, coordinates) are centred and scaled,
a missing value counting as the mean; naive Bayes models them as Gaussians. Scaling them first
keeps Gaussian naive Bayes' variance smoothing (a share of the largest variance) from being
set by a coordinate column and swamping every other feature.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sklearn

from extmem._contracts import Block, DataProfile
from extmem._defaults import DEFAULT_EPOCHS, DEFAULT_PAGE_ROWS, INCREMENTAL_MODEL_FILE
from extmem._layout import FeatureLayout
from extmem._progress import ProgressBar
from extmem.encode._blocks import Encoder
from extmem.encode._pages import read_pages
from extmem.encode._probe import plan_pass
from extmem.errors import LabelError, OptionError, check_positive_int, check_seed
from extmem.read._dataset import Dataset, DatasetLike, check_rows, takes_dataset_options
from extmem.read._plan import MemoryPlan
from extmem.read._selection import Selection, select_dataset
from extmem.run._datasets import training_datasets
from extmem.run._first_pass import FirstPass
from extmem.run._params import MAX_CLASS_ID, class_count
from extmem.run._skeleton import TrainingRun, TrainResult
from extmem.run._stopping import EarlyStopping
from extmem.score._incremental_model import (
    ESTIMATOR_KIND,
    FeatureParts,
    IncrementalModel,
    Standardizer,
    _estimators,
    _Learner,
    _learner,
    check_estimator_kind,
)
from extmem.score._metrics import StreamingMetrics
from extmem.xgb._spool import PageSpool

logger = logging.getLogger("extmem")

ClassWeight = Literal["balanced", "none"]

PAGE_BYTES_PER_VALUE = 48
"""Bytes per stored value of a page being shuffled and standardised (copies of data, indices and the scaled result)."""


@dataclass
class _Spooled:
    """A dataset read once into a page spool, with what the read learned."""

    selection: Selection
    spool: PageSpool
    plan: MemoryPlan
    stored_values: int = 0

    @property
    def rows(self) -> int:
        return self.spool.rows

    def blocks(self, order: Sequence[int] | None = None) -> Iterator[Block]:
        """The spooled pages, in ``order`` if given."""
        return self.spool.replay(len(self.selection.layout.names), order)


def _read(
    dataset: Dataset,
    layout: FeatureLayout | None,
    folder: Path,
    page_rows: int,
    memory_budget: int | str | None,
    on_page: Callable[[Block, FeatureLayout], None],
    on_total: Callable[[int], None],
) -> _Spooled:
    """Read ``dataset`` once into a spool in ``folder``, calling ``on_total`` with its rows (from the metadata), then ``on_page`` with each page and the layout."""
    selection = select_dataset(dataset, layout=layout)
    on_total(selection.expected_rows)

    def page_bytes(profile: DataProfile) -> int:
        return int(PAGE_BYTES_PER_VALUE * profile.stored_values_per_row * page_rows)

    plan = plan_pass(selection, memory_budget, extra_bytes=page_bytes)
    spooled = _Spooled(selection, PageSpool(folder), plan)
    encoder = Encoder(selection.layout, strict_categories=dataset.strict_categories)
    weight_total = 0.0
    for page in spooled.spool.record(read_pages(selection, encoder, plan.batch_rows, page_rows)):
        spooled.stored_values += page.stored_values
        if page.weight is not None:
            weight_total += float(np.sum(page.weight, dtype=np.float64))
        on_page(page, selection.layout)
    check_rows(dataset, "to train on", spooled.rows, weight_total)
    return spooled


def _evaluate(model: IncrementalModel, data: _Spooled) -> dict[str, Any]:
    metrics = StreamingMetrics(model.task, model.classes)
    for block in data.blocks():
        assert block.label is not None
        metrics.update(block.label, model.raw_predict(block.X), None if block.weight is None else np.asarray(block.weight))
    return metrics.result()


def _epoch(learner: _Learner, data: _Spooled, class_weights: np.ndarray, rng: np.random.Generator, bar: ProgressBar) -> None:
    """One pass of ``partial_fit`` over the spooled pages: pages in a shuffled order, rows shuffled within each page."""
    layout = data.selection.layout
    classes = np.arange(class_weights.size)
    for block in data.blocks(rng.permutation(data.spool.pages).tolist()):
        assert block.label is not None
        rows = rng.permutation(block.rows)
        labels = np.asarray(block.label)[rows].astype(np.int64)
        weights = class_weights[labels] if block.weight is None else class_weights[labels] * np.asarray(block.weight)[rows]
        if not weights.any():  # rows of weight 0 teach nothing, and scikit-learn refuses a batch of them
            bar.update(block.rows)
            continue
        learner.partial_fit(FeatureParts.split(block.X[rows], layout), labels, classes, weights)
        bar.update(block.rows)


class _Best:
    """The best epoch so far under an early-stopping policy, with a copy of its estimators and its evaluation."""

    def __init__(self, policy: EarlyStopping | None) -> None:
        self.policy = policy
        self.epoch: int | None = None
        self.estimators: dict[str, Any] | None = None
        self.results: dict[str, Any] | None = None

    def should_stop(self, values: list[float], learner: _Learner, results: dict[str, Any]) -> bool:
        """Keep the latest epoch if it is the best so far; True once the policy's epochs have passed without a better one."""
        if self.policy is None:
            return False
        best = self.policy.best(values)
        if best == len(values) - 1:
            self.epoch, self.results = best, results
            self.estimators = copy.deepcopy(learner.estimators)
        return self.policy.should_stop(values)

    def restore(self, learner: _Learner, results: dict[str, dict[str, Any]], name: str) -> None:
        """Put the best epoch's estimators back, with its evaluation on ``name``."""
        if self.estimators is not None and self.results is not None:
            learner.estimators = self.estimators
            results[name] = self.results


_HISTORY_METRICS = ("mlogloss", "logloss", "accuracy", "macro_f1")


def _check_options(algorithm: str, estimator: Any, params: Mapping[str, Any], epochs: int | None, class_weight: str, page_rows: int) -> int:
    """Refuse bad options before any reading; the number of epochs to run."""
    _estimators(algorithm, params, None, estimator=estimator)
    if epochs is None:
        epochs = 1 if algorithm == "naive_bayes" else DEFAULT_EPOCHS
    check_positive_int(epochs, "epochs")
    check_positive_int(page_rows, "page_rows")
    if algorithm == "naive_bayes" and epochs != 1:
        msg = "naive_bayes is fitted exactly in one pass; 'epochs' does not apply to it (more epochs would count every row again)."
        raise OptionError(msg, options=("epochs",))
    if class_weight not in ("balanced", "none"):
        msg = f"The 'class_weight' option must be 'balanced' or 'none'. Got {class_weight!r} instead."
        raise OptionError(msg, options=("class_weight",))
    return epochs


def _spool_datasets(
    run: TrainingRun,
    dataset: Dataset,
    valid: Dataset | None,
    first_pass: FirstPass,
    page_rows: int,
    memory_budget: int | str | None,
    progress: bool | None,
) -> dict[str, _Spooled]:
    """The training data (and validation data, with the training layout) read once each into spools, first-pass statistics gathered."""
    cache = run.cache_folder()
    with ProgressBar(None, "reading", "rows", progress) as bar:

        def gather(page: Block, layout: FeatureLayout) -> None:
            first_pass.add(page, layout)
            bar.update(page.rows)

        train = _read(dataset, None, cache.path / "train", page_rows, memory_budget, gather, bar.add_total)
        spooled = {"train": train}
        if valid is not None:
            spooled["valid"] = _read(
                valid,
                train.selection.layout,
                cache.path / "valid",
                page_rows,
                memory_budget,
                lambda page, _: bar.update(page.rows),
                bar.add_total,
            )
    return spooled


@takes_dataset_options()
def train_incremental(
    data: DatasetLike,
    label: str | None = None,
    *,
    algorithm: str | Any = "sgd_logistic",
    out: str | os.PathLike[str] | None = None,
    epochs: int | None = None,
    params: Mapping[str, Any] | None = None,
    class_weight: str = "balanced",
    valid: DatasetLike | None = None,
    valid_fraction: float | None = None,
    group_by: str | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    early_stopping_rounds: int | None = None,
    page_rows: int | None = None,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> TrainResult:
    """Train a scikit-learn ``partial_fit`` model on a parquet dataset, streaming; mirrors ``extmem train --algorithm``.

    ``algorithm`` is ``sgd_logistic`` (probabilities), ``sgd_hinge``, ``passive_aggressive``
    (class ids) or ``naive_bayes`` (probabilities; exact in one pass, so ``epochs`` is 1), or an
    unfitted scikit-learn classifier with ``partial_fit``, which is copied and fed the
    standardised features. ``params`` go to the scikit-learn estimator(s). Classes are class ids 0..K-1 from the label
    map (or the largest class id in the data), declared up front; ``class_weight="balanced"``
    weights each class by rows / (classes x class rows), as scikit-learn does. ``epochs``
    (default 5) passes run over pages in a shuffled order (``seed``); ``early_stopping_rounds``
    stops after that many epochs without improvement on the validation data (log-loss, or
    macro-F1 for models that give class ids) and keeps the best epoch's model. Validation data,
    ``cache_dir``, ``page_rows``, ``memory_budget``, ``out``, ``overwrite`` and ``options`` are
    as in :func:`extmem.train`; the spool lives in a private cache folder that never outlives
    the call. Returns the :class:`IncrementalModel` and the report.
    """
    params = dict(params or {})
    estimator = None
    if not isinstance(algorithm, str):
        check_estimator_kind(algorithm)
        estimator, algorithm = algorithm, ESTIMATOR_KIND
    page_rows = DEFAULT_PAGE_ROWS if page_rows is None else page_rows
    epochs = _check_options(algorithm, estimator, params, epochs, class_weight, page_rows)
    check_seed(seed)
    dataset, valid_dataset = training_datasets(data, label, options, valid, valid_fraction, group_by, seed, early_stopping_rounds)
    first_pass = FirstPass(algorithm == "naive_bayes", f"{', '.join(dataset.paths)} (column {dataset.label!r})")
    name = type(estimator).__name__ if estimator is not None else algorithm
    with TrainingRun("incremental", name, out=out, overwrite=overwrite, cache_dir=cache_dir) as run:
        with run.stage("read and spool"):
            evaluated = _spool_datasets(run, dataset, valid_dataset, first_pass, page_rows, memory_budget, progress)
        train = evaluated["train"]
        layout = train.selection.layout
        stats = first_pass.stats
        assert stats is not None
        low, high, fractional = first_pass.label_range()
        if layout.label_map is None and high > MAX_CLASS_ID:
            msg = f"Incremental models are classifiers: the label of {first_pass.label_where} reaches {high:,.0f}, beyond the class ids 0..{MAX_CLASS_ID}."
            raise LabelError(msg)
        n_classes = max(class_count(layout, low, high, fractional), 2)
        weights_by_class = first_pass.class_weights(n_classes) if class_weight == "balanced" else np.ones(n_classes)
        learner = _learner(algorithm, _estimators(algorithm, params, layout, seed, estimator), Standardizer(stats.mean.copy(), stats.std))
        trained = IncrementalModel(algorithm, layout, n_classes, learner)
        rng = np.random.default_rng(seed)
        history: dict[str, dict[str, list[float]]] = {name: {} for name in evaluated}
        results: dict[str, dict[str, Any]] = {}
        last = list(evaluated)[-1]
        metric = "macro_f1" if trained.task == "hard" else "logloss" if trained.task == "binary" else "mlogloss"
        policy = EarlyStopping(early_stopping_rounds, metric) if early_stopping_rounds is not None else None
        best = _Best(policy)
        epochs_run = 0
        with run.stage("epochs"), ProgressBar(epochs * train.rows, "training", "rows", progress) as bar:
            for _ in range(epochs):
                epochs_run += 1
                _epoch(learner, train, weights_by_class, rng, bar)
                for name, spooled in evaluated.items():
                    results[name] = _evaluate(trained, spooled)
                    for name_of_metric in _HISTORY_METRICS:
                        if results[name].get(name_of_metric) is not None:
                            history[name].setdefault(name_of_metric, []).append(float(results[name][name_of_metric]))
                bar.set_postfix(", ".join(f"{last}-{name}={values[-1]:.4f}" for name, values in history[last].items()))
                if best.should_stop(history[last].get(metric, []), learner, results[last]):
                    break
        best.restore(learner, results, last)
        cache_bytes = sum(spooled.spool.bytes for spooled in evaluated.values())
    common = {
        "rows": train.rows,
        "features": len(layout.names),
        "classes": layout.classes,
        "params": {name: estimator.get_params() for name, estimator in learner.estimators.items()},
        "metrics": {name: {metric: values[-1] for metric, values in metrics.items()} for name, metrics in history.items()},
        "evaluation": {last: results[last]},
        "history": history,
        "early_stopping": policy.summary(history[last].get(metric, []), epochs) if policy is not None else None,
        "data": {
            name: {
                "shards": len(spooled.selection.schema.shards),
                "rows": spooled.rows,
                "stored_values": spooled.stored_values,
                "pages": spooled.spool.pages,
            }
            for name, spooled in evaluated.items()
        },
        "memory_plan": {name: spooled.plan.to_dict() for name, spooled in evaluated.items()},
        "cache_bytes": cache_bytes,
        "dropped_columns": dict(train.selection.dropped),
        "config": {
            "data": dataset.to_dict(),
            "valid": valid_dataset.to_dict() if valid_dataset is not None else None,
            "epochs": epochs,
            "class_weight": class_weight,
            "seed": seed,
            "page_rows": page_rows,
            "memory_budget": memory_budget,
            "early_stopping_rounds": early_stopping_rounds,
        },
    }
    details = {
        "epochs": epochs_run,
        "class_weights": dict(zip(trained.classes, weights_by_class.tolist())),
        "sklearn_version": sklearn.__version__,
    }
    return run.finish(trained, INCREMENTAL_MODEL_FILE, trained.to_bytes, common, details)
