"""The ecosystem's own conformance suites: scikit-learn's estimator checks on every extmem estimator,
and XGBoost's own test routines for its estimators (shipped in its wheel) with extmem's in their place.

extmem's XGBoost estimators may fail only the checks XGBoost's own estimators fail (the shared
list below, each entry explained, and a test that XGBoost's estimators still fail exactly
those), less the ones extmem fixes (``PASSED_BY_EXTMEM``). ``IncrementalClassifier`` may fail only what its wrapped estimator fails itself.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sklearn
import xgboost as xgb
from conftest import cache_dirs
from sklearn.datasets import make_regression
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks

import extmem

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"

_CLASS_IDS = "XGBoost requires class labels 0..K-1 and refuses others (1 and 2, or strings) instead of encoding them"
XGBOOST_CLASSIFIER_FAILURES = {
    "check_estimators_overwrite_params": "XGBoost sets the public 'objective' parameter to multi:softprob for more than two classes (its own tests assert it)",
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
_RANDOM_FOREST = "XGBoost's random forest subsamples rows (subsample=0.8): weights are not the same as repeated rows"
RANDOM_FOREST_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": _RANDOM_FOREST,
    "check_sample_weight_equivalence_on_sparse_data": _RANDOM_FOREST,
}
SGD_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": "SGDClassifier fails it itself: weights are not the same as repeated rows for SGD",
    "check_sample_weight_equivalence_on_sparse_data": "SGDClassifier fails it itself, as above",
}


_ANY_LABELS = "extmem's classifier takes any class labels, as scikit-learn's do: classes_ holds them, predict returns them"
PASSED_BY_EXTMEM = {
    "check_all_zero_sample_weights_error": "extmem's estimators check sample weights before XGBoost: all zero, negative or not finite is refused naming them",
    "check_estimators_dtypes": _ANY_LABELS,
    "check_sample_weights_pandas_series": _ANY_LABELS,
    "check_sample_weights_not_an_array": _ANY_LABELS,
    "check_sample_weights_shape": _ANY_LABELS,
    "check_sample_weights_not_overwritten": _ANY_LABELS,
    "check_classifier_data_not_an_array": _ANY_LABELS,
    "check_classifiers_classes": _ANY_LABELS,
    "check_fit2d_1sample": _ANY_LABELS,
    "check_fit2d_1feature": _ANY_LABELS,
}
"""Checks XGBoost's estimators fail and extmem's pass."""


def _extmem_failures(upstream: dict[str, str]) -> dict[str, str]:
    return {name: why for name, why in upstream.items() if name not in PASSED_BY_EXTMEM}


def _expected_failures(estimator: object) -> dict[str, str]:
    if isinstance(estimator, extmem.XGBRFClassifier):
        return _extmem_failures(XGBOOST_CLASSIFIER_FAILURES | RANDOM_FOREST_FAILURES)
    if isinstance(estimator, extmem.XGBRFRegressor):
        return _extmem_failures(XGBOOST_REGRESSOR_FAILURES | RANDOM_FOREST_FAILURES)
    if isinstance(estimator, extmem.XGBClassifier):
        return _extmem_failures(XGBOOST_CLASSIFIER_FAILURES)
    if isinstance(estimator, extmem.XGBRegressor):
        return _extmem_failures(XGBOOST_REGRESSOR_FAILURES)
    if isinstance(estimator, extmem.IncrementalClassifier):
        wrapped = estimator.estimator
        if isinstance(wrapped, SGDClassifier) or wrapped in ("sgd_logistic", "sgd_hinge", "passive_aggressive"):
            return SGD_FAILURES
    return {}


ESTIMATORS = [
    extmem.XGBClassifier(n_estimators=5),
    extmem.XGBRegressor(n_estimators=5),
    extmem.XGBRFClassifier(n_estimators=5),
    extmem.XGBRFRegressor(n_estimators=5),
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
        (xgb.XGBRFClassifier(n_estimators=5), extmem.XGBRFClassifier(n_estimators=5), XGBOOST_CLASSIFIER_FAILURES | RANDOM_FOREST_FAILURES),
        (xgb.XGBRFRegressor(n_estimators=5), extmem.XGBRFRegressor(n_estimators=5), XGBOOST_REGRESSOR_FAILURES | RANDOM_FOREST_FAILURES),
        (SGDClassifier(loss="log_loss"), extmem.IncrementalClassifier(SGDClassifier(loss="log_loss")), SGD_FAILURES),
    ],
    ids=["XGBClassifier", "XGBRegressor", "XGBRFClassifier", "XGBRFRegressor", "SGDClassifier"],
)
def test_the_expected_failures_are_upstreams_own(upstream: object, ours: object, expected: dict[str, str]) -> None:
    """The shared list is exactly what the upstream estimator fails, and extmem's passes and skips no more than it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = {result["check_name"]: result["status"] for result in check_estimator(upstream, on_fail=None)}
        mine = {result["check_name"]: result["status"] for result in check_estimator(ours, on_fail=None)}
    assert {name for name, status in theirs.items() if status == "failed"} == set(expected)
    assert {name for name, status in mine.items() if status == "failed"} <= set(_extmem_failures(expected))
    assert all(mine[name] == "passed" for name in PASSED_BY_EXTMEM if name in expected)
    assert {name for name, status in mine.items() if status == "skipped"} <= {
        name for name, status in theirs.items() if status == "skipped"
    }


