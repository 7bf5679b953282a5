"""XGBoost parameters of a run: extmem's defaults, XGBoost's own check, and the objective the labels call for."""

from __future__ import annotations

import difflib
import json
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xgboost as xgb

from extmem._defaults import DEFAULT_XGBOOST_PARAMS
from extmem._layout import FeatureLayout
from extmem.errors import OptionError, is_integer, xgboost_reason

CLASSIFICATION_METRICS = {"binary": ["logloss", "auc"], "multi": ["mlogloss", "merror"]}
SAMPLING_PARAMS = ("subsample", "colsample_bytree", "colsample_bylevel", "colsample_bynode")
EXTERNAL_MEMORY_METHODS = ("hist", "approx")
_UNUSED_PARAMS = re.compile(r"Parameters: \{(.*?)\} are not used")
_UNSUPPORTED_OBJECTIVES = {
    "survival:aft": "needs a lower and an upper bound per row, which extmem does not read; use survival:cox (a negative label is censored)"
}


def merged_params(
    params: Mapping[str, Any] | None, *, methods: tuple[str, ...] = EXTERNAL_MEMORY_METHODS, qid: str | None = None
) -> dict[str, Any]:
    """``params`` over extmem's defaults (``hist``, eta 0.1, depth 6, seed 0), checked by XGBoost itself.

    With query groups (a ``qid`` column) the objective is a ranking one, ``rank:ndcg`` unless given;
    without, ranking objectives are refused (every row would be one query).
    """
    if params is not None and not isinstance(params, Mapping):
        msg = f"The 'params' option must map XGBoost parameter names to values. Got {params!r} instead."
        raise OptionError(msg, options=("params",))
    merged: dict[str, Any] = {**DEFAULT_XGBOOST_PARAMS, **(params or {})}
    _check_ranking(merged, qid)
    seed = merged["seed"]
    if not is_integer(seed):
        msg = f"The XGBoost parameter 'seed' ('params') must be an integer. Got {seed!r} instead."
        raise OptionError(msg, options=("params",))
    if merged.get("booster") == "gblinear":
        msg = (
            "The booster 'gblinear' ('params') cannot train on XGBoost's quantized external-memory matrices; "
            "use 'gbtree' or 'dart', or a linear model streamed by extmem ('algorithm' sgd_logistic)."
        )
        raise OptionError(msg, options=("params", "algorithm"))
    objective = str(merged.get("objective", ""))
    if objective in _UNSUPPORTED_OBJECTIVES:
        raise OptionError(f"The objective {objective!r} ('params') {_UNSUPPORTED_OBJECTIVES[objective]}.", options=("params",))
    if objective == "reg:quantileerror" and "quantile_alpha" not in merged:
        msg = "The objective 'reg:quantileerror' ('params') needs the quantile(s) to fit: quantile_alpha=0.5, for example."
        raise OptionError(msg, options=("params",))
    if merged["tree_method"] not in methods:
        msg = f"The tree_method {merged['tree_method']!r} cannot train from external memory; use {' or '.join(repr(m) for m in methods)}."
        raise OptionError(msg)
    check_params(merged)
    return merged


def _check_ranking(params: dict[str, Any], qid: Any) -> None:
    """A ranking objective exactly when there are query groups; ``rank:ndcg`` (XGBRanker's) by default."""
    objective = params.get("objective")
    ranking = isinstance(objective, str) and objective.startswith("rank:")
    if qid is None and ranking:
        msg = f"The objective {objective!r} ('params') ranks rows within queries: name the query-id column with 'qid' (without it, all rows would be one query)."
        raise OptionError(msg, options=("params", "qid"))
    if qid is not None and objective is None:
        params["objective"] = "rank:ndcg"
    elif qid is not None and not ranking:
        msg = f"The 'qid' option gives query groups to ranking objectives (rank:ndcg, rank:pairwise, rank:map); the objective {objective!r} ('params') has none."
        raise OptionError(msg, options=("qid", "params"))


_UNPROBED_PARAMS = ("eval_metric", "monotone_constraints", "interaction_constraints")
"""Left out of the probe: metrics are checked one by one (:func:`_check_metrics`), constraints against the features (:func:`_named_constraints`)."""


def _two_rows(labels: tuple[float, float] = (0.0, 1.0)) -> xgb.DMatrix:
    """The two-row matrix XGBoost's checks train one round on."""
    return xgb.DMatrix(np.array([[0.0], [1.0]], dtype=np.float32), label=np.array(labels))


def _check_metrics(metrics: Any) -> None:
    """Refuse an eval metric XGBoost does not know (it would fail only once the matrices are built)."""
    matrix = _two_rows()
    for metric in [metrics] if isinstance(metrics, str) else list(metrics or []):
        try:
            xgb.train({"eval_metric": metric}, matrix, 1, evals=[(matrix, "probe")], verbose_eval=False)
        except xgb.core.XGBoostError as exc:
            if "Unknown metric" in str(exc):
                raise OptionError(
                    f"XGBoost has no eval_metric {metric!r} ('params'): {xgboost_reason(exc)}.", options=("params",)
                ) from None


