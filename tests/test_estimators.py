from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import xgboost as xgb
from conftest import all_rows, cache_dirs, write_shard
from sklearn.base import clone
from sklearn.model_selection import ParameterGrid

import extmem
from extmem._layout import FeatureLayout
from extmem.read._selection import select_dataset


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("valid")
    extmem.synth(out, extmem.SynthOptions(rows=1000, shards=2, k=4, seq_len=40, row_group_rows=250, seed=11))
    return out


def _in_memory(path: Path, layout: FeatureLayout | None = None) -> tuple[sp.csr_matrix, np.ndarray, FeatureLayout]:
    """The whole dataset as one CSR matrix built by extmem's blocks stage (what extmem streams)."""
    source = select_dataset(extmem.Dataset(path, preset="splice-sites"), layout=layout)
    block = all_rows(source)
    assert block.label is not None
    return block.X, block.label, source.layout


def typical_training_script(estimator: type, X_train: Any, y_train: Any, X_valid: Any, y_valid: Any) -> Any:
    """A training script as found in the wild; only the data arguments differ between the two runs."""
    clf = estimator(
        n_estimators=60,
        max_depth=4,
        learning_rate=0.2,
        subsample=1.0,
        early_stopping_rounds=5,
        eval_metric="mlogloss",
        random_state=0,
    )
    clf.fit(X_train, y_train, eval_set=[(X_valid, y_valid)], verbose=False)
    return clf


def test_classifier_fitted_on_datasets_equals_the_in_memory_fit(small_synth: Path, valid: Path) -> None:
    X_train, y_train, layout = _in_memory(small_synth)
    X_valid, y_valid, _ = _in_memory(valid, layout)
    in_memory = typical_training_script(xgb.XGBClassifier, X_train, y_train, X_valid, y_valid)
    streamed = typical_training_script(
        extmem.XGBClassifier, extmem.Dataset(small_synth, preset="splice-sites"), None, extmem.Dataset(valid, preset="splice-sites"), None
    )
    assert streamed.best_iteration == in_memory.best_iteration < 59
    np.testing.assert_allclose(
        streamed.evals_result()["validation_0"]["mlogloss"], in_memory.evals_result()["validation_0"]["mlogloss"], rtol=1e-6
    )
    expected = in_memory.predict_proba(X_valid)
    np.testing.assert_allclose(streamed.predict_proba(extmem.Dataset(valid, preset="splice-sites")), expected, atol=1e-5)
    np.testing.assert_allclose(streamed.predict_proba(X_valid), expected, atol=1e-5)
    assert streamed.predict(extmem.Dataset(valid, preset="splice-sites")).tolist() == in_memory.predict(X_valid).tolist()
    np.testing.assert_allclose(streamed.feature_importances_, in_memory.feature_importances_, rtol=1e-5)
    assert streamed.score(valid) == pytest.approx(in_memory.score(X_valid, y_valid))
    assert list(streamed.feature_names_in_) == list(layout.names)


def test_dense_arrays_are_scored_with_the_training_representation(small_synth: Path, valid: Path) -> None:
    clf = extmem.XGBClassifier(n_estimators=10, max_depth=3).fit(extmem.Dataset(small_synth, preset="splice-sites"))
    X_valid, _, _ = _in_memory(valid, clf.layout)
    dense = X_valid.toarray()  # absent k-mers become literal zeros, as in a user's dense frame
    np.testing.assert_allclose(clf.predict_proba(dense), clf.predict_proba(valid), atol=1e-6)


def test_estimator_works_with_sklearn_tooling(small_synth: Path, valid: Path, tmp_path: Path) -> None:
    base = extmem.XGBClassifier(n_estimators=8, cache_dir=tmp_path, page_rows=1000)
    assert clone(base).get_params() == base.get_params()
    assert "page_rows" not in base.get_xgb_params()
    scores = {}
    for params in ParameterGrid({"max_depth": [2, 4], "learning_rate": [0.3]}):
        candidate = clone(base).set_params(**params).fit(extmem.Dataset(small_synth, preset="splice-sites"))
        scores[params["max_depth"]] = candidate.score(valid)
    assert all(0.9 < score <= 1.0 for score in scores.values())
    assert cache_dirs(tmp_path) == []