# XGBoost's iterator and external-memory tests, re-implemented: the same arrays go to XGBoost's own
# external-memory matrix through a numpy DataIter and to extmem's through parquet shards; matrices,
# cuts, training logs and predictions must agree.


def _regression_batches(
    n_batches: int, rows: int, features: int, *, nan_share: float = 0.0, seed: int = 1994
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.RandomState(seed)
    batches = []
    for _ in range(n_batches):
        X, y = make_regression(rows, features, random_state=rng)
        if nan_share:
            X[rng.random_sample(X.shape) < nan_share] = np.nan
        batches.append((X.astype(np.float32), y.astype(np.float32)))
    return batches


def _write_shards(batches: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> Path:
    """One parquet shard per batch: columns f0..fN and the label y."""
    folder.mkdir()
    for i, (X, y) in enumerate(batches):
        columns = {f"f{j}": X[:, j] for j in range(X.shape[1])} | {"y": y}
        pq.write_table(pa.table(columns), folder / f"batch_{i:05d}.parquet", row_group_size=4096)
    return folder


class _ArrayIter(xgb.DataIter):
    """What XGBoost's tests and demo feed its external memory: one array batch per step."""

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray]], cache: Path) -> None:
        self._batches = batches
        self._at = 0
        super().__init__(cache_prefix=str(cache / "xgboost-cache"))

    def next(self, input_data: Callable[..., None]) -> bool:
        if self._at == len(self._batches):
            return False
        X, y = self._batches[self._at]
        input_data(data=X, label=y)
        self._at += 1
        return True

    def reset(self) -> None:
        self._at = 0


def _train(matrix: xgb.DMatrix, method: str, rounds: int = 6) -> tuple[xgb.Booster, list[float]]:
    log: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        {"tree_method": method, "max_depth": 4, "nthread": 2},
        matrix,
        rounds,
        evals=[(matrix, "train")],
        evals_result=log,
        verbose_eval=False,
    )
    return booster, log["train"]["rmse"]


