"""Cross-validation out of core: k folds of one dataset, each validated by a model trained on the others.

A fold is a deterministic slice of the rows (or of the ``group_by`` groups, such as genes) by
:class:`Holdout`'s hash, so every fold reads the shards as they are, without copies, and a gene
never lies on both sides. Each fold is one :func:`extmem.train` run through external memory.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from extmem._atomic import write_json
from extmem._defaults import DEFAULT_ROUNDS
from extmem._destinations import check_output_file, output_format
from extmem.errors import NoRowsError, OptionError, is_integer
from extmem.read._dataset import DatasetLike, Holdout, as_dataset, takes_dataset_options
from extmem.run._xgboost import train

MAX_FOLDS = 100
MATRIX_OPTIONS = ("page_rows", "sketch_rows", "cache", "memory_budget", "prefetch", "cache_dir")
"""Options of :func:`extmem.train` that shape each fold's matrices rather than the dataset."""


@takes_dataset_options(passed_on=MATRIX_OPTIONS)
def cross_validate(
    data: DatasetLike,
    label: str | None = None,
    *,
    folds: int = 5,
    group_by: str | None = None,
    seed: int = 0,
    rounds: int = DEFAULT_ROUNDS,
    params: dict[str, Any] | None = None,
    early_stopping_rounds: int | None = None,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """K-fold cross-validation of XGBoost on a parquet dataset, each fold trained through external memory.

    Fold k validates on the rows (the ``group_by`` groups if given, else a ``qid`` column's queries) whose hash, keyed by ``seed``,
    falls in [k/folds, (k+1)/folds), and trains on all others. ``params``, ``rounds``,
    ``early_stopping_rounds`` (per fold) and the matrix options of :func:`extmem.train`
    (``page_rows``, ``sketch_rows``, ``cache``, ``memory_budget``, ``prefetch``, ``cache_dir``)
    apply to every fold; ``label`` and the other ``options`` are dataset options. Returns
    ``history``, per validation metric the ``mean`` and ``std`` over folds at each round (as
    ``xgboost.cv``, up to the fewest rounds a fold kept), ``metrics`` (the same at the end of each
    fold's run), and per fold its rows, best iteration and metrics; ``out`` also writes it as JSON.
    """
    if not is_integer(folds) or not 2 <= folds <= MAX_FOLDS:
        msg = f"The 'folds' option must be an integer from 2 to {MAX_FOLDS}. Got {folds!r} instead."
        raise OptionError(msg, options=("folds",))
    if out is not None:
        check_output_file(out, overwrite=overwrite)
        output_format(out, {".json": "JSON", "": "JSON"})
    matrix = {name: options.pop(name) for name in MATRIX_OPTIONS if name in options}
    dataset = as_dataset(data, {**options, "label": label} if label is not None else options)
    if dataset.holdout is not None:
        msg = "Cross-validation makes its own splits: give a dataset without a 'holdout'."
        raise OptionError(msg, options=("holdout",))
    group_by = group_by if group_by is not None else dataset.qid  # a query stays whole
    runs = []
    for fold in range(folds):
        start = fold / folds
        holdout = Holdout((fold + 1) / folds - start, group_by, seed, start=start)
        try:
            result = train(
                replace(dataset, holdout=holdout),
                valid=replace(dataset, holdout=replace(holdout, side="valid"), max_rows=None),
                rounds=rounds,
                params=params,
                early_stopping_rounds=early_stopping_rounds,
                progress=progress,
                **matrix,
            )
        except NoRowsError as exc:
            if " split of " not in str(exc):
                raise
            side = "validation" if "validation split" in str(exc) else "training"
            what = f"groups of {group_by!r}" if group_by else "rows"
            msg = f"Fold {fold + 1} of {folds} of {dataset.paths[0]!r} has no {side} rows: too few {what} for {folds} folds; use fewer 'folds'."
            raise NoRowsError(msg, options=("folds",)) from None
        runs.append(result.report)
    summary = _summary(runs, group_by, seed)
    if out is not None:
        write_json(out, summary, replace=overwrite)
    return summary


def _summary(reports: list[dict[str, Any]], group_by: str | None, seed: int) -> dict[str, Any]:
    histories = [report["history"]["valid"] for report in reports]
    names = [name for name in histories[0] if all(name in history for history in histories)]
    kept = min(len(history[name]) for history in histories for name in names) if names else 0

    def spread(values: list[Any]) -> dict[str, Any]:
        """Mean and standard deviation over folds of the folds' values (None where a fold has none, as an AUC without positives)."""
        array = np.array(values, dtype=np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a round no fold has a value for
            mean, std = np.nanmean(array, axis=0), np.nanstd(array, axis=0)
        return {"mean": np.where(np.isnan(mean), None, mean).tolist(), "std": np.where(np.isnan(std), None, std).tolist()}

    return {
        "folds": len(reports),
        "group_by": group_by,
        "seed": seed,
        "history": {name: spread([history[name][:kept] for history in histories]) for name in names},
        "metrics": {name: spread([report["metrics"]["valid"][name] for report in reports]) for name in names},
        "per_fold": [
            {
                "train_rows": report["data"]["train"]["rows"],
                "valid_rows": report["data"]["valid"]["rows"],
                "best_iteration": (report["early_stopping"] or {}).get("best_iteration"),
                "metrics": report["metrics"]["valid"],
            }
            for report in reports
        ],
    }
