"""The datasets a training run reads: the training data and its validation data, as every trainer takes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from extmem.errors import OptionError, check_positive_int
from extmem.read._dataset import Dataset, DatasetLike, Holdout, as_dataset


def query_column(data: DatasetLike, options: Mapping[str, Any]) -> str | None:
    """The ``qid`` column a run's options (or its :class:`Dataset`) name, known before the datasets are built."""
    return options.get("qid", data.qid if isinstance(data, Dataset) else None)


def training_datasets(
    data: DatasetLike,
    label: str | None,
    options: Mapping[str, Any],
    valid: DatasetLike | None,
    valid_fraction: float | None,
    group_by: str | None,
    seed: int,
    early_stopping_rounds: int | None = None,
    *,
    queries: bool = False,
) -> tuple[Dataset, Dataset | None]:
    """The training dataset and its validation dataset, if any.

    ``label`` (unless None) and ``options`` are :class:`Dataset` fields applied over ``data``. Validation data is either
    ``valid`` (read with the training options that define the features and labels) or the
    ``valid_fraction`` of rows split off deterministically (by ``group_by`` groups if given, else
    by the ``qid`` queries, with ``seed``). ``early_stopping_rounds`` needs one of them.
    ``queries``: the trainer takes query groups (a ``qid`` column); others refuse one.
    """
    check_positive_int(early_stopping_rounds, "early_stopping_rounds", allow_none=True)
    if early_stopping_rounds is not None and valid is None and valid_fraction is None:
        msg = "The 'early_stopping_rounds' option needs validation data ('valid' or 'valid_fraction')."
        raise OptionError(msg, options=("early_stopping_rounds", "valid", "valid_fraction"))
    dataset = as_dataset(data, {**options, "label": label} if label is not None else options)
    if dataset.label is None:
        msg = "Training needs a label column: give 'label' (or a 'preset' that names one, such as 'splice-sites')."
        raise OptionError(msg, options=("label", "preset"))
    if dataset.qid is not None and not queries:
        msg = "Query groups ('qid') are for XGBoost's ranking objectives; the incremental trainer takes none."
        raise OptionError(msg, options=("qid",))
    if valid_fraction is not None:
        if valid is not None:
            msg = "Give either 'valid' or 'valid_fraction', not both."
            raise OptionError(msg, options=("valid", "valid_fraction"))
        holdout = Holdout(valid_fraction, group_by if group_by is not None else dataset.qid, seed)  # a query stays whole
        training = replace(dataset, holdout=holdout)
        return training, replace(training, holdout=replace(holdout, side="valid"), max_rows=None)
    if group_by is not None:
        msg = "The 'group_by' option needs 'valid_fraction'."
        raise OptionError(msg, options=("group_by", "valid_fraction"))
    if valid is None:
        return dataset, None
    shared = {
        "label": dataset.label,
        "weight": dataset.weight,
        "qid": dataset.qid,
        "label_map": dataset.label_map,
        "filter": dataset.filter,
        "batch_rows": dataset.batch_rows,
        "zero_is_missing": dataset.zero_is_missing,
        "strict_categories": dataset.strict_categories,
    }
    return dataset, as_dataset(valid, shared)
