"""Incremental trainer: partial_fit models over the streamed pages, checked against scikit-learn fitted in memory."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_shard
from sklearn.naive_bayes import GaussianNB, MultinomialNB
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

import extmem
from extmem.run._incremental import train_incremental
from extmem.score._incremental_model import IncrementalModel
from extmem.score._model import as_model


def in_memory(data: Path, layout: extmem.FeatureLayout) -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset as a dense matrix in layout order (absent k-mer columns -> 0) and class ids: the non-streaming reference.

    Values are rounded to float32 first, as extmem's blocks (and XGBoost's) hold them.
    """
    table = pa.concat_tables([pq.read_table(shard) for shard in sorted(data.glob("*.parquet"))], promote_options="default")
    columns = []
    for name, is_count in zip(layout.names, layout.zero_is_missing):
        values = table[name].to_numpy(zero_copy_only=False).astype(np.float64) if name in table.column_names else np.zeros(table.num_rows)
        columns.append(np.nan_to_num(values) if is_count else values)
    labels = np.array([extmem.SPLICE_SITES.label_map[value] for value in table["splice_type"].to_pylist()])
    return np.column_stack(columns).astype(np.float32).astype(np.float64), labels


def test_naive_bayes_equals_a_non_streaming_fit(small_synth: Path, cache_root: Path) -> None:
    result = train_incremental(
        small_synth,
        preset="splice-sites",
        algorithm="naive_bayes",
        class_weight="none",
        page_rows=512,
        batch_rows=256,
        cache_dir=cache_root,
    )
    model = result.model
    X, y = in_memory(small_synth, model.layout)
    counts, values = X[:, model.layout.sparse_mask], X[:, ~model.layout.sparse_mask]
    assert result.report["data"]["train"]["pages"] >= 3  # really streamed
    multinomial = MultinomialNB().fit(counts, y)
    streamed = model.learner.estimators["counts"]
    np.testing.assert_array_equal(streamed.feature_count_, multinomial.feature_count_)  # integer counts: exact in any order
    np.testing.assert_array_equal(streamed.class_count_, multinomial.class_count_)
    np.testing.assert_allclose(streamed.feature_log_prob_, multinomial.feature_log_prob_, rtol=1e-12)
    values = StandardScaler().fit_transform(values)  # Gaussian naive Bayes sees standardised values
    gaussian = GaussianNB().fit(values, y)
    streamed_gaussian = model.learner.estimators["values"]
    np.testing.assert_allclose(streamed_gaussian.theta_, gaussian.theta_, atol=1e-9)
    # partial_fit adds var_smoothing (1e-9) x the largest variance of its last batch, fit that of all rows
    np.testing.assert_allclose(streamed_gaussian.var_, gaussian.var_, rtol=1e-7, atol=1e-7)
    joint = multinomial.predict_joint_log_proba(counts) + gaussian.predict_joint_log_proba(values) - multinomial.class_log_prior_
    expected = np.exp(joint - joint.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(small_synth), expected, atol=1e-6)
    assert list(cache_root.iterdir()) == []