@pytest.mark.parametrize("method", ["hist", "approx"])
@pytest.mark.parametrize(("n_batches", "rows", "features", "nan_share"), [(1, 700, 3, 0.0), (4, 1024, 17, 0.0), (7, 1500, 9, 0.2)])
def test_matrices_match_xgboosts_own_external_memory(
    tmp_path: Path, cache_root: Path, method: str, n_batches: int, rows: int, features: int, nan_share: float
) -> None:
    batches = _regression_batches(n_batches, rows, features, nan_share=nan_share)
    folder = _write_shards(batches, tmp_path / "shards")
    construct = extmem.DMatrix if method == "approx" else extmem.ExtMemQuantileDMatrix
    ours = construct(folder, label="y", missing=np.nan, enable_categorical=False, cache_dir=cache_root)
    upstream = xgb.DMatrix if method == "approx" else xgb.ExtMemQuantileDMatrix
    theirs = upstream(_ArrayIter(batches, tmp_path), missing=np.nan, enable_categorical=False)
    assert (ours.num_row(), ours.num_col(), ours.num_nonmissing()) == (theirs.num_row(), theirs.num_col(), theirs.num_nonmissing())
    assert ours.feature_names == [f"f{j}" for j in range(features)]
    np.testing.assert_array_equal(ours.get_label(), np.concatenate([y for _, y in batches]))
    if method == "hist":
        for mine, upstream_cut in zip(ours.get_quantile_cut(), theirs.get_quantile_cut()):
            np.testing.assert_array_equal(mine, upstream_cut)
    our_booster, our_log = _train(ours, method)
    their_booster, their_log = _train(theirs, method)
    np.testing.assert_allclose(our_log, their_log, rtol=1e-6)
    X = np.concatenate([X for X, _ in batches])
    np.testing.assert_allclose(our_booster.inplace_predict(X), their_booster.inplace_predict(X), rtol=1e-6, atol=1e-5)


def test_what_xgboost_reads_itself_goes_to_xgboosts_own_matrix_classes(tmp_path: Path) -> None:
    """Swapping xgb.QuantileDMatrix for extmem's everywhere in a script keeps its arrays and iterators working."""
    batches = _regression_batches(2, 400, 5)
    X, y = batches[0]
    for ours, theirs in ((extmem.QuantileDMatrix, xgb.QuantileDMatrix), (extmem.DMatrix, xgb.DMatrix)):
        matrix, reference = ours(X, label=y, weight=np.ones(400)), theirs(X, label=y, weight=np.ones(400))
        assert type(matrix) is type(reference) and matrix.num_row() == 400
        np.testing.assert_array_equal(_train(matrix, "hist")[1], _train(reference, "hist")[1])
    streamed = extmem.ExtMemQuantileDMatrix(_ArrayIter(batches, tmp_path), max_bin=16, missing=np.nan)
    assert type(streamed) is xgb.ExtMemQuantileDMatrix and streamed.num_row() == 800
    with pytest.raises(extmem.OptionError, match="gives its labels with its batches"):
        extmem.ExtMemQuantileDMatrix(_ArrayIter(batches, tmp_path), label="y")
    with pytest.raises(extmem.OptionError, match="got an empty list"):  # no data at all is a dataset's error, not XGBoost's
        extmem.QuantileDMatrix([])


def test_xgboost_keywords_keep_xgboosts_meaning(tmp_path: Path, cache_root: Path) -> None:
    batches = _regression_batches(2, 500, 4)
    batches[0][0][:50, 0] = -999.0
    folder = _write_shards(batches, tmp_path / "shards")
    with pytest.raises(extmem.OptionError, match="'feature_names' option has 2 entries for 4 features"):
        extmem.dmatrix(folder, label="y", feature_names=["a", "b"], cache_dir=cache_root)
    with pytest.raises(extmem.OptionError, match="'missing' option must be a number"):
        extmem.dmatrix(folder, label="y", missing="NA", cache_dir=cache_root)
    with pytest.raises(
        extmem.OptionError, match="keyword 'group' is not one extmem.dmatrix takes: give each row's query id in a column named by 'qid'"
    ):
        extmem.dmatrix(folder, label="y", group=[500, 500], cache_dir=cache_root)
    with pytest.raises(extmem.OptionError, match="'weight' option names a column of the dataset, not values"):
        extmem.dmatrix(folder, label="y", weight=np.ones(1000), cache_dir=cache_root)
    assert not list(cache_root.iterdir())
    ours = extmem.dmatrix(folder, label="y", missing=-999.0, feature_names=["a", "b", "c", "d"], nthread=1, cache_dir=cache_root)
    theirs = xgb.ExtMemQuantileDMatrix(_ArrayIter(batches, tmp_path), missing=-999.0)
    assert ours.num_nonmissing() == theirs.num_nonmissing() == 1000 * 4 - 50
    assert ours.feature_names == ["a", "b", "c", "d"]