def test_saved_model_keeps_its_layout(small_synth: Path, valid: Path, tmp_path: Path) -> None:
    clf = extmem.XGBClassifier(n_estimators=5).fit(extmem.Dataset(small_synth, preset="splice-sites"))
    clf.save_model(tmp_path / "clf.ubj")
    loaded = extmem.XGBClassifier()
    loaded.load_model(tmp_path / "clf.ubj")
    np.testing.assert_array_equal(loaded.predict_proba(valid), clf.predict_proba(valid))
    np.testing.assert_array_equal(extmem.Model.load(tmp_path / "clf.ubj").predict_proba(valid), clf.predict_proba(valid))


def test_regressor_on_a_numeric_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    write_shard(tmp_path / "data" / "a.parquet", {"x": x, "noise": rng.normal(size=2000), "y": 3 * x + rng.normal(scale=0.1, size=2000)})
    reg = extmem.XGBRegressor(n_estimators=30).fit(extmem.Dataset(tmp_path / "data", label="y"))
    assert reg.score(extmem.Dataset(tmp_path / "data", label="y")) > 0.95
    assert reg.predict(extmem.Dataset(tmp_path / "data", label=None)).shape == (2000,)
    assert not hasattr(reg, "predict_proba")


def test_array_fit_behaves_like_xgboost(small_synth: Path) -> None:
    X, y, _ = _in_memory(small_synth)
    clf = extmem.XGBClassifier(n_estimators=3).fit(X, y)
    assert clf.layout is None
    np.testing.assert_array_equal(clf.predict_proba(X), xgb.XGBClassifier(n_estimators=3).fit(X, y).predict_proba(X))
    with pytest.raises(extmem.OptionError, match="fitted on arrays"):
        clf.predict(small_synth)


