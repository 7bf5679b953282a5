"""The incremental trainer's first pass: per-feature statistics for standardisation, class totals, label checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extmem._contracts import Block
from extmem._layout import FeatureLayout
from extmem.errors import FeatureValueError, LabelError
from extmem.score._incremental_model import FeatureParts


@dataclass
class FeatureStats:
    """Per-feature count of values, mean and sum of squared deviations, merged page by page (Chan et al.).

    Count columns count every row (absent means 0); value columns count their non-missing values.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, n_features: int) -> FeatureStats:
        return cls(np.zeros(n_features), np.zeros(n_features), np.zeros(n_features))

    def add(self, parts: FeatureParts) -> None:
        """Merge one page's statistics."""
        values, counts = parts.values, parts.counts
        present = ~np.isnan(values)
        n_values = present.sum(axis=0).astype(np.float64)
        filled = np.where(present, values, 0.0)
        value_mean = filled.sum(axis=0) / np.maximum(n_values, 1)
        value_m2 = (np.where(present, values - value_mean, 0.0) ** 2).sum(axis=0)
        rows = float(counts.shape[0])
        count_mean = np.asarray(counts.sum(axis=0)).ravel() / max(rows, 1)
        count_m2 = np.maximum(np.asarray(counts.multiply(counts).sum(axis=0)).ravel() - rows * count_mean**2, 0.0)
        for columns, n, mean, m2 in (
            (parts.value_columns, n_values, value_mean, value_m2),
            (parts.count_columns, np.full(counts.shape[1], rows), count_mean, count_m2),
        ):
            before = self.count[columns]
            total = before + n
            delta = mean - self.mean[columns]
            share = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
            self.mean[columns] += delta * share
            self.m2[columns] += m2 + delta**2 * before * share
            self.count[columns] = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation; 1 where a feature is constant or never seen, so scaling leaves it alone."""
        variance = np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0)
        std = np.sqrt(variance)
        return np.where(std > 0, std, 1.0)


class FirstPass:
    """What the first read of the training data gathers: feature statistics and weighted rows per class; checks labels."""

    def __init__(self, needs_counts: bool, label_where: str) -> None:
        self.needs_counts = needs_counts
        self.label_where = label_where
        self.stats: FeatureStats | None = None
        self.class_totals = np.zeros(0)

    def add(self, page: Block, layout: FeatureLayout) -> None:
        labels = np.asarray(page.label)
        if np.any(labels != np.round(labels)) or labels.min(initial=0) < 0:
            bad = float(labels[(labels != np.round(labels)) | (labels < 0)][0])
            msg = (
                f"Incremental models are classifiers: the label of {self.label_where} must hold class ids or strings; found {bad:g}. "
                "Map the labels to class ids 0..K-1 with a 'label_map' (e.g. 1=1,-1=0)."
            )
            raise LabelError(msg, options=("label_map",))
        parts = FeatureParts.split(page.X, layout)
        if self.needs_counts:
            _check_counts(parts, layout)
        if self.stats is None:
            self.stats = FeatureStats.empty(len(layout.names))
        self.stats.add(parts)
        weights = np.ones(page.rows) if page.weight is None else np.asarray(page.weight, dtype=np.float64)
        counts = np.bincount(labels.astype(np.int64), weights=weights)
        grown = np.zeros(max(counts.size, self.class_totals.size))
        grown[: self.class_totals.size] += self.class_totals
        grown[: counts.size] += counts
        self.class_totals = grown

    def label_range(self) -> tuple[float, float, bool]:
        """The smallest and largest class id seen, and whether any label was fractional (never: :meth:`add` refuses them)."""
        seen = np.flatnonzero(self.class_totals)
        return (float(seen.min()), float(seen.max()), False) if seen.size else (0.0, 0.0, False)

    def class_weights(self, n_classes: int) -> np.ndarray:
        """scikit-learn's 'balanced' weights, rows / (classes present x rows of the class); 0 for absent classes."""
        totals = np.zeros(n_classes)
        totals[: self.class_totals.size] = self.class_totals[:n_classes]
        present = totals > 0
        return np.where(present, totals.sum() / (present.sum() * np.where(present, totals, 1)), 0.0)


def _check_counts(parts: FeatureParts, layout: FeatureLayout) -> None:
    """Multinomial naive Bayes needs non-negative counts; name the first column that has a negative one."""
    if parts.counts.nnz and parts.counts.data.min() < 0:
        column = parts.count_columns[parts.counts.indices[np.argmin(parts.counts.data)]]
        hint = " (signed hashing makes counts negative: do without 'signed')" if layout.kmers is not None and layout.kmers.signed else ""
        msg = f"naive_bayes needs non-negative counts, but the count column {layout.names[column]!r} holds a negative value{hint}."
        raise FeatureValueError(msg, options=("signed",))