def test_standardisation_statistics_equal_standard_scaler(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = 3000
    score = rng.normal(1e6, 250.0, rows)  # a coordinate-like column: scaling without centring would be useless
    with_nulls = [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.normal(-3, 2, rows))]
    counts = rng.poisson(0.3, rows).astype(float)
    labels = np.where(rng.random(rows) < 0.9, "neither", np.where(rng.random(rows) < 0.5, "donor", "acceptor"))
    for part in range(3):
        chunk = slice(part * 1000, (part + 1) * 1000)
        write_shard(
            tmp_path / "data" / f"batch_{part:05d}.parquet",
            {"position": score[chunk], "noisy": with_nulls[chunk], "4mer_ACGT": counts[chunk], "splice_type": labels[chunk].tolist()},
            row_group_size=300,
        )
    model = train_incremental(
        tmp_path / "data", preset="splice-sites", algorithm="sgd_logistic", epochs=1, page_rows=700, batch_rows=300
    ).model
    standardizer = model.learner.standardizer
    # extmem's blocks hold float32, as XGBoost's do; StandardScaler ignores NaN, as extmem does
    as_read = np.column_stack([score, np.array(with_nulls, dtype=float), counts]).astype(np.float32).astype(np.float64)
    reference = StandardScaler().fit(as_read)
    order = [model.layout.names.index(name) for name in ("position", "noisy", "4mer_ACGT")]
    np.testing.assert_allclose(standardizer.mean[order], reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(standardizer.scale[order], reference.scale_, rtol=1e-9)


@pytest.mark.slow
def test_sgd_beats_the_majority_baseline_and_weights_classes(wide_synth: Path, tmp_path: Path) -> None:
    result = train_incremental(
        wide_synth, preset="splice-sites", algorithm="sgd_logistic", valid_fraction=0.25, params={"alpha": 0.01}, out=tmp_path / "model"
    )
    report = result.report
    _, labels = in_memory(wide_synth, result.model.layout)
    majority_share = np.bincount(labels).max() / labels.size
    majority_macro_f1 = 2 * majority_share / (1 + majority_share) / 3  # F1 of the majority class, 0 for the two others
    assert majority_macro_f1 < 0.34
    assert report["evaluation"]["valid"]["macro_f1"] > majority_macro_f1 + 0.3
    assert len(report["history"]["valid"]["macro_f1"]) == report["details"]["epochs"] == 5
    train_rows = report["data"]["train"]["rows"]
    assert 0.65 * labels.size < train_rows < 0.85 * labels.size
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)  # on all rows; the report's are on the training side
    np.testing.assert_allclose(list(report["details"]["class_weights"].values()), expected, rtol=0.15)
    assert json.loads((tmp_path / "model" / "report.json").read_text())["algorithm"] == "sgd_logistic"


def test_epochs_shuffle_pages_reproducibly(small_synth: Path) -> None:
    def coefficients(seed: int) -> np.ndarray:
        result = train_incremental(
            small_synth, preset="splice-sites", algorithm="sgd_hinge", epochs=2, seed=seed, page_rows=512, batch_rows=256
        )
        return result.model.learner.estimators["linear"].coef_

    first = coefficients(1)
    np.testing.assert_array_equal(first, coefficients(1))
    assert not np.allclose(first, coefficients(2))


@pytest.mark.parametrize("kind", ["sgd_logistic", "sgd_hinge", "passive_aggressive", "naive_bayes"])
def test_saved_models_score_like_the_trained_ones(kind: str, small_synth: Path, tmp_path: Path) -> None:
    trained = train_incremental(small_synth, preset="splice-sites", algorithm=kind, epochs=None, out=tmp_path / "model").model
    loaded = as_model(tmp_path / "model")
    assert isinstance(loaded, IncrementalModel) and loaded.kind == kind
    np.testing.assert_array_equal(loaded.predict(small_synth), trained.predict(small_synth))
    if loaded.task == "hard":
        with pytest.raises(extmem.OptionError, match="predict_proba needs a probabilistic classifier"):
            loaded.predict_proba(small_synth)
    else:
        np.testing.assert_array_equal(loaded.predict_proba(small_synth), trained.predict_proba(small_synth))
    with zipfile.ZipFile(tmp_path / "model" / "model.npz") as archive:
        for name in archive.namelist():  # every entry loads without pickle
            np.load(archive.open(name), allow_pickle=False)


