"""The ecosystem's own conformance suites: scikit-learn's estimator checks on every extmem estimator.

extmem's XGBoost estimators may fail only the checks XGBoost's own estimators fail (the shared
list below, each entry explained, and a test that XGBoost's estimators still fail exactly
those). ``IncrementalClassifier`` may fail only what its wrapped estimator fails itself.
"""

from __future__ import annotations

import warnings

import pytest
import xgboost as xgb
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import extmem

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"

_CLASS_IDS = "XGBoost requires class labels 0..K-1 and refuses others (1 and 2, or strings) instead of encoding them"
XGBOOST_CLASSIFIER_FAILURES = {
    "check_estimators_overwrite_params": "XGBoost sets the public 'objective' parameter to multi:softprob for more than two classes",
    "check_dont_overwrite_parameters": "the same: XGBoost writes 'objective' during fit",
    "check_estimators_dtypes": _CLASS_IDS,
    "check_sample_weights_pandas_series": "XGBoost does not take a pandas Series as sample_weight with its labels",
    "check_sample_weights_not_an_array": _CLASS_IDS,
    "check_all_zero_sample_weights_error": "XGBoost's own error for all-zero weights does not say 'weight' and 'zero' in scikit-learn's words",
    "check_sample_weights_shape": _CLASS_IDS,
    "check_sample_weights_not_overwritten": _CLASS_IDS,
    "check_classifier_data_not_an_array": _CLASS_IDS,
    "check_classifiers_classes": _CLASS_IDS,
    "check_classifiers_multilabel_output_format_predict": "XGBoost predicts float64 class ids for multi-label targets",
    "check_fit2d_1sample": "XGBoost's class check fails before any message about one sample",
    "check_fit2d_1feature": "XGBoost's class check fails before any message about one feature",
}
XGBOOST_REGRESSOR_FAILURES = {
    "check_all_zero_sample_weights_error": "XGBoost's own error for all-zero weights does not say 'weight' and 'zero' in scikit-learn's words",
    "check_regressor_multioutput": "XGBoost predicts float32, not float64",
}
SGD_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": "SGDClassifier fails it itself: weights are not the same as repeated rows for SGD",
    "check_sample_weight_equivalence_on_sparse_data": "SGDClassifier fails it itself, as above",
}


def _expected_failures(estimator: object) -> dict[str, str]:
    if isinstance(estimator, extmem.XGBClassifier):
        return XGBOOST_CLASSIFIER_FAILURES
    if isinstance(estimator, extmem.XGBRegressor):
        return XGBOOST_REGRESSOR_FAILURES
    if isinstance(estimator, extmem.IncrementalClassifier):
        wrapped = estimator.estimator
        if isinstance(wrapped, SGDClassifier) or wrapped in ("sgd_logistic", "sgd_hinge", "passive_aggressive"):
            return SGD_FAILURES
    return {}


ESTIMATORS = [
    extmem.XGBClassifier(n_estimators=5),
    extmem.XGBRegressor(n_estimators=5),
    extmem.IncrementalClassifier(SGDClassifier(loss="log_loss")),
    extmem.IncrementalClassifier(GaussianNB()),
    extmem.IncrementalClassifier("sgd_logistic"),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator: object, check: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.parametrize(
    ("upstream", "ours", "expected"),
    [
        (xgb.XGBClassifier(n_estimators=5), extmem.XGBClassifier(n_estimators=5), XGBOOST_CLASSIFIER_FAILURES),
        (xgb.XGBRegressor(n_estimators=5), extmem.XGBRegressor(n_estimators=5), XGBOOST_REGRESSOR_FAILURES),
        (SGDClassifier(loss="log_loss"), extmem.IncrementalClassifier(SGDClassifier(loss="log_loss")), SGD_FAILURES),
    ],
    ids=["XGBClassifier", "XGBRegressor", "SGDClassifier"],
)
def test_the_expected_failures_are_upstreams_own(upstream: object, ours: object, expected: dict[str, str]) -> None:
    """The shared list is exactly what the upstream estimator fails, and extmem's passes and skips no more than it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {result["check_name"]: result["status"] for result in check_estimator(upstream, on_fail=None)}
        mine = {result["check_name"]: result["status"] for result in check_estimator(ours, on_fail=None)}
    assert {name for name, status in theirs.items() if status == "failed"} == set(expected)
    assert {name for name, status in mine.items() if status == "failed"} <= set(expected)
    assert {name for name, status in mine.items() if status == "skipped"} <= {
        name for name, status in theirs.items() if status == "skipped"
    }
