"""Streaming evaluation: metrics accumulated batch by batch, equal to scikit-learn's on the whole.

Counts (confusion matrix, log-loss sums) are exact. Ranking metrics (ROC-AUC, average
precision) need every score; :class:`ScoreCounts` keeps the distinct scores with their positive
and negative weights, which is exact while there are at most ``max_distinct`` of them per class.
Beyond that the scores are rounded to 1/1024 steps in log-odds (about 0.025 % in probability near
0.5), which merges only near-ties and bounds the memory by a few tens of thousands of bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_DISTINCT_SCORES = 1 << 20
_LOGIT_STEPS = 1024.0


def task_of(objective: str) -> str:
    """``"multiclass"``, ``"binary"`` (both probabilistic), ``"hard"`` (class ids) or ``"regression"``."""
    if objective == "multi:softprob":
        return "multiclass"
    if objective == "binary:logistic":
        return "binary"
    if objective in ("multi:softmax", "binary:hinge"):
        return "hard"
    return "regression"


UPDATE_CHUNK_ROWS = 65_536
"""Rows per step of :meth:`StreamingMetrics.update`."""


class ScoreCounts:
    """Weights of positive and negative rows per distinct score, for one class against the rest."""

    def __init__(self, max_distinct: int = MAX_DISTINCT_SCORES) -> None:
        self.max_distinct = max_distinct
        self.binned = False
        self.keys = np.zeros(0)
        self.positive = np.zeros(0)
        self.negative = np.zeros(0)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def _key(self, scores: np.ndarray) -> np.ndarray:
        scores = scores.astype(np.float64)
        if not self.binned:
            return scores
        with np.errstate(divide="ignore"):
            log_odds = np.log(scores) - np.log1p(-scores)
        return np.round(log_odds * _LOGIT_STEPS)

    def add(self, scores: np.ndarray, is_positive: np.ndarray, weights: np.ndarray) -> None:
        """Count a batch; merging is deferred until enough rows are pending (amortised sorting)."""
        self._pending.append((self._key(scores), np.where(is_positive, weights, 0.0), np.where(is_positive, 0.0, weights)))
        self._pending_rows += scores.size
        if self._pending_rows >= max(65536, self.keys.size):
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self.keys, *(p[0] for p in self._pending)])
        positive = np.concatenate([self.positive, *(p[1] for p in self._pending)])
        negative = np.concatenate([self.negative, *(p[2] for p in self._pending)])
        self._pending, self._pending_rows = [], 0
        self.keys, inverse = np.unique(keys, return_inverse=True)
        self.positive = np.bincount(inverse, positive, minlength=self.keys.size)
        self.negative = np.bincount(inverse, negative, minlength=self.keys.size)
        if not self.binned and self.keys.size > self.max_distinct:
            self.binned = True
            with np.errstate(divide="ignore"):
                log_odds = np.log(self.keys) - np.log1p(-self.keys)
            self._pending = [(np.round(log_odds * _LOGIT_STEPS), self.positive, self.negative)]
            self.keys, self.positive, self.negative = np.zeros(0), np.zeros(0), np.zeros(0)
            self._merge()

    def _curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Cumulative true and false positive weights at each threshold, highest score first."""
        self._merge()
        true_pos = np.cumsum(self.positive[::-1])
        false_pos = np.cumsum(self.negative[::-1])
        if true_pos.size == 0 or true_pos[-1] <= 0 or false_pos[-1] <= 0:
            return None
        return true_pos, false_pos

    def roc_auc(self) -> float | None:
        """Area under the ROC curve (ties count half), as ``sklearn.metrics.roc_auc_score``."""
        curve = self._curve()
        if curve is None:
            return None
        true_pos, false_pos = curve
        tpr = np.concatenate([[0.0], true_pos / true_pos[-1]])
        fpr = np.concatenate([[0.0], false_pos / false_pos[-1]])
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Precision and recall at each threshold, highest score first."""
        curve = self._curve()
        if curve is None:
            return None
        true_pos, false_pos = curve
        return true_pos / (true_pos + false_pos), true_pos / true_pos[-1]

    def average_precision(self) -> float | None:
        """Area under the precision-recall curve as a step sum, as ``sklearn.metrics.average_precision_score``."""
        curve = self.precision_recall()
        if curve is None:
            return None
        precision, recall = curve
        return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclass(frozen=True)
class ConfusionScores:
    """Per-class precision, recall and F1, accuracy and macro-F1 (over classes seen in truth or predictions)."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    accuracy: float | None
    macro_f1: float | None