def test_load_refuses_an_estimator_class_it_does_not_know(small_synth: Path, tmp_path: Path) -> None:
    train_incremental(small_synth, preset="splice-sites", algorithm="naive_bayes", out=tmp_path)
    stored = dict(np.load(tmp_path / "model.npz", allow_pickle=False))
    meta = json.loads(str(stored["meta"]))
    meta["estimators"]["counts"]["class"] = "Pipeline"
    stored["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "model.npz", **stored)
    with pytest.raises(extmem.OptionError, match="'Pipeline', which extmem does not load"):
        IncrementalModel.load(tmp_path)


def test_classifier_front_end_fits_a_path_and_round_trips(small_synth: Path, tmp_path: Path) -> None:
    classifier = extmem.IncrementalClassifier("sgd_logistic", max_iter=2, params={"alpha": 0.001}).fit(
        small_synth, preset="splice-sites", batch_rows=512
    )
    assert classifier.report_["details"]["epochs"] == 2 and classifier.model_.learner.estimators["linear"].alpha == 0.001
    classifier.save(tmp_path)
    again = extmem.IncrementalClassifier.load(tmp_path)
    np.testing.assert_array_equal(again.predict_proba(small_synth), classifier.predict_proba(small_synth))
    table = pq.read_table(min(small_synth.glob("*.parquet"))).to_pandas()
    features = table[[name for name in classifier.model_.layout.names if name in table.columns]]
    np.testing.assert_allclose(classifier.predict_proba(features)[:10], classifier.predict_proba(small_synth)[:10], atol=1e-6)


def test_cli_trains_predicts_and_evaluates(small_synth: Path, tmp_path: Path, cache_root: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "extmem", *args], capture_output=True, text=True, check=False, timeout=300)

    trained = run("train", str(small_synth), "--algorithm", "sgd_hinge", "--epochs", "2", "--out", str(tmp_path / "m"), "--no-progress",
                  "--cache-dir", str(cache_root))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "trained sgd_hinge: 2 epochs on 3,000 rows" in trained.stdout and "spool" in trained.stdout
    predicted = run(
        "predict", str(tmp_path / "m"), str(small_synth), "--out", str(tmp_path / "p.parquet"), "--keep", "gene_id", "--no-progress"
    )
    assert predicted.returncode == 0, predicted.stderr
    assert pq.read_schema(tmp_path / "p.parquet").names == ["gene_id", "predicted"]
    evaluated = run("evaluate", str(tmp_path / "m"), str(small_synth), "--no-progress")
    assert evaluated.returncode == 0 and "macro_f1" in evaluated.stdout
    assert list(cache_root.iterdir()) == []
    misplaced = run("train", str(small_synth), "--algorithm", "naive_bayes", "--rounds", "3", "--out", str(tmp_path / "x"))
    assert misplaced.returncode != 0 and "--rounds applies to --algorithm xgboost only" in misplaced.stderr
    assert not (tmp_path / "x").exists()


def test_bad_input_is_named_and_leaves_no_cache(small_synth: Path, tmp_path: Path, cache_root: Path) -> None:
    with pytest.raises(extmem.OptionError, match="The parameter 'max_depth' \\('params'\\) is not one of the sgd_logistic model's"):
        train_incremental(small_synth, preset="splice-sites", params={"max_depth": 3})
    with pytest.raises(extmem.OptionError, match="naive_bayes is fitted exactly in one pass"):
        train_incremental(small_synth, preset="splice-sites", algorithm="naive_bayes", epochs=3)
    with pytest.raises(extmem.FeatureValueError, match="non-negative counts.*do without 'signed'"):
        train_incremental(
            small_synth,
            preset="splice-sites",
            algorithm="naive_bayes",
            kmers=extmem.KmerEncoding(width=64, signed=True),
            cache_dir=cache_root,
        )
    write_shard(tmp_path / "reg" / "a.parquet", {"x": [1.0, 2.0, 3.0], "y": [0.5, 1.0, 2.0]})
    with pytest.raises(extmem.LabelError, match="column 'y'.*class ids or strings; found 0.5"):
        train_incremental(tmp_path / "reg", "y", cache_dir=cache_root)
    assert list(cache_root.iterdir()) == []


def test_a_model_folder_holds_the_model_trained_last(small_synth: Path, tmp_path: Path) -> None:
    extmem.train(small_synth, preset="splice-sites", out=tmp_path, rounds=2)
    with pytest.raises(extmem.OptionError, match="exists and is not empty; pass 'overwrite' to replace it"):
        train_incremental(small_synth, preset="splice-sites", algorithm="naive_bayes", out=tmp_path)
    train_incremental(small_synth, preset="splice-sites", algorithm="naive_bayes", out=tmp_path, overwrite=True)
    assert not (tmp_path / "model.ubj").exists() and isinstance(as_model(tmp_path), IncrementalModel)
    extmem.train(small_synth, preset="splice-sites", out=tmp_path, rounds=2, overwrite=True)
    assert not (tmp_path / "model.npz").exists() and isinstance(as_model(tmp_path), extmem.Model)