@pytest.mark.parametrize("labels", [["acceptor", "donor", "neither"], [-1, 1, 7], [1.0, 2.0, 5.0]])
def test_array_fit_takes_any_class_labels_and_keeps_them(labels: list, tmp_path: Path) -> None:
    """Labels other than 0..K-1 (XGBoost refuses them) train the model of their positions in sorted order."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    ids = (X[:, 0] > -0.4).astype(int) + (X[:, 1] > 0.4)
    y = np.asarray(labels)[ids]
    clf = extmem.XGBClassifier(n_estimators=4).fit(X, y, eval_set=[(X[:50], y[:50])], verbose=False)
    reference = xgb.XGBClassifier(n_estimators=4).fit(X, ids, eval_set=[(X[:50], ids[:50])], verbose=False)
    assert clf.classes_.tolist() == sorted(labels) and clf.objective == reference.objective == "multi:softprob"
    np.testing.assert_array_equal(clf.predict_proba(X), reference.predict_proba(X))
    np.testing.assert_array_equal(clf.predict(X), np.asarray(labels)[reference.predict(X)])
    assert clf.score(X, y) == reference.score(X, ids)
    clf.save_model(tmp_path / "m.json")
    loaded = extmem.XGBClassifier()
    loaded.load_model(tmp_path / "m.json")
    assert loaded.classes_.tolist() == clf.classes_.tolist()
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    eval_labels = np.concatenate([y[:1], ["other" if isinstance(labels[0], str) else 99]])
    with pytest.raises(extmem.OptionError, match=rf"eval_set\[0\] hold {eval_labels.tolist()[1]!r}, which is not one of the classes"):
        extmem.XGBClassifier(n_estimators=2).fit(X, y, eval_set=[(X[:2], eval_labels)])


def test_array_labels_0_to_k_train_as_xgboost_and_a_refit_forgets_old_classes(tmp_path: Path) -> None:
    X, y = np.arange(20.0).reshape(10, 2), np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    clf = extmem.XGBClassifier(n_estimators=2).fit(X, np.array(list("abcabcabca")))
    clf.fit(X, y)
    assert clf.classes_.tolist() == [0, 1, 2] and clf.get_booster().attr("extmem_classes") is None
    np.testing.assert_array_equal(clf.predict(X), xgb.XGBClassifier(n_estimators=2).fit(X, y).predict(X))
    for mixed_or_continuous in (np.array([0, "a"] * 5, dtype=object), y + 0.5):
        with pytest.raises(ValueError, match="Unknown label type"):  # scikit-learn's own check
            clf.fit(X, mixed_or_continuous)


@pytest.mark.parametrize("estimator", [extmem.XGBClassifier, extmem.XGBRFClassifier, extmem.IncrementalClassifier])
def test_labels_that_are_no_classes_are_refused_in_words(estimator: type) -> None:
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(ValueError, match=r"mix kinds that cannot be ordered as classes \(NoneType, str\)"):
        estimator().fit(X, np.array(["a", None] * 5, dtype=object))  # a missing text label


@pytest.mark.parametrize(
    ("weights", "eval_weights", "match"),
    [
        ([1.0, -2.0, 1.0, 1.0], None, r"'sample_weight' values must be 0 or more; 1 are negative \(first: -2\)"),
        ([1.0, np.nan, 1.0, 1.0], None, r"'sample_weight' values must be finite; 1 are NaN or infinite"),
        (None, [[0.0, 0.0, 0.0, 0.0]], r"'sample_weight_eval_set\[0\]' values are all zero"),
    ],
)
def test_array_weights_xgboost_refuses_are_refused_by_name(weights: list | None, eval_weights: list | None, match: str) -> None:
    X, y = np.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1])
    with pytest.raises(extmem.OptionError, match=match):
        extmem.XGBClassifier(n_estimators=2).fit(X, y, sample_weight=weights, eval_set=[(X, y)], sample_weight_eval_set=eval_weights)


@pytest.mark.parametrize("given", [{"y": np.zeros(3000)}, {"sample_weight": np.ones(3000)}, {"base_margin": np.zeros(3000)}])
def test_labels_and_weights_with_a_dataset_are_refused(small_synth: Path, given: dict) -> None:
    with pytest.raises(extmem.OptionError, match=f"pass {next(iter(given))} as None"):
        extmem.XGBClassifier().fit(extmem.Dataset(small_synth, preset="splice-sites"), **given)


def test_classes_follow_the_trainers_rule_when_a_filter_leaves_some_out(small_synth: Path) -> None:
    """Only donor and acceptor rows (ids 1 and 2): three classes all the same, as extmem.train has."""
    data = extmem.Dataset(small_synth, preset="splice-sites", filter="splice_type != 'neither'")
    clf = extmem.XGBClassifier(n_estimators=2).fit(data)
    model, report = extmem.train(data, rounds=2)
    assert list(clf.classes_) == [0, 1, 2] and clf.n_classes_ == 3
    assert report["params"]["num_class"] == 3
    assert clf.predict_proba(data).shape == extmem.Model.from_booster(model).predict_proba(data).shape == (report["rows"], 3)


@pytest.mark.parametrize("forest", [extmem.XGBRFClassifier, extmem.XGBRFRegressor])
def test_random_forests_fitted_on_datasets_equal_xgboosts_on_the_same_rows(forest: type, small_synth: Path) -> None:
    X, y, _ = _in_memory(small_synth)
    streamed = forest(n_estimators=6, max_depth=4, random_state=0).fit(extmem.Dataset(small_synth, preset="splice-sites"))
    in_memory = getattr(xgb, forest.__name__)(n_estimators=6, max_depth=4, random_state=0).fit(X, y)
    assert streamed.get_booster().num_boosted_rounds() == 1 and streamed.get_params()["learning_rate"] == 1.0
    scores = "predict_proba" if hasattr(forest, "predict_proba") else "predict"
    dataset = extmem.Dataset(small_synth, preset="splice-sites")
    np.testing.assert_allclose(getattr(streamed, scores)(dataset), getattr(in_memory, scores)(X), rtol=1e-5, atol=1e-6)


def test_apply_and_margins_are_xgboosts_of_the_training_representation(small_synth: Path) -> None:
    """Leaves and margins: a dataset is streamed, arrays are converted first (zeros in count columns missing), as predict does."""
    X, _, layout = _in_memory(small_synth)
    data = extmem.Dataset(small_synth, preset="splice-sites")
    clf = extmem.XGBClassifier(n_estimators=4, max_depth=3).fit(data)
    expected = clf.get_booster().predict(xgb.DMatrix(X, missing=np.nan, feature_names=list(layout.xgboost_names)), pred_leaf=True)
    assert expected.shape == (X.shape[0], 4 * 3)
    np.testing.assert_array_equal(clf.apply(data), expected)
    np.testing.assert_array_equal(clf.apply(X.toarray()[:50]), expected[:50])
    np.testing.assert_array_equal(clf.apply(data, iteration_range=(0, 2)), expected[:, : 2 * 3])
    nothing = extmem.Dataset(small_synth, preset="splice-sites", filter="splice_type == 'none of these'")
    assert clf.apply(nothing).shape == (0, 12)
    margins = clf.get_booster().predict(xgb.DMatrix(X, missing=np.nan, feature_names=list(layout.xgboost_names)), output_margin=True)
    np.testing.assert_allclose(clf.predict(data, output_margin=True), margins, rtol=1e-6)
    np.testing.assert_allclose(clf.predict(X.toarray()[:50], output_margin=True), margins[:50], rtol=1e-6)
    assert clf.predict(nothing, output_margin=True).shape == (0, 3)
    with pytest.raises(extmem.OptionError, match="With a dataset as X, base_margin must be None"):
        clf.predict_proba(data, base_margin=margins)


def test_an_in_memory_eval_set_of_a_dataset_fit_is_read_as_the_training_rows(small_synth: Path) -> None:
    """Arrays in eval_set get the training representation and names; text labels go through the label map."""
    X, y, _ = _in_memory(small_synth)
    data = extmem.Dataset(small_synth, preset="splice-sites")
    names = np.array(["neither", "donor", "acceptor"])[y.astype(int)]
    clf = extmem.XGBClassifier(n_estimators=4, eval_metric="mlogloss")
    clf.fit(data, eval_set=[data, (X.toarray(), y), (X, names)], verbose=False)
    logs = [clf.evals_result()[f"validation_{i}"]["mlogloss"] for i in range(3)]
    np.testing.assert_allclose(logs[1], logs[0], rtol=1e-6)
    np.testing.assert_allclose(logs[2], logs[0], rtol=1e-6)
    with pytest.raises(extmem.OptionError, match="hold 'Donor', which is not one of the classes"):
        clf.fit(data, eval_set=[(X, np.where(names == "donor", "Donor", names))])


@pytest.mark.parametrize("estimator", [extmem.XGBClassifier, extmem.XGBRanker])
def test_a_dataset_eval_set_of_an_array_fit_is_refused_by_name(estimator: type, small_synth: Path) -> None:
    """XGBoost read the path as a text-file URI ("URI parameter `format` is required") or failed to unpack a Dataset."""
    X, y = np.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1])
    arrays = {"qid": np.zeros(4)} if estimator is extmem.XGBRanker else {}
    for item in (str(small_synth), extmem.Dataset(small_synth, preset="splice-sites"), (str(small_synth), None)):
        with pytest.raises(extmem.OptionError, match=r"eval_set\[1\] is a dataset, but X is in memory"):
            estimator(n_estimators=2).fit(X, y, eval_set=[(X, y), item], **arrays)
