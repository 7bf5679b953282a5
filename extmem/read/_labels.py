"""The label map of a selection: class ids for string labels, and for numeric labels a map of numbers when one is given."""

from __future__ import annotations

from collections.abc import Mapping

from extmem._layout import FeatureLayout, numeric_keys
from extmem._presets import is_preset_label_map
from extmem.errors import LabelError
from extmem.read._dataset import Dataset
from extmem.read._scan import STRING, Schema


def label_map_of(
    schema: Schema, dataset: Dataset, dictionaries: Mapping[str, tuple[str, ...]], model: FeatureLayout | None
) -> dict[str, int] | None:
    """Class ids of string labels: a model's own, else the dataset's label map, else the label's values in sorted order.

    Numeric labels: the map of numbers given (such as -1=0,1=1), else None: class ids or values as
    they are. A model trained on numeric labels has no names for its classes, so string labels
    scored against it need a label map.
    """
    label = dataset.label
    if label is None:
        return None
    if schema.columns[label].kind != STRING:
        return _numeric_label_map(schema, dataset, model)
    if model is not None and model.label_map is not None:
        return dict(model.label_map)
    if dataset.label_map is not None:
        return dict(dataset.label_map)
    if model is not None:
        msg = (
            f"The model was trained on numeric labels (class ids), but the label column {label!r} holds strings "
            f"(first in {schema.columns[label].first_shard!r}); give a 'label_map' from its values to the model's class ids."
        )
        raise LabelError(msg, options=("label_map",))
    return {value: index for index, value in enumerate(dictionaries[label])}


def _numeric_label_map(schema: Schema, dataset: Dataset, model: FeatureLayout | None) -> dict[str, int] | None:
    """The label map of numeric labels: the model's or the dataset's when its keys are numbers; a preset's class names pass."""
    given = model.label_map if model is not None else dataset.label_map
    if given is None:
        return None
    if numeric_keys(given) is not None:
        return dict(given)
    if model is not None or is_preset_label_map(given):  # a model's class names, or a preset's: the numbers are class ids
        return None
    label = dataset.label
    msg = (
        f"The label column {label!r} holds numbers (first in {schema.columns[str(label)].first_shard!r}), but the label map names "
        f"{list(given)[:5]}; map the numbers to class ids (e.g. 1=1,-1=0), or leave the label map out."
    )
    raise LabelError(msg, options=("label_map",))
