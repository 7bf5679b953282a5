"""XGBoost parameters of a run: extmem's defaults, XGBoost's own check, and the objective the labels call for."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import DEFAULT_XGBOOST_PARAMS
from extmem._layout import FeatureLayout
from extmem.errors import OptionError

CLASSIFICATION_METRICS = {"binary": ["logloss", "auc"], "multi": ["mlogloss", "merror"]}
SAMPLING_PARAMS = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")
EXTERNAL_MEMORY_METHODS = ("hist", "approx")
_UNUSED_PARAMS = re.compile(r"Parameters: \{(.*?)\} are not used")


def merged_params(params: Mapping[str, Any] | None, *, methods: tuple[str, ...] = EXTERNAL_MEMORY_METHODS) -> dict[str, Any]:
    """``params`` over extmem's defaults (``hist``, eta 0.1, depth 6, seed 0), checked by XGBoost itself."""
    if params is not None and not isinstance(params, Mapping):
        msg = f"The 'params' option must map XGBoost parameter names to values. Got {params!r} instead."
        raise OptionError(msg, options=("params",))
    merged: dict[str, Any] = {**DEFAULT_XGBOOST_PARAMS, **(params or {})}
    seed = merged["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        msg = f"The XGBoost parameter 'seed' ('params') must be an integer. Got {seed!r} instead."
        raise OptionError(msg, options=("params",))
    if merged.get("booster") == "gblinear":
        msg = (
            "The booster 'gblinear' ('params') cannot train on XGBoost's quantized external-memory matrices; "
            "use 'gbtree' or 'dart', or a linear model streamed by extmem ('algorithm' sgd_logistic)."
        )
        raise OptionError(msg, options=("params", "algorithm"))
    if merged["tree_method"] not in methods:
        msg = f"The tree_method {merged['tree_method']!r} cannot train from external memory; use {' or '.join(repr(m) for m in methods)}."
        raise OptionError(msg)
    check_params(merged)
    return merged


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse parameters XGBoost does not know (it would only warn and ignore them) or rejects.

    XGBoost's own check runs on a one-round probe over a two-row matrix.
    """
    probe = {key: value for key, value in params.items() if key not in ("eval_metric",)}
    if str(probe.get("objective", "")).startswith("multi:"):
        probe.setdefault("num_class", 2)
    matrix = xgb.DMatrix(np.array([[0.0], [1.0]], dtype=np.float32), label=np.array([0.0, 1.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            xgb.train(probe, matrix, 1)
        except (xgb.core.XGBoostError, ValueError, TypeError) as exc:
            reason = next((line for line in str(exc).splitlines() if line.strip()), str(exc))
            msg = f"XGBoost rejects a parameter ('params'): {reason.split(': ', 1)[-1]}"
            raise OptionError(msg, options=("params",)) from None
    for warning in caught:
        unused = _UNUSED_PARAMS.search(str(warning.message).replace("\n", " "))
        if unused:
            names = [name.strip().strip('"') for name in unused.group(1).split(",") if name.strip()]
            msg = f"XGBoost parameter {names[0]!r} ('params') is unknown; XGBoost would silently ignore it."
            raise OptionError(msg, options=("params",))


MAX_CLASS_ID = 999
"""The largest numeric label read as a class id; larger labels are values (regression)."""


def class_count(layout: FeatureLayout, low: float, high: float, fractional: bool) -> int:
    """How many classes labels in [``low``, ``high``] make: the label map's, else 0..max for small non-negative integers, else 0 (values).

    One rule for every trainer and wrapper: classes are class ids 0..K-1, all of them, even
    those a filter leaves without rows.
    """
    if layout.label_map is not None:
        return len(set(layout.label_map.values()))
    if fractional or low < 0 or high > MAX_CLASS_ID or high < 1:
        return 0
    return int(high) + 1


def infer_objective(layout: FeatureLayout, low: float, high: float, fractional: bool, params: Mapping[str, Any]) -> dict[str, Any]:
    """Objective, num_class and eval metrics for labels in [``low``, ``high``] unless ``params`` sets them.

    String labels: binary with two classes, multi-class otherwise. Numeric labels: binary if
    all are 0/1, multi-class if all are small non-negative integers, regression otherwise.
    """
    classes = class_count(layout, low, high, fractional)
    chosen: dict[str, Any] = {}
    if "objective" not in params:
        chosen["objective"] = "binary:logistic" if classes == 2 else "multi:softprob" if classes > 2 else "reg:squarederror"
    objective = str(params.get("objective", chosen.get("objective")))
    if objective.startswith("binary:") and classes > 2:
        msg = f"The objective {objective!r} ('params') takes two classes; the labels make {classes}. Use multi:softprob, or leave the objective out."
        raise OptionError(msg, options=("params",))
    if layout.label_map is not None and "num_class" in params and params["num_class"] != classes:
        msg = (
            f"The XGBoost parameter num_class ('params') is {params['num_class']!r}, but the label map makes {classes} classes "
            f"({', '.join(layout.classes or [])}); leave num_class out."
        )
        raise OptionError(msg, options=("params",))
    if objective.startswith("multi:") and "num_class" not in params:
        if classes < 2:
            msg = f"The objective {objective!r} needs integer class labels or 'num_class'; the labels are not classes."
            raise OptionError(msg)
        chosen["num_class"] = classes
    if "eval_metric" not in params:
        kind = "binary" if objective.startswith("binary:") else "multi" if objective.startswith("multi:") else None
        chosen["eval_metric"] = CLASSIFICATION_METRICS[kind] if kind else ["rmse"]
    return chosen


def label_range(labels: np.ndarray) -> tuple[float, float, bool]:
    """The smallest and largest label and whether any is fractional: all the objective needs of the labels."""
    if labels.size == 0:
        return 0.0, 0.0, False
    return float(labels.min()), float(labels.max()), bool(np.any(labels != np.round(labels)))