def confusion_scores(confusion: np.ndarray) -> ConfusionScores:
    """Scores of a (true class x predicted class) weight matrix, as scikit-learn computes them (0 where undefined)."""
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    hits = np.diag(confusion)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, hits / predicted_count, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted_count > 0)
    total = confusion.sum()
    return ConfusionScores(
        precision,
        recall,
        f1,
        float(hits.sum() / total) if total else None,
        float(f1[present].mean()) if present.any() else None,
    )


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Weights of (true, predicted) class pairs as an (n_classes x n_classes) matrix."""
    pairs = truth.astype(np.int64) * n_classes + predicted.astype(np.int64)
    return np.bincount(pairs, weights, minlength=n_classes * n_classes).astype(np.float64).reshape(n_classes, n_classes)


@dataclass
class _Sums:
    weight: float = 0.0
    log_loss: float = 0.0
    squared_error: float = 0.0
    absolute_error: float = 0.0
    label: float = 0.0
    label_squared: float = 0.0


class StreamingMetrics:
    """Accumulates metrics over batches of labels and predictions (``predict`` output of the booster).

    ``classes`` names the classes (class ids 0..K-1); ``task`` is from :func:`task_of`.
    """

    def __init__(self, task: str, classes: Sequence[str] | None = None, *, max_distinct: int = MAX_DISTINCT_SCORES) -> None:
        self.task = task
        self.classes = list(classes) if classes is not None else None
        self.rows = 0
        self._sums = _Sums()
        self._confusion: np.ndarray | None = None
        self._scores: list[ScoreCounts] = []
        self._max_distinct = max_distinct
        if task != "regression":
            n_classes = len(self.classes) if self.classes is not None else 2 if task == "binary" else 0
            self._grow(n_classes)

    def _grow(self, n_classes: int) -> None:
        old = self._confusion if self._confusion is not None else np.zeros((0, 0))
        if n_classes <= old.shape[0]:
            return
        confusion = np.zeros((n_classes, n_classes))
        confusion[: old.shape[0], : old.shape[1]] = old
        self._confusion = confusion
        if self.task in ("multiclass", "binary"):
            wanted = 1 if self.task == "binary" else n_classes
            self._scores.extend(ScoreCounts(self._max_distinct) for _ in range(wanted - len(self._scores)))

    @property
    def weight_total(self) -> float:
        """The sum of the weights of the rows added (their number, without weights)."""
        return self._sums.weight

    def update(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add one batch: ``predictions`` is (n, K) for multi-class, (n,) otherwise.

        Large batches are taken ``UPDATE_CHUNK_ROWS`` rows at a time, so the temporaries stay small
        whatever the size of the arrays given (a whole training matrix's predictions, say).
        """
        for start in range(0, max(len(labels), 1), UPDATE_CHUNK_ROWS):
            end = start + UPDATE_CHUNK_ROWS
            self._update(labels[start:end], predictions[start:end], None if weights is None else weights[start:end])

    def _update(self, labels: np.ndarray, predictions: np.ndarray, weights: np.ndarray | None) -> None:
        labels = np.asarray(labels, dtype=np.float64)
        w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=np.float64)
        self.rows += labels.size
        s = self._sums
        s.weight += float(w.sum())
        if self.task == "regression":
            error = np.asarray(predictions, dtype=np.float64) - labels
            s.squared_error += float(np.dot(w, error**2))
            s.absolute_error += float(np.dot(w, np.abs(error)))
            s.label += float(np.dot(w, labels))
            s.label_squared += float(np.dot(w, labels**2))
            return
        truth = labels.astype(np.int64)
        if self.task == "multiclass":
            probabilities = np.asarray(predictions)
            self._grow(probabilities.shape[1])
            predicted = probabilities.argmax(axis=1)
            eps = np.finfo(probabilities.dtype).eps
            true_probability = np.clip(probabilities[np.arange(truth.size), truth], eps, 1 - eps)
            for k, counts in enumerate(self._scores):
                counts.add(probabilities[:, k], truth == k, w)
        elif self.task == "binary":
            probability = np.asarray(predictions)
            predicted = (probability > 0.5).astype(np.int64)
            eps = np.finfo(probability.dtype).eps
            true_probability = np.clip(np.where(truth == 1, probability, 1 - probability), eps, 1 - eps)
            self._scores[0].add(probability, truth == 1, w)
        else:
            predicted = np.asarray(predictions).astype(np.int64)
            true_probability = None
        self._grow(int(max(truth.max(initial=0), predicted.max(initial=0))) + 1)
        assert self._confusion is not None
        self._confusion += confusion_matrix(truth, predicted, self._confusion.shape[0], w)
        if true_probability is not None:
            s.log_loss -= float(np.dot(w, np.log(true_probability.astype(np.float64))))

    def _class_names(self, n_classes: int) -> list[str]:
        if self.classes is not None and len(self.classes) >= n_classes:
            return self.classes[:n_classes]
        return [str(k) for k in range(n_classes)]

    def result(self) -> dict[str, Any]:
        """Metrics so far: the keys depend on the task (see the README's 'Evaluation' section)."""
        s = self._sums
        if self.task == "regression":
            variance = s.label_squared - s.label**2 / s.weight if s.weight else 0.0
            return {
                "rows": self.rows,
                "rmse": float(np.sqrt(s.squared_error / s.weight)) if s.weight else None,
                "mae": s.absolute_error / s.weight if s.weight else None,
                "r2": 1 - s.squared_error / variance if variance > 0 else None,
            }
        assert self._confusion is not None
        confusion = self._confusion
        names = self._class_names(confusion.shape[0])
        scores = confusion_scores(confusion)
        per_class: dict[str, dict[str, Any]] = {}
        for k, name in enumerate(names):
            per_class[name] = {
                "precision": float(scores.precision[k]),
                "recall": float(scores.recall[k]),
                "f1": float(scores.f1[k]),
                "support": float(confusion[k].sum()),
            }
        out: dict[str, Any] = {"rows": self.rows, "accuracy": scores.accuracy, "macro_f1": scores.macro_f1}
        if self.task == "multiclass":
            out["mlogloss"] = s.log_loss / s.weight if s.weight else None
            for k, counts in enumerate(self._scores):
                per_class[names[k]]["roc_auc"] = counts.roc_auc()
                per_class[names[k]]["pr_auc"] = counts.average_precision()
            out["macro_roc_auc"] = _mean_defined([c["roc_auc"] for c in per_class.values()])
            out["macro_pr_auc"] = _mean_defined([c["pr_auc"] for c in per_class.values()])
        elif self.task == "binary":
            out["logloss"] = s.log_loss / s.weight if s.weight else None
            out["auc"] = self._scores[0].roc_auc()
            out["pr_auc"] = self._scores[0].average_precision()
        out["per_class"] = per_class
        out["confusion_matrix"] = {"classes": names, "counts": confusion.tolist()}
        return out

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Precision-recall curves (precision, recall) per class (the positive class when binary)."""
        names = self._class_names(len(self._scores) if self.task == "multiclass" else 2)
        if self.task == "binary":
            names = names[1:]
        curves = {}
        for name, counts in zip(names, self._scores):
            curve = counts.precision_recall()
            if curve is not None:
                curves[name] = curve
        return curves


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
