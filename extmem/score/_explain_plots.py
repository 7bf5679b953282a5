"""Explanation plots: each output's top features by mean |SHAP|, and a beeswarm summary of a row sample (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from extmem._atomic import write_atomically
from extmem.score._attributions import AttributionSums, RowSample
from extmem.score._evaluate import pyplot
from extmem.score._scorer import Scorer

IMPORTANCE_PLOT = "importance.png"
SUMMARY_PLOT = "summary.png"
PLOT_FEATURES = 15


def _feature_values(X: sp.csr_matrix | np.ndarray, column: int, count: bool) -> np.ndarray:
    """A column of sampled rows as values: a count column's absent entries are 0, any other's missing (NaN)."""
    if not sp.issparse(X):
        return np.asarray(X[:, column], dtype=np.float64)
    stored = sp.csr_matrix(X[:, [column]]).tocoo()
    values = np.full(X.shape[0], 0.0 if count else np.nan)
    values[stored.row] = stored.data
    return values


def _colour_scale(values: np.ndarray) -> np.ndarray:
    """Values on 0..1 between their 5th and 95th percentiles (their extremes where those are equal, as in sparse counts), as SHAP's summary plots colour them."""
    if values.size == 0:
        return values
    low, high = np.percentile(values, [5, 95])
    if high <= low:
        low, high = values.min(), values.max()
    return np.clip((values - low) / (high - low), 0, 1) if high > low else np.full(values.size, 0.5)


def plot_explanations(folder: Path, trained: Scorer, sums: AttributionSums, sample: RowSample, batch_rows: int) -> list[str]:
    """Write ``importance.png`` (each output's top features by mean |SHAP|) and, from the row sample, ``summary.png`` into ``folder``.

    The sample's contributions are computed again, ``batch_rows`` at a time; returns the files written.
    """
    plt = pyplot()
    outputs, names = trained.explained_outputs, trained.layout.names
    top = np.argsort(-sums.mean_absolute, axis=1, kind="stable")[:, :PLOT_FEATURES]
    shown = top.shape[1]
    figure, axes = plt.subplots(1, len(outputs), figsize=(6.5 * len(outputs), 0.35 * shown + 1.5), squeeze=False, layout="constrained")
    for output, axis in enumerate(axes[0]):
        ranked = top[output][::-1]
        axis.barh([names[i] for i in ranked], sums.mean_absolute[output, ranked])
        axis.set(title=outputs[output], xlabel="mean |SHAP|")
    write_atomically(folder / IMPORTANCE_PLOT, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    if sample.rows is None:
        return [IMPORTANCE_PLOT]
    rows = sample.rows
    values = np.concatenate(
        [
            np.take_along_axis(trained.contributions(rows[start : start + batch_rows])[:, :, :-1], top[None, :, :], axis=2)
            for start in range(0, rows.shape[0], batch_rows)
        ]
    )
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, rows.shape[0])
    figure, axes = plt.subplots(1, len(outputs), figsize=(6.5 * len(outputs), 0.35 * shown + 1.5), squeeze=False, layout="constrained")
    for output, axis in enumerate(axes[0]):
        for place, column in enumerate(top[output]):
            y = shown - 1 - place
            features = _feature_values(rows, int(column), trained.layout.zero_is_missing[column])
            present = ~np.isnan(features)
            colour = _colour_scale(features[present])
            axis.scatter(values[~present, output, place], y + jitter[~present], s=4, c="lightgrey")
            points = axis.scatter(values[present, output, place], y + jitter[present], s=4, c=colour, cmap="coolwarm", vmin=0, vmax=1)
        axis.set_yticks(range(shown), [names[i] for i in top[output][::-1]])
        axis.axvline(0, color="black", linewidth=0.5)
        axis.set(title=f"{outputs[output]} ({rows.shape[0]:,} sampled rows)", xlabel="SHAP value")
    figure.colorbar(points, ax=axes[0].tolist(), label="feature value (5th to 95th percentile; grey: missing)")
    write_atomically(folder / SUMMARY_PLOT, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return [IMPORTANCE_PLOT, SUMMARY_PLOT]
