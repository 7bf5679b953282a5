"""Early stopping: one policy for every trainer, over the history of one metric on the validation data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAXIMIZED = ("auc", "aucpr", "pre", "map", "ndcg", "macro_f1", "accuracy", "roc_auc", "pr_auc")
"""Metrics where larger is better (by the name before any ``@``); every other metric is minimised."""


def maximized(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better."""
    return metric.split("@")[0] in MAXIMIZED or metric.startswith(("roc_auc_", "pr_auc_"))


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after ``rounds`` rounds (or epochs) without a better ``metric``; the best one is kept."""

    rounds: int
    metric: str

    @property
    def maximize(self) -> bool:
        return maximized(self.metric)

    def best(self, values: Sequence[float]) -> int | None:
        """The index of the best value so far (the first, on ties), or None before any."""
        if not len(values):
            return None
        array = np.asarray(values, dtype=np.float64)
        return int(np.argmax(array) if self.maximize else np.argmin(array))

    def should_stop(self, values: Sequence[float]) -> bool:
        """Whether ``values`` already hold ``rounds`` rounds after the best one."""
        best = self.best(values)
        return best is not None and len(values) - 1 - best >= self.rounds

    def summary(self, values: Sequence[float], planned: int) -> dict[str, object]:
        """What the report says of it: the metric, the best round and its value, and whether it ended the run early."""
        best = self.best(values)
        return {
            "rounds": self.rounds,
            "metric": self.metric,
            "best_iteration": best,
            "best_score": float(values[best]) if best is not None else None,
            "fired": len(values) < planned,
        }
