from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from conftest import cache_dirs, write_shard

import extmem
from extmem._layout import LAYOUT_ATTRIBUTE, FeatureLayout
from extmem.run._callbacks import FinalPredictions
from extmem.run._params import infer_objective, label_range

REPORT_KEYS = {"rows", "features", "peak_rss_bytes", "peak_anon_bytes", "cache_bytes", "seconds", "metrics"}


@pytest.fixture(scope="module")
def trained(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, extmem.TrainResult]:
    valid = tmp_path_factory.mktemp("valid")
    extmem.synth(valid, extmem.SynthOptions(rows=1000, shards=1, k=4, seq_len=40, seed=11))
    out = tmp_path_factory.mktemp("model")
    result = extmem.train(
        small_synth, preset="splice-sites", out=out, valid=valid, rounds=30, early_stopping_rounds=5, params={"max_depth": 4}, cache="disk"
    )
    return out, result


def test_train_writes_model_and_report(trained: tuple[Path, extmem.TrainResult]) -> None:
    out, result = trained
    assert sorted(p.name for p in out.iterdir()) == ["model.ubj", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["rows"] == 3000 and report["data"]["valid"]["rows"] == 1000
    assert report["features"] == len(FeatureLayout.from_json(result.booster.attr(LAYOUT_ATTRIBUTE)).names)
    assert report["params"]["objective"] == "multi:softprob" and report["params"]["num_class"] == 3
    assert report["classes"] == ["neither", "donor", "acceptor"]
    assert report["peak_rss_bytes"] >= report["peak_anon_bytes"] > 0
    assert report["cache_bytes"] > 0
    assert set(report["metrics"]) == {"train", "valid"}
    assert "gene_type" in report["dropped_columns"]


def test_saved_model_reloads_with_its_layout(trained: tuple[Path, extmem.TrainResult]) -> None:
    out, result = trained
    booster = xgb.Booster(model_file=str(out / "model.ubj"))
    layout = FeatureLayout.from_json(booster.attr(LAYOUT_ATTRIBUTE))
    assert layout.label_map == {"neither": 0, "donor": 1, "acceptor": 2}
    assert layout.names == tuple(booster.feature_names)
    assert sum(layout.zero_is_missing) == sum(n.startswith("4mer_") for n in layout.names) > 0
    assert booster.num_boosted_rounds() == result.booster.num_boosted_rounds()


def test_model_beats_the_majority_baseline(trained: tuple[Path, extmem.TrainResult]) -> None:
    _, result = trained
    scores = result.report["evaluation"]["valid"]
    # Always predicting 'neither' gives macro-F1 = 0.96 / 3 = 0.32.
    assert scores["macro_f1"] > 0.6
    assert result.report["metrics"]["valid"]["mlogloss"] < result.report["history"]["valid"]["mlogloss"][0]


def test_early_stopping_records_best_iteration(trained: tuple[Path, extmem.TrainResult]) -> None:
    _, result = trained
    assert result.report["early_stopping"]["best_iteration"] is not None
    assert result.report["rounds"] <= 30


@pytest.mark.parametrize(
    ("labels", "objective", "extra"),
    [
        ([0, 1, 1, 0], "binary:logistic", {"eval_metric": ["logloss", "auc"]}),
        ([0, 2, 1, 4], "multi:softprob", {"num_class": 5}),
        ([0.5, 1.25, 3.0, 2.0], "reg:squarederror", {"eval_metric": ["rmse"]}),
        ([1, 1, 1, 1], "binary:logistic", {"eval_metric": ["logloss", "auc"]}),  # class ids 0..max, even when a class has no rows
    ],
)
def test_objective_is_inferred_from_numeric_labels(labels: list[float], objective: str, extra: dict) -> None:
    chosen = infer_objective(FeatureLayout(("x",), (False,)), *label_range(np.array(labels, dtype=np.float32)), {})
    assert chosen["objective"] == objective
    assert extra.items() <= chosen.items()


def test_a_num_class_asks_for_a_multi_class_model_and_only_fits_one(tmp_path: Path) -> None:
    """0/1 labels with num_class=3 (a class without rows yet): multi-class; with a binary objective XGBoost only said 'Invalid shape of labels'."""
    chosen = infer_objective(FeatureLayout(("x",), (False,)), 0.0, 1.0, False, {"num_class": 3})
    assert chosen["objective"] == "multi:softprob" and "num_class" not in chosen
    write_shard(tmp_path / "data" / "a.parquet", {"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    result = extmem.train(tmp_path / "data", label="y", rounds=2, params={"num_class": 3})
    assert result.report["params"]["objective"] == "multi:softprob" and result.report["params"]["num_class"] == 3
    with pytest.raises(extmem.OptionError, match=r"num_class \('params'\) is for multi-class objectives .* not 'binary:logistic'"):
        extmem.train(tmp_path / "data", label="y", rounds=2, params={"num_class": 3, "objective": "binary:logistic"})


def test_user_objective_is_kept() -> None:
    chosen = infer_objective(FeatureLayout(("x",), (False,)), 0.0, 1.0, False, {"objective": "reg:logistic"})
    assert "objective" not in chosen and chosen["eval_metric"] == ["rmse"]


def test_binary_training_on_numeric_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    write_shard(
        tmp_path / "data" / "a.parquet", {"x": x.tolist(), "noise": rng.normal(size=400).tolist(), "y": (x > 0).astype(int).tolist()}
    )
    result = extmem.train(tmp_path / "data", label="y", rounds=10)
    assert result.report["params"]["objective"] == "binary:logistic"
    assert result.report["evaluation"]["train"]["accuracy"] > 0.95


def test_approx_uses_paged_matrix(small_synth: Path) -> None:
    result = extmem.train(small_synth, preset="splice-sites", rounds=3, params={"tree_method": "approx"})
    assert result.report["params"]["tree_method"] == "approx"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rounds": 0}, "'rounds' option must be a positive integer. Got 0"),
        ({"early_stopping_rounds": 3}, "needs validation data"),
        ({"params": {"tree_method": "exact"}}, "tree_method 'exact' cannot train from external memory"),
        ({"batch_rows": -5}, "'batch_rows' option must be a positive integer. Got -5"),
        ({"page_rows": 0}, "'page_rows' option must be a positive integer"),
        ({"bogus": 1}, r"extmem.train takes no option\(s\) bogus\. It takes: data, label, out, rounds"),
        ({"early_stopping": 3}, r"takes no option\(s\) early_stopping \(did you mean early_stopping_rounds\?\)"),
    ],
)
def test_bad_options_are_rejected(small_synth: Path, tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(extmem.OptionError, match=match):
        extmem.train(small_synth, preset="splice-sites", out=tmp_path / "out", cache_dir=tmp_path, **kwargs)
    assert not (tmp_path / "out").exists()
    assert cache_dirs(tmp_path) == []


def test_failed_training_writes_nothing(tmp_path: Path) -> None:
    write_shard(tmp_path / "data" / "a.parquet", {"x": [1.0, 2.0], "splice_type": ["donor", "exon"]})
    with pytest.raises(extmem.LabelError, match="'exon'"):
        extmem.train(tmp_path / "data", preset="splice-sites", out=tmp_path / "out", cache_dir=tmp_path)
    assert not (tmp_path / "out").exists()
    assert cache_dirs(tmp_path) == []


@pytest.mark.parametrize(("packed", "width"), [(False, None), (True, None), (True, 65_536)], ids=["wide", "packed", "packed-hashed"])
def test_final_metrics_equal_evaluating_the_saved_model(small_synth: Path, tmp_path: Path, packed: bool, width: int | None) -> None:
    """The final metrics, predicted from the kept page spool, are evaluate's; and the spool is gone after."""
    data = small_synth
    if packed:
        data = tmp_path / "packed"
        extmem.pack(small_synth, data)
    kmers = extmem.KmerEncoding(width=width) if width else None
    result = extmem.train(data, preset="splice-sites", kmers=kmers, rounds=3, valid=data, out=tmp_path / "m", cache_dir=tmp_path)
    reported = result.report["evaluation"]["valid"]
    evaluated = extmem.evaluate(tmp_path / "m", data)
    assert reported["rows"] == evaluated["rows"] == 3000
    assert result.report["data"]["valid"]["spooled_bytes"] > 0
    for metric in ("accuracy", "macro_f1", "mlogloss"):
        assert reported[metric] == pytest.approx(evaluated[metric], rel=1e-5), metric
    assert cache_dirs(tmp_path) == []


def test_final_metrics_of_an_early_stopped_model_equal_evaluating_it(small_synth: Path, held_out: Path, tmp_path: Path) -> None:
    """Early stopping keeps fewer trees than it trained: those metrics come from the spool, not XGBoost's cache of the last round."""
    valid = held_out
    options = {"preset": "splice-sites", "valid": valid, "rounds": 60, "early_stopping_rounds": 2, "params": {"eta": 1.0, "max_depth": 8}}
    result = extmem.train(small_synth, out=tmp_path / "m", **options)
    stopping = result.report["early_stopping"]
    assert stopping["best_iteration"] + 1 == result.booster.num_boosted_rounds() < len(result.report["history"]["valid"]["mlogloss"])
    evaluated = extmem.evaluate(tmp_path / "m", valid)
    for metric in ("accuracy", "macro_f1", "mlogloss"):
        assert result.report["evaluation"]["valid"][metric] == pytest.approx(evaluated[metric], rel=1e-5), metric


def test_final_predictions_are_read_from_the_cache_of_the_trained_model_only() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 6))
    y = (X[:, 0] + rng.normal(scale=0.5, size=500) > 0).astype(float)
    matrix = xgb.QuantileDMatrix(X, y)
    params = {"objective": "binary:logistic", "tree_method": "hist"}
    final = FinalPredictions(matrix)
    booster = xgb.train(params, matrix, 5, evals=[(matrix, "train")], callbacks=[final])
    np.testing.assert_allclose(final.predictions, booster.predict(xgb.DMatrix(X)), rtol=1e-6)

    class KeepTwoRounds(xgb.callback.TrainingCallback):
        def after_training(self, model: xgb.Booster) -> xgb.Booster:
            return model[:2]

    sliced = FinalPredictions(matrix)
    xgb.train(params, matrix, 5, evals=[(matrix, "train")], callbacks=[KeepTwoRounds(), sliced])
    assert sliced.predictions is None


def test_progress_bars_have_totals_and_count_each_row_once(small_synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    extmem.train(small_synth, preset="splice-sites", rounds=3, progress=True, valid_fraction=0.2, page_rows=1000)
    lines = capsys.readouterr().err.replace("\r", "\n").splitlines()
    reading = [line for line in lines if line.startswith("reading:")]
    training = [line for line in lines if line.startswith("training:")]
    counts = [tuple(map(float, match.groups())) for line in reading if (match := re.search(r"([\d.]+)k/([\d.]+)k", line))]
    assert counts and counts[-1][1] == 3.0, reading  # the training side's 2.4k rows, then the validation side's 0.6k
    assert all(done <= total for done, total in counts), reading
    assert training and "3.00/3.00" in training[-1]
