"""XGBoost training callbacks: per-round class metrics, resumable history, early stopping, checkpoints.

XGBoost's own ``EarlyStopping`` keeps its state in memory only, so a resumed run would forget
the best round so far. Here the metric history lives in :class:`History`, which a checkpoint
saves and a resumed run reloads; :class:`EarlyStop` decides from that history alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._atomic import write_atomically
from extmem.score._metrics import ScoreCounts, confusion_matrix, confusion_scores, task_of

RUN_ATTRIBUTE = "extmem_run"
"""Booster attribute of a checkpoint: the run's configuration and history, as JSON."""

_MAXIMIZED = ("auc", "aucpr", "pre", "map", "ndcg", "macro_f1", "accuracy")

EvalLog = dict[str, dict[str, list[float]]]


def class_metrics(
    objective: str, classes: Sequence[str], ranked: xgb.DMatrix | None = None
) -> Callable[[np.ndarray, xgb.DMatrix], list[tuple[str, float]]] | None:
    """An XGBoost ``custom_metric`` adding ``macro_f1`` and ``accuracy`` each round (classifiers only).

    It reads XGBoost's prediction cache, so it costs a pass over the labels, not a prediction.
    On the ``ranked`` matrix (the validation data) it adds each class's ``roc_auc_<class>`` and
    ``pr_auc_<class>`` for multi-class models, which costs a sort of its predictions.
    """
    task = task_of(objective)
    if task not in ("multiclass", "binary"):
        return None
    names = [re.sub(r"\W", "_", name) for name in classes]

    def metric(predictions: np.ndarray, matrix: xgb.DMatrix) -> list[tuple[str, float]]:
        labels, weights = matrix.get_label(), matrix.get_weight()
        weights = weights if weights.size else np.ones(labels.size)
        if task == "multiclass":
            predictions = predictions.reshape(labels.size, -1)
            predicted = predictions.argmax(axis=1)
        else:
            predicted = (predictions.reshape(-1) > 0.5).astype(np.int64)
        scores = confusion_scores(confusion_matrix(labels, predicted, len(names), weights))
        out = [("macro_f1", scores.macro_f1 or 0.0), ("accuracy", scores.accuracy or 0.0)]
        if task == "multiclass" and matrix is ranked:
            for k, name in enumerate(names):
                counts = ScoreCounts()
                counts.add(predictions[:, k], labels == k, weights)
                out += [(f"roc_auc_{name}", _or_nan(counts.roc_auc())), (f"pr_auc_{name}", _or_nan(counts.average_precision()))]
        return out

    return metric


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


class History(xgb.callback.TrainingCallback):
    """Metric values of every round, including rounds done before a resume. Must come first."""

    def __init__(self, saved: EvalLog | None = None) -> None:
        super().__init__()
        self.log: EvalLog = {name: {metric: list(values) for metric, values in metrics.items()} for name, metrics in (saved or {}).items()}

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        for name, metrics in evals_log.items():
            for metric, values in metrics.items():
                self.log.setdefault(name, {}).setdefault(metric, []).append(float(values[-1]))
        return False


class EarlyStop(xgb.callback.TrainingCallback):
    """Stops when ``metric`` on ``data_name`` has not improved for ``rounds`` rounds; keeps only the best trees."""

    def __init__(self, history: History, rounds: int, data_name: str, metric: str) -> None:
        super().__init__()
        self.history = history
        self.rounds = rounds
        self.data_name = data_name
        self.metric = metric
        self.maximize = metric.split("@")[0] in _MAXIMIZED
        self.best_iteration: int | None = None

    def _best(self) -> int | None:
        values = self.history.log.get(self.data_name, {}).get(self.metric, [])
        if not values:
            return None
        return int(np.argmax(values) if self.maximize else np.argmin(values))

    def should_stop(self) -> bool:
        """Whether the history so far already shows ``rounds`` rounds without improvement."""
        self.best_iteration = self._best()
        rounds_done = len(self.history.log.get(self.data_name, {}).get(self.metric, []))
        return self.best_iteration is not None and rounds_done - 1 - self.best_iteration >= self.rounds

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        return self.should_stop()

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        best = self._best()
        if best is not None and best + 1 < model.num_boosted_rounds():
            model = model[: best + 1]
        return model


class Checkpoint(xgb.callback.TrainingCallback):
    """Every ``every`` rounds, saves the booster with ``state()`` (JSON) to ``path``, atomically."""

    def __init__(self, path: Path, every: int, state: Callable[[xgb.Booster], dict[str, Any]]) -> None:
        super().__init__()
        self.path = path
        self.every = every
        self.state = state

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        if model.num_boosted_rounds() % self.every == 0:
            save(model, self.path, self.state(model))
        return False


def save(model: xgb.Booster, path: Path, state: dict[str, Any]) -> None:
    """Save ``model`` with ``state`` in its :data:`RUN_ATTRIBUTE`, atomically; the live booster keeps no trace."""
    model.set_attr(**{RUN_ATTRIBUTE: json.dumps(state)})
    try:
        write_atomically(path, lambda file: file.write(model.save_raw("ubj")))
    finally:
        model.set_attr(**{RUN_ATTRIBUTE: None})