def test_early_stopping_keeps_the_best_epoch(small_synth: Path) -> None:
    # a large constant step overshoots, so the validation log-loss stops improving within a few epochs
    options = {"algorithm": "sgd_logistic", "valid_fraction": 0.3, "params": {"learning_rate": "constant", "eta0": 0.5}, "batch_rows": 256}
    full = train_incremental(small_synth, preset="splice-sites", epochs=12, **options)
    losses = full.report["history"]["valid"]["mlogloss"]
    best = int(np.argmin(losses))
    stopped = train_incremental(small_synth, preset="splice-sites", epochs=12, early_stopping_rounds=2, **options)
    report = stopped.report
    best_epoch = report["early_stopping"]["best_iteration"]
    assert best_epoch == int(np.argmin(report["history"]["valid"]["mlogloss"])) and report["early_stopping"]["fired"]
    assert report["details"]["epochs"] == best_epoch + 3 < 12  # stopped two epochs after the best
    assert report["evaluation"]["valid"]["mlogloss"] == pytest.approx(min(report["history"]["valid"]["mlogloss"]), rel=1e-9)
    if best_epoch == best:  # the same shuffles up to the stop: the same best model as the full run's
        assert report["evaluation"]["valid"]["mlogloss"] == pytest.approx(losses[best], rel=1e-9)
    with pytest.raises(extmem.OptionError, match="needs validation data"):
        train_incremental(small_synth, preset="splice-sites", early_stopping_rounds=2)


def test_row_weights_and_class_weights_multiply(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = ["neither"] * 60 + ["donor"] * 30 + ["acceptor"] * 10
    weights = rng.uniform(0.5, 2.0, 100)
    write_shard(tmp_path / "a.parquet", {"4mer_AAAA": rng.poisson(1.0, 100).astype(float), "w": weights, "splice_type": labels})
    label_ids = np.array([extmem.SPLICE_SITES.label_map[name] for name in labels])
    weighted = np.bincount(label_ids, weights=weights)
    plain = train_incremental(tmp_path, preset="splice-sites", algorithm="naive_bayes", class_weight="none", weight="w").model
    np.testing.assert_allclose(plain.learner.estimators["counts"].class_count_, weighted, rtol=1e-6)
    balanced = train_incremental(tmp_path, preset="splice-sites", algorithm="naive_bayes", weight="w")
    class_weights = np.array(list(balanced.report["details"]["class_weights"].values()))
    np.testing.assert_allclose(class_weights, weighted.sum() / (3 * weighted), rtol=1e-6)
    np.testing.assert_allclose(balanced.model.learner.estimators["counts"].class_count_, weighted * class_weights, rtol=1e-6)


def test_array_chunks_of_weight_zero_are_skipped_not_refused() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 3)), np.arange(40) % 2
    weights = np.r_[np.zeros(36), np.ones(4)]  # most chunks of 4 rows weigh nothing at all
    clf = extmem.IncrementalClassifier("sgd_logistic", page_rows=4).fit(X, y, sample_weight=weights)
    assert clf.predict(X).shape == (40,)
    with pytest.raises(ValueError, match="Sample weights must contain at least one non-zero number"):  # scikit-learn's own check
        extmem.IncrementalClassifier("sgd_logistic", page_rows=4).fit(X, y, sample_weight=np.zeros(40))


def test_classifier_takes_an_estimator_instance_for_datasets(small_synth: Path, tmp_path: Path) -> None:
    from sklearn.linear_model import Perceptron, SGDClassifier

    data = extmem.Dataset(small_synth, preset="splice-sites")
    classifier = extmem.IncrementalClassifier(SGDClassifier(loss="log_loss", alpha=0.001), max_iter=2).fit(data)
    assert classifier.n_iter_ == 2 and classifier.report_["algorithm"] == "SGDClassifier"
    assert classifier.predict_proba(data).shape == (3000, 3)
    classifier.save(tmp_path / "sgd")
    np.testing.assert_array_equal(extmem.IncrementalClassifier.load(tmp_path / "sgd").predict_proba(data), classifier.predict_proba(data))
    hard = extmem.IncrementalClassifier(Perceptron(), max_iter=1).fit(data)
    assert not hasattr(hard, "predict_proba") and set(np.unique(hard.predict(data))) <= {0, 1, 2}
    with pytest.raises(extmem.OptionError, match="a Perceptron model cannot be saved"):
        hard.save(tmp_path / "perceptron")
    with pytest.raises(extmem.OptionError, match="not a scikit-learn classifier with partial_fit"):
        extmem.IncrementalClassifier(object()).fit(data)