def test_cuts_are_xgboosts_own_above_the_old_sample_size(tmp_path: Path, cache_root: Path) -> None:
    """40k narrow rows: the sketch of every row fits, so no sample is drawn and the cuts are XGBoost's (issue: 0.91 correlation)."""
    batches = _regression_batches(10, 4000, 6)
    folder = _write_shards(batches, tmp_path / "shards")
    ours = extmem.ExtMemQuantileDMatrix(folder, label="y", cache_dir=cache_root)
    theirs = xgb.ExtMemQuantileDMatrix(_ArrayIter(batches, tmp_path))
    assert extmem.matrix_info(ours).plan.sketch_rows is None
    assert extmem.matrix_info(ours).stats.cuts_from_rows == 40_000
    for mine, upstream_cut in zip(ours.get_quantile_cut(), theirs.get_quantile_cut()):
        np.testing.assert_array_equal(mine, upstream_cut)


def test_sparse_pages_from_a_read_only_working_directory(tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page XGBoost writes lives in extmem's cache folder: nothing in the working directory, whatever the cache kind."""
    folder = _write_shards(_regression_batches(3, 800, 5), tmp_path / "shards")
    workdir = tmp_path / "readonly"
    workdir.mkdir()
    workdir.chmod(0o555)
    monkeypatch.chdir(workdir)
    for cache in ("auto", "memory", "disk"):
        matrix = extmem.dmatrix(folder, label="y", sparse_pages=True, cache=cache, cache_dir=cache_root)
        booster, log = _train(matrix, "approx", rounds=3)
        assert log[-1] < log[0]
        assert list(workdir.iterdir()) == []
        del matrix, booster
    assert cache_dirs(cache_root) == []


def test_no_warnings_at_exit_with_a_live_disk_matrix(tmp_path: Path, cache_root: Path) -> None:
    folder = _write_shards(_regression_batches(2, 600, 4), tmp_path / "shards")
    script = (
        "import sys, xgboost, extmem\n"
        "m = extmem.ExtMemQuantileDMatrix(sys.argv[1], label='y', cache_dir=sys.argv[2])\n"
        "b = xgboost.train({}, m, 2)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(cache_root)], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert cache_dirs(cache_root) == []


def test_sample_weight_reaches_fit_through_meta_estimators_and_routing() -> None:
    """AdaBoost passes sample_weight to fit; metadata routing passes it through cross_validate: both as for XGBoost's own."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import AdaBoostClassifier
    from sklearn.model_selection import cross_validate

    X, y = make_classification(300, 6, random_state=0)
    weights = np.random.default_rng(0).random(300)
    scores = []
    for estimator in (xgb.XGBClassifier, extmem.XGBClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            boosted = AdaBoostClassifier(estimator(n_estimators=3), n_estimators=2, random_state=0).fit(X, y)
        with sklearn.config_context(enable_metadata_routing=True):
            routed = estimator(n_estimators=3).set_fit_request(sample_weight=True).set_score_request(sample_weight=False)
            validated = cross_validate(routed, X, y, params={"sample_weight": weights}, cv=3)["test_score"]
        scores.append((boosted.predict_proba(X), validated))
    np.testing.assert_array_equal(scores[0][0], scores[1][0])
    np.testing.assert_array_equal(scores[0][1], scores[1][1])


# XGBoost's own test routines for its scikit-learn estimators, shipped in its wheel (xgboost.testing),
# run with extmem's estimators in place of XGBoost's: every name they construct an estimator by.


_PATCHED_MODULES = ("with_skl", "intercept", "metrics", "multi_target", "updater")
"""The helper modules whose estimators the routines construct: extmem's are put in their place (the ranking ones use XGBoost's)."""


def _testing_module(name: str) -> Any:
    """``xgboost.testing.<name>`` as the installed XGBoost ships it, or None (older releases have fewer)."""
    try:
        return importlib.import_module(f"xgboost.testing.{name}")
    except ImportError:
        return None


def _helper(module: str, function: str) -> Callable[..., Any]:
    """XGBoost's test helper ``xgboost.testing.<module>.<function>``, or one that skips the test where the installed XGBoost has none."""
    found = getattr(_testing_module(module), function, None)
    if found is not None:
        return found

    def missing(*args: object) -> None:
        pytest.skip(f"XGBoost {xgb.__version__} ships no xgboost.testing.{module}.{function}")

    return missing


def _xgboost_routines() -> dict[str, Callable[[], None]]:
    from sklearn.datasets import make_classification

    X, y = make_classification(200, 8, n_informative=5, random_state=0)
    X3, y3 = make_classification(300, 8, n_informative=5, n_classes=3, random_state=0)
    routines: dict[str, Callable[[], None]] = {
        "boost_from_prediction_binary": lambda: _helper("with_skl", "run_boost_from_prediction_binary")("hist", "cpu", X, y, None),
        "boost_from_prediction_multi_class": lambda: _helper("with_skl", "run_boost_from_prediction_multi_clasas")(
            extmem.XGBClassifier, "hist", "cpu", X3, y3, None
        ),
        "recoding": lambda: _helper("with_skl", "run_recoding")("cpu"),
        "intercept": lambda: _helper("with_skl", "run_intercept")("cpu"),
        "init_estimation": lambda: _helper("intercept", "run_init_estimation")("hist", "cpu"),
        "adaptive": lambda: _helper("intercept", "run_adaptive")("hist", True, "cpu"),
        "exp_family": lambda: _helper("intercept", "run_exp_family")("cpu"),
        "logistic_degenerate": lambda: _helper("intercept", "run_logistic_degenerate")("cpu"),
        "quantile_loss": lambda: _helper("updater", "check_quantile_loss")("hist", True, "cpu"),
        "max_cat": lambda: _helper("updater", "run_max_cat")("hist", "cpu"),
        "invalid_category": lambda: _helper("updater", "run_invalid_category")("hist", "cpu"),
        "ranking_qid_in_a_dataframe": lambda: _helper("ranking", "run_ranking_qid_df")(pandas, "hist", "cpu"),
        "ranking_categorical": lambda: _helper("ranking", "run_ranking_categorical")("cpu"),
        "ranking_normalization": lambda: _helper("ranking", "run_normalization")("cpu"),
        "ranking_score_normalization": lambda: _helper("ranking", "run_score_normalization")("cpu", "rank:ndcg"),
        "multiclass_vector_leaf": lambda: _helper("multi_target", "run_multiclass")("cpu", None),
        "multilabel_vector_leaf": lambda: _helper("multi_target", "run_multilabel")("cpu", None),
        "precision_score": lambda: _helper("metrics", "check_precision_score")("hist", "cpu"),
        "quantile_error": lambda: _helper("metrics", "check_quantile_error")("hist", "cpu"),
        "roc_auc_binary": lambda: _helper("metrics", "run_roc_auc_binary")("hist", 128, "cpu"),
        "pr_auc_multi": lambda: _helper("metrics", "run_pr_auc_multi")("hist", "cpu"),
        "roc_auc_multi_weighted": lambda: _helper("metrics", "run_roc_auc_multi")("hist", 256, True, "cpu"),
        "pr_auc_ranking": lambda: _helper("metrics", "run_pr_auc_ltr")("hist", "cpu"),
        "pr_auc_binary": lambda: _helper("metrics", "run_pr_auc_binary")("hist", "cpu"),
    }
    regression_objectives = getattr(_testing_module("multi_target"), "all_reg_objectives", list)
    for objective in regression_objectives():
        routines[objective.__name__.removeprefix("run_")] = lambda objective=objective: objective("cpu")
    return routines


XGBOOST_ROUTINES = _xgboost_routines()


@pytest.mark.parametrize("name", sorted(XGBOOST_ROUTINES))
def test_xgboosts_own_estimator_routines_pass_with_extmems_estimators(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in (xgb, *filter(None, map(_testing_module, _PATCHED_MODULES))):
        for estimator in ("XGBClassifier", "XGBRegressor", "XGBRanker"):
            if hasattr(module, estimator):
                monkeypatch.setattr(module, estimator, getattr(extmem, estimator))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        XGBOOST_ROUTINES[name]()