def _probe(params: Mapping[str, Any]) -> list[str]:
    """Train one round with ``params`` on a two-row matrix whose labels every objective takes; XGBoost's metrics for them."""
    probe = {key: value for key, value in params.items() if key not in _UNPROBED_PARAMS}
    if str(probe.get("objective", "")).startswith("multi:"):
        probe.setdefault("num_class", 2)
    probe.setdefault("base_score", 0.5)
    matrix = _two_rows((1.0, 1.0))
    result: dict[str, dict[str, list[float]]] = {}
    xgb.train(probe, matrix, 1, evals=[(matrix, "probe")], evals_result=result, verbose_eval=False)
    return list(result["probe"])


def check_params(params: Mapping[str, Any]) -> None:
    """Refuse parameters XGBoost does not know (it would only warn and ignore them) or rejects.

    XGBoost's own check runs on a one-round probe over a two-row matrix.
    """
    objective = str(params.get("objective", "multi:"))  # without one, a num_class makes the objective multi-class
    if "num_class" in params and not objective.startswith("multi:"):
        msg = f"The XGBoost parameter num_class ('params') is for multi-class objectives (multi:softprob, multi:softmax), not {objective!r}; leave it out."
        raise OptionError(msg, options=("params",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _probe(params)
        except (xgb.core.XGBoostError, ValueError, TypeError) as exc:
            msg = f"XGBoost rejects a parameter ('params'): {xgboost_reason(exc)}"
            raise OptionError(msg, options=("params",)) from None
    _check_metrics(params.get("eval_metric"))
    for warning in caught:
        unused = _UNUSED_PARAMS.search(str(warning.message).replace("\n", " "))
        if unused:
            names = [name.strip().strip('"') for name in unused.group(1).split(",") if name.strip()]
            nearest = difflib.get_close_matches(names[0], _xgboost_parameter_names(), n=1, cutoff=0.7)
            hint = f" (did you mean {nearest[0]!r}?)" if nearest else ""
            msg = f"XGBoost parameter {names[0]!r} ('params') is unknown{hint}; XGBoost would silently ignore it."
            raise OptionError(msg, options=("params",))


def _xgboost_parameter_names() -> list[str]:
    """The parameter names in a trained booster's configuration (learner, booster, tree, objective), and XGBoost's aliases."""
    pending = [json.loads(xgb.train({}, _two_rows(), 1).save_config())]
    names = {"eval_metric", "learning_rate", "min_split_loss", "reg_alpha", "reg_lambda", "random_state"}
    while pending:
        for key, value in pending.pop().items():
            if isinstance(value, dict):
                pending.append(value)
            else:
                names.add(key)
    return sorted(names)


MAX_CLASS_ID = 999
"""The largest numeric label read as a class id; larger labels are values (regression)."""


def class_count(layout: FeatureLayout, low: float, high: float, fractional: bool) -> int:
    """How many classes labels in [``low``, ``high``] make: the label map's, else 0..max for small non-negative integers, else 0 (values).

    One rule for every trainer and wrapper: classes are class ids 0..K-1, all of them, even
    those a filter leaves without rows.
    """
    if layout.label_map is not None:
        classes = len(set(layout.label_map.values()))
        if classes < 2:
            msg = f"The labels of {layout.label!r} make one class ({', '.join(repr(name) for name in layout.label_map)}); a classifier needs two or more."
            raise OptionError(msg, options=("label_map",))
        return classes
    if fractional or low < 0 or high > MAX_CLASS_ID or high < 1:
        return 0
    return int(high) + 1


_LABEL_RULES: tuple[tuple[tuple[str, ...], str, Callable[[float, float, bool], bool]], ...] = (
    (("binary:", "reg:logistic"), "from 0 to 1", lambda low, high, fractional: low >= 0 and high <= 1),
    (("count:poisson", "reg:tweedie"), "of 0 or more", lambda low, high, fractional: low >= 0),
    (("reg:gamma",), "above 0", lambda low, high, fractional: low > 0),
    (("reg:squaredlogerror",), "above -1", lambda low, high, fractional: low > -1),
    (("rank:map",), "of 0 or 1", lambda low, high, fractional: low >= 0 and high <= 1 and not fractional),
    (("rank:",), "that are whole numbers from 0 to 31", lambda low, high, fractional: low >= 0 and high <= 31 and not fractional),
)
"""Labels each objective takes (by name or prefix), as XGBoost would check them only after the build."""


def _check_labels(objective: str, params: Mapping[str, Any], label: str | None, low: float, high: float, fractional: bool) -> None:
    """Refuse labels the objective does not take, before anything is boosted."""
    if objective.startswith("multi:"):
        classes = int(params.get("num_class", 0))
        rule = f"that are class ids 0..{classes - 1}" if classes else "that are class ids 0..K-1 (or a 'num_class')"
        ok = low >= 0 and high < classes and not fractional
    elif objective.startswith("rank:") and objective != "rank:map" and str(params.get("ndcg_exp_gain", "")).lower() in ("false", "0"):
        rule, ok = "that are whole numbers of 0 or more", low >= 0 and not fractional  # 2**label - 1 gains need labels up to 31
    else:
        rule, ok = next(
            ((rule, check(low, high, fractional)) for names, rule, check in _LABEL_RULES if objective.startswith(names)), ("", True)
        )
    if ok:
        return
    what = "whole numbers" if not fractional else "numbers with fractions"
    msg = f"The objective {objective!r} ('params') takes labels {rule}; the labels of {label!r} are {what} from {low:g} to {high:g}."
    if objective.startswith(("binary:", "multi:")):
        msg += " Map them to class ids 0..K-1 with a 'label_map' (e.g. 1=1,-1=0)."
    raise OptionError(msg, options=("params", "label_map"))


def _eval_metrics(objective: str, params: Mapping[str, Any]) -> list[str]:
    """extmem's metrics for its own objectives; XGBoost's default metric for any other."""
    if objective in ("binary:logistic", "binary:logitraw"):
        return CLASSIFICATION_METRICS["binary"]
    if objective.startswith("multi:"):
        return CLASSIFICATION_METRICS["multi"]
    if objective == "reg:squarederror":
        return ["rmse"]
    return _probe({**params, "objective": objective})


def _named_constraints(params: Mapping[str, Any], layout: FeatureLayout) -> dict[str, Any]:
    """Constraints by feature name (``{"donor_score": 1}``, ``[["a", "b"], ["c"]]``), checked against the run's features
    and renamed to XGBoost's names for them (:attr:`FeatureLayout.xgboost_names`, which they may already use)."""
    renamed = dict(zip(layout.xgboost_names, layout.xgboost_names)) | dict(zip(layout.names, layout.xgboost_names))

    def xgboost_names(option: str, names: list[Any]) -> list[str]:
        unknown = [name for name in names if not isinstance(name, str) or name not in renamed]
        if unknown:
            msg = f"The {option} ('params') name {unknown[:5]}, which are not features of this run ({len(layout.names):,} features, such as {list(layout.names[:3])})."
            raise OptionError(msg, options=("params",))
        return [renamed[name] for name in names]

    constraints: dict[str, Any] = {}
    monotone = params.get("monotone_constraints")
    if isinstance(monotone, Mapping):
        bad = [value for value in monotone.values() if value not in (-1, 0, 1) or isinstance(value, bool)]
        if bad:
            msg = f"The monotone_constraints ('params') must be -1, 0 or 1 per feature. Got {bad[0]!r} instead."
            raise OptionError(msg, options=("params",))
        constraints["monotone_constraints"] = dict(zip(xgboost_names("monotone_constraints", list(monotone)), monotone.values()))
    interaction = params.get("interaction_constraints")
    if isinstance(interaction, list):
        groups = [group if isinstance(group, list) else [group] for group in interaction]
        constraints["interaction_constraints"] = [xgboost_names("interaction_constraints", group) for group in groups]
    return constraints


def infer_objective(layout: FeatureLayout, low: float, high: float, fractional: bool, params: Mapping[str, Any]) -> dict[str, Any]:
    """Objective, num_class and eval metrics for labels in [``low``, ``high``] unless ``params`` sets them; constraints by XGBoost's names.

    String labels: binary with two classes, multi-class otherwise. Numeric labels: binary if
    all are 0/1, multi-class if all are small non-negative integers, regression otherwise.
    Labels the objective does not take, and constraints naming columns that are not features, are refused.
    """
    classes = class_count(layout, low, high, fractional)
    chosen: dict[str, Any] = _named_constraints(params, layout)
    if "objective" not in params:
        multi = classes > 2 or "num_class" in params  # a num_class asks for a multi-class model
        chosen["objective"] = "multi:softprob" if multi else "binary:logistic" if classes == 2 else "reg:squarederror"
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
    if objective.startswith("multi:") and "num_class" not in params and classes >= 2:
        chosen["num_class"] = classes
    _check_labels(objective, {**params, **chosen}, layout.label, low, high, fractional)
    if "eval_metric" not in params:
        chosen["eval_metric"] = _eval_metrics(objective, {**params, **chosen})
    return chosen


def label_range(labels: np.ndarray) -> tuple[float, float, bool]:
    """The smallest and largest label and whether any is fractional: all the objective needs of the labels."""
    if labels.size == 0:
        return 0.0, 0.0, False
    return float(labels.min()), float(labels.max()), bool(np.any(labels != np.round(labels)))
