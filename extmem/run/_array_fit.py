"""A fit on in-memory arrays: any class labels scikit-learn takes (as XGBoost's class ids 0..K-1), sample weights and eval
sets checked before XGBoost sees them."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.utils.multiclass import check_classification_targets

from extmem.errors import OptionError
from extmem.read._dataset import is_dataset

CLASSES_ATTRIBUTE = "extmem_classes"
"""The booster attribute holding the class labels of a classifier fitted on arrays of labels other than 0..K-1."""


def label_classes(y: Any) -> np.ndarray | None:
    """The sorted class labels of 1-d ``y`` when they are not XGBoost's own 0..K-1 (None: give ``y`` to XGBoost as it is)."""
    labels = np.asarray(y)
    if labels.ndim != 1:
        return None  # multi-label targets: XGBoost's indicator columns
    classes, _ = sorted_classes(labels)
    if classes.dtype.kind in "iuf" and np.array_equal(classes, np.arange(classes.size)):
        return None
    return classes


def sorted_classes(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The sorted class labels of ``y`` and each label's position among them; labels that are no classes are refused."""
    try:
        check_classification_targets(y)  # refuses continuous labels in scikit-learn's words
        return np.unique(y, return_inverse=True)
    except TypeError:  # object labels that do not sort together, such as text and None
        kinds = sorted({type(label).__name__ for label in np.asarray(y).tolist()})
        msg = f"The labels y mix kinds that cannot be ordered as classes ({', '.join(kinds)}); give labels of one kind, none missing."
        raise ValueError(msg) from None


def class_ids(y: Any, classes: np.ndarray, name: str) -> np.ndarray:
    """``y`` as positions in ``classes``; a label outside them is refused naming ``name``."""
    labels = np.asarray(y)
    try:
        ids = np.searchsorted(classes, labels).clip(0, classes.size - 1)
        known = classes[ids] == labels
    except TypeError:  # object labels that do not compare with the classes
        members = set(classes.tolist())
        known = np.fromiter((label in members for label in labels.tolist()), bool, labels.size)
    if not known.all():
        msg = f"The labels of {name} hold {labels[~known].tolist()[0]!r}, which is not one of the classes ({', '.join(map(repr, classes.tolist()))})."
        raise OptionError(msg)
    return ids


def classes_to_json(classes: np.ndarray) -> str:
    """The class labels as text for a booster attribute, their dtype kept."""
    return json.dumps({"dtype": classes.dtype.str, "values": classes.tolist()})


def classes_from_json(text: str) -> np.ndarray:
    """The class labels :func:`classes_to_json` wrote."""
    stored = json.loads(text)
    return np.asarray(stored["values"], dtype=np.dtype(stored["dtype"]))


def class_ids_of(y: Any, label_map: Mapping[str, int], name: str) -> np.ndarray:
    """Text labels ``y`` as the class ids of a dataset's ``label_map``; a label outside it is refused naming ``name``."""
    classes = np.array(sorted(label_map))
    return np.array([label_map[label] for label in classes.tolist()], dtype=np.float32)[class_ids(y, classes, name)]


def check_array_evals(eval_set: Sequence[Any] | None) -> None:
    """Refuse a dataset in the eval sets of a fit on arrays (XGBoost would read a path as a text-file URI)."""
    for i, item in enumerate(eval_set or []):
        if is_dataset(item) or (isinstance(item, (tuple, list)) and item and is_dataset(item[0])):
            msg = f"eval_set[{i}] is a dataset, but X is in memory: evaluate arrays on (X, y) pairs, or fit on a dataset to evaluate datasets."
            raise OptionError(msg, options=("eval_set",))


def check_weights(weights: Any, name: str) -> None:
    """Refuse sample weights XGBoost refuses in its own words: non-finite, negative, or all zero."""
    if weights is None:
        return
    values = np.asarray(weights, dtype=np.float64).ravel()
    if not np.isfinite(values).all():
        msg = f"The {name!r} values must be finite; {int((~np.isfinite(values)).sum())} are NaN or infinite."
        raise OptionError(msg)
    if (values < 0).any():
        msg = f"The {name!r} values must be 0 or more; {int((values < 0).sum())} are negative (first: {values[values < 0][0]:g})."
        raise OptionError(msg)
    if values.size and not values.any():
        msg = f"The {name!r} values are all zero: there is nothing to fit."
        raise OptionError(msg)
