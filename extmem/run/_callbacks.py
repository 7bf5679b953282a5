"""XGBoost training callbacks: per-round class metrics, resumable history, early stopping, checkpoints, progress and round times.

XGBoost's own ``EarlyStopping`` keeps its state in memory only, so a resumed run would forget
the best round so far. Here the metric history lives in :class:`History`, which a checkpoint
saves and a resumed run reloads; :class:`EarlyStop` decides from that history alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._progress import ProgressBar
from extmem._signals import raise_if_stopped
from extmem.run._checkpoint import save_checkpoint
from extmem.run._stopping import EarlyStopping
from extmem.score._metrics import StreamingMetrics

EvalLog = dict[str, dict[str, list[float]]]


class ClassMetrics(xgb.callback.TrainingCallback):
    """Adds ``macro_f1``, ``accuracy`` and, for multi-class models, each class's ``roc_auc_<class>`` and
    ``pr_auc_<class>`` on one matrix (the validation data) to every round's log. Must come first.

    Only the watched matrix is scored: on the training data these would cost a copy of every
    row's predictions each round, which the memory plan does not give to metrics.
    """

    def __init__(self, matrix: xgb.DMatrix, name: str, task: str, classes: Sequence[str]) -> None:
        super().__init__()
        self.matrix = matrix
        self.name = name
        self.task = task
        self.classes = list(classes)
        self.names = [re.sub(r"\W", "_", name) for name in classes]

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        labels, weights = self.matrix.get_label(), self.matrix.get_weight()
        metrics = StreamingMetrics(self.task, self.classes)
        metrics.update(labels, model.predict(self.matrix), weights if weights.size else None)
        result = metrics.result()
        values = {"macro_f1": result["macro_f1"] or 0.0, "accuracy": result["accuracy"] or 0.0}
        if self.task == "multiclass":
            for name, scores in zip(self.names, result["per_class"].values()):
                values[f"roc_auc_{name}"] = _or_nan(scores["roc_auc"])
                values[f"pr_auc_{name}"] = _or_nan(scores["pr_auc"])
        log = evals_log.setdefault(self.name, {})
        for metric, value in values.items():
            log.setdefault(metric, []).append(float(value))
        return False


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


class History(xgb.callback.TrainingCallback):
    """Metric values of every round, including rounds done before a resume. Must come first."""

    def __init__(self, saved: EvalLog | None = None) -> None:
        super().__init__()
        self.log: EvalLog = {name: {metric: list(values) for metric, values in metrics.items()} for name, metrics in (saved or {}).items()}

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        raise_if_stopped()
        for name, metrics in evals_log.items():
            for metric, values in metrics.items():
                self.log.setdefault(name, {}).setdefault(metric, []).append(float(values[-1]))
        return False


class EarlyStop(xgb.callback.TrainingCallback):
    """Stops when the ``policy``'s metric on ``data_name`` has not improved for its rounds; keeps only the best trees."""

    def __init__(self, history: History, policy: EarlyStopping, data_name: str) -> None:
        super().__init__()
        self.history = history
        self.policy = policy
        self.data_name = data_name

    @property
    def values(self) -> list[float]:
        return self.history.log.get(self.data_name, {}).get(self.policy.metric, [])

    def should_stop(self) -> bool:
        """Whether the history so far already shows the policy's rounds without improvement."""
        return self.policy.should_stop(self.values)

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        return self.should_stop()

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        best = self.policy.best(self.values)
        if best is not None and best + 1 < model.num_boosted_rounds():
            model = model[: best + 1]
        return model


class Checkpoint(xgb.callback.TrainingCallback):
    """Every ``every`` rounds, saves the booster with ``state()`` to ``path``, atomically (see :mod:`extmem.run._checkpoint`)."""

    def __init__(self, path: Path, every: int, state: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.path = path
        self.every = every
        self.state = state

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        if model.num_boosted_rounds() % self.every == 0:
            save_checkpoint(model, self.path, self.state())
        return False


class FinalPredictions(xgb.callback.TrainingCallback):
    """The final model's predictions for one of its eval matrices, read from XGBoost's prediction cache.

    Last among the callbacks, it sees the model other callbacks return (early stopping's may
    have fewer trees, and no cache); ``xgb.train`` releases the cache once they have run. None
    where the cache does not hold them: a new model, or no round run. Use only with ``gbtree``
    (``dart`` drops trees from its training predictions).
    """

    def __init__(self, matrix: xgb.DMatrix) -> None:
        super().__init__()
        self.matrix = matrix
        self.predictions: np.ndarray | None = None
        self._trained: xgb.Booster | None = None

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        self._trained = model
        return False

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        if model is self._trained:
            self.predictions = model.predict(self.matrix, training=True)  # training=True reads the cache; inference predicts again
        return model


class RoundProgress(xgb.callback.TrainingCallback):
    """Advances a bar each boosting round, shows the latest metric of the last eval set, and times the rounds."""

    def __init__(self, bar: ProgressBar) -> None:
        super().__init__()
        self.bar = bar
        self.seconds: list[float] = []
        self._started = 0.0

    def before_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        self._started = time.perf_counter()
        return False

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: EvalLog) -> bool:
        self.seconds.append(time.perf_counter() - self._started)
        self.bar.update(1)
        if evals_log:
            data_name = list(evals_log)[-1]
            metric, values = next(iter(evals_log[data_name].items()))
            self.bar.set_postfix(f"{data_name}-{metric}={float(values[-1]):.5f}")
        return False

    def timings(self) -> dict[str, float]:
        """The rounds' time: all of them, the first, and the median of the others (seconds)."""
        rest = sorted(self.seconds[1:])
        return {
            "rounds": len(self.seconds),
            "total": round(sum(self.seconds), 3),
            "first": round(self.seconds[0], 3) if self.seconds else 0.0,
            "median": round(rest[len(rest) // 2], 3) if rest else 0.0,
        }
