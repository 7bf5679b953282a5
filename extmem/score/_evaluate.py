"""Evaluate: a trained model + a labelled dataset -> streaming metrics equal to scikit-learn's, and precision-recall plots."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from extmem._atomic import write_atomically, write_json
from extmem._destinations import check_distinct_outputs, check_output_file, output_format
from extmem._measure import MemoryMonitor
from extmem._progress import ProgressBar
from extmem.encode._probe import plan_pass
from extmem.errors import LabelError, OptionError
from extmem.read._dataset import DatasetLike, as_dataset, check_rows, takes_dataset_options
from extmem.score._metrics import StreamingMetrics
from extmem.score._model import ModelLike, as_model


def check_class_labels(labels: np.ndarray, n_classes: int, where: str) -> None:
    """Refuse labels that are not class ids of the model (0..n_classes-1), naming the first one and ``where``."""
    bad = (labels != np.round(labels)) | (labels < 0) | (labels >= n_classes)
    if bad.any():
        value = float(labels[bad][0])
        msg = f"The label {value:g} of {where} is not one of the model's {n_classes} classes (ids 0 to {n_classes - 1})."
        raise LabelError(msg)


@takes_dataset_options()
def evaluate(
    model: ModelLike,
    data: DatasetLike,
    *,
    label: str | None = None,
    out: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Streaming metrics of ``model`` on ``data`` (label: the model's, unless ``label`` is given); mirrors ``extmem evaluate``.

    Classifiers get accuracy, macro-F1, log-loss, per-class precision/recall/F1/ROC-AUC/PR-AUC
    and a confusion matrix; regressors get RMSE, MAE and R²; ranking models XGBoost's NDCG and MAP
    over the queries of ``qid`` (the model's query column, unless given). ``out`` writes them as JSON; ``plot``
    writes the precision-recall curves as PNG (PDF or SVG by the file's suffix) (needs matplotlib: ``pip install 'extmem[plot]'``,
    checked before any work); existing files are replaced only with ``overwrite``.
    ``memory_budget`` bounds the batch rows as in :func:`predict`.
    """
    check_distinct_outputs({"out": out, "plot": plot})
    if out is not None:
        check_output_file(out, overwrite=overwrite, option="out")
        output_format(out, {".json": "JSON", "": "JSON"})
    if plot is not None:
        check_output_file(plot, overwrite=overwrite, option="plot")
        output_format(plot, PLOT_FORMATS, "plot")
        pyplot()
    trained = as_model(model)
    if plot is not None and trained.task not in ("binary", "multiclass"):
        msg = f"Precision-recall curves ('plot') need class probabilities; this model's objective is {trained.objective!r}."
        raise OptionError(msg, options=("plot",))
    given = {**options, "label": label or trained.layout.label}
    if trained.ranking and given.get("qid") is None:
        given["qid"] = trained.layout.qid  # the query column the model was trained with
    dataset = as_dataset(data, given)
    if dataset.label is None:
        msg = "Evaluation needs a label column; the model records none, so give 'label'."
        raise OptionError(msg, options=("label",))
    if not trained.ranking and dataset.qid is not None:
        msg = f"The 'qid' option gives a ranking model's query groups; this model's objective is {trained.objective!r}."
        raise OptionError(msg, options=("qid",))
    if trained.ranking and dataset.qid is None:
        msg = f"Evaluating a ranking model ({trained.objective}) needs the data's query groups; give the query-id column as 'qid'."
        raise OptionError(msg, options=("qid",))
    started = time.perf_counter()
    metrics = StreamingMetrics(trained.task, trained.classes)
    ranking = trained.ranking_metrics() if trained.ranking else None
    with MemoryMonitor() as monitor:
        selection = trained.select(dataset)
        plan = plan_pass(selection, memory_budget)
        with ProgressBar(selection.rows, "evaluating", "rows", progress) as bar:
            for batch, raw in trained.score(selection, plan.batch_rows, whole_rows=plan.page_rows):
                assert batch.label is not None
                if ranking is not None:
                    assert batch.qid is not None
                    ranking.update(batch.label, raw, batch.qid, batch.weight)
                else:
                    if trained.classes is not None:
                        check_class_labels(batch.label, len(trained.classes), f"{dataset.label!r} in {batch.where}")
                    metrics.update(batch.label, raw, batch.weight)
                bar.update(batch.rows)
    rows = ranking.rows if ranking is not None else metrics.rows
    check_rows(dataset, "to evaluate", rows, None if ranking is not None else metrics.weight_total)
    result = ranking.result() if ranking is not None else metrics.result()
    if plot is not None:
        plot_pr_curves(metrics, plot, replace=overwrite)
    result.update(
        seconds=round(time.perf_counter() - started, 3), peak_rss_bytes=monitor.peak_rss_bytes, peak_anon_bytes=monitor.peak_anon_bytes
    )
    if out is not None:
        write_json(out, result, replace=overwrite)
    return result


PLOT_FORMATS = {".png": "PNG", ".pdf": "PDF", ".svg": "SVG", "": "PNG"}
"""Image formats of a plot by its file's suffix."""


def pyplot() -> Any:
    """matplotlib's pyplot on its file-only backend, or an error naming the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        msg = "Plotting ('plot') needs matplotlib: pip install 'extmem[plot]'."
        raise OptionError(msg, options=("plot",)) from None
    return plt


def plot_pr_curves(metrics: StreamingMetrics, path: str | os.PathLike[str], *, replace: bool = True) -> None:
    """Write a PNG of each class's precision-recall curve (atomically)."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 5))
    summary = metrics.result()
    for name, (precision, recall) in metrics.pr_curves().items():
        area = summary["per_class"][name].get("pr_auc", summary.get("pr_auc"))
        axes.step(
            np.concatenate([[0.0], recall]), np.concatenate([[precision[0]], precision]), where="post", label=f"{name} (AP {area:.3f})"
        )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall by class")
    axes.legend(loc="lower left")
    file_format = output_format(path, PLOT_FORMATS, "plot")
    write_atomically(path, lambda file: figure.savefig(file, format=file_format.lower(), dpi=120), replace=replace)
    plt.close(figure)
