from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import xgboost as xgb
from conftest import with_broken_shard, write_shard
from sklearn import metrics as skm

import extmem
from extmem.read._discover import discover_shards


def _read_all(path: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(shard) for shard in discover_shards([str(path)])], promote_options="default")


def test_predict_writes_probabilities_in_input_order(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.parquet"
    report = extmem.predict(model_dir, held_out, out, keep="gene_id,position", batch_rows=256)
    predictions = pq.read_table(out)
    truth = _read_all(held_out)
    assert report["rows"] == predictions.num_rows == truth.num_rows == 1200
    assert predictions.column_names == ["gene_id", "position", "prob_neither", "prob_donor", "prob_acceptor", "predicted"]
    assert predictions.column("gene_id").to_pylist() == truth.column("gene_id").to_pylist()
    assert predictions.column("position").to_pylist() == truth.column("position").to_pylist()
    probabilities = np.column_stack([predictions.column(f"prob_{c}").to_numpy() for c in ("neither", "donor", "acceptor")])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    classes = np.array(["neither", "donor", "acceptor"])
    assert predictions.column("predicted").to_pylist() == classes[probabilities.argmax(axis=1)].tolist()
    # The same rows through XGBoost's own predict on a paged DMatrix (raw values, not quantized to other cuts).
    booster = xgb.Booster(model_file=str(model_dir / "model.ubj"))
    reference = booster.predict(
        extmem.dmatrix(held_out, preset="splice-sites", sparse_pages=True, features=list(extmem.Model.load(model_dir).layout.names))
    )
    np.testing.assert_allclose(probabilities, reference, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["preds.parquet"]


def test_dense_and_sparse_arrays_score_like_parquet(model_dir: Path, held_out: Path) -> None:
    model = extmem.Model.load(model_dir)
    streamed = model.predict_proba(held_out)
    table = _read_all(held_out)
    # What a user holds in memory: every feature column, absent k-mers as zeros.
    dense = np.column_stack(
        [
            table.column(name).to_numpy(zero_copy_only=False) if name in table.column_names else np.zeros(table.num_rows)
            for name in model.layout.names
        ]
    )
    dense = np.nan_to_num(dense.astype(np.float64), nan=0.0)
    np.testing.assert_allclose(model.predict_proba(dense), streamed, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(sp.csr_matrix(dense)), streamed, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(table), streamed, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba({name: dense[:, i] for i, name in enumerate(model.layout.names)}), streamed, atol=1e-6)
    assert model.predict_proba(dense[:0]).shape == (0, 3) and model.predict(dense[:0]).shape == (0,)
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(dense[:, ::-1], columns=list(model.layout.names)[::-1]).assign(gene_id="g1")
    np.testing.assert_allclose(model.predict_proba(frame), streamed, atol=1e-6)
    # Scoring the zeros as values (what plain XGBoost does with this array) gives other predictions.
    naive = model.booster.inplace_predict(dense.astype(np.float32))
    assert np.abs(naive - streamed).max() > 1e-3
    assert model.predict(table).tolist() == streamed.argmax(axis=1).tolist()


def test_in_memory_input_lacking_a_feature_column_is_named(model_dir: Path) -> None:
    """A frame without a (non-count) feature column scores it as missing, with a warning naming it; count columns may be absent
    (their zeros); a Series is refused in one line instead of an AttributeError."""
    pandas = pytest.importorskip("pandas")
    model = extmem.Model.load(model_dir)
    plain = [name for name, counts in zip(model.layout.names, model.layout.zero_is_missing) if not counts]
    frame = pandas.DataFrame({name: [0.5, 1.0] for name in plain})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full = model.predict_proba(frame)
    with pytest.warns(UserWarning, match=rf"lacks 1 of the model's feature columns \('{plain[0]}'\); they are read as missing"):
        lacking = model.predict_proba(frame.drop(columns=plain[0]))
    assert full.shape == lacking.shape == (2, 3)
    with pytest.raises(extmem.SchemaError, match="is a pandas Series"):
        model.predict_proba(frame.iloc[0])


def test_evaluate_equals_sklearn_on_concatenated_predictions(model_dir: Path, held_out: Path) -> None:
    model = extmem.Model.load(model_dir)
    result = extmem.evaluate(model_dir, held_out, batch_rows=200)
    probabilities = model.predict_proba(held_out)
    labels = np.array([extmem.SPLICE_SITES.label_map[v] for v in _read_all(held_out).column("splice_type").to_pylist()])
    predicted = probabilities.argmax(axis=1)
    assert result["rows"] == labels.size
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert result["macro_f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert result["mlogloss"] == pytest.approx(skm.log_loss(labels, y_proba=probabilities), rel=1e-5)
    np.testing.assert_array_equal(result["confusion_matrix"]["counts"], skm.confusion_matrix(labels, predicted))
    for k, name in enumerate(["neither", "donor", "acceptor"]):
        assert result["per_class"][name]["roc_auc"] == pytest.approx(skm.roc_auc_score(labels == k, probabilities[:, k]), rel=1e-9)
        assert result["per_class"][name]["pr_auc"] == pytest.approx(skm.average_precision_score(labels == k, probabilities[:, k]), rel=1e-9)


def test_evaluate_writes_pr_curve_plot(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "pr.png"
    extmem.evaluate(model_dir, held_out, plot=plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_outputs_are_distinct_files_of_the_kind_their_names_say(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    """--out m.json --plot m.json evaluated everything, wrote the JSON and then failed on the plot; metrics into m.csv were JSON and
    a plot into pr.txt a PNG. Now: one name twice, or a name of another format, is refused before any work; pr.pdf is a PDF."""
    pytest.importorskip("matplotlib")
    refusals = (
        ({"out": tmp_path / "m.json", "plot": tmp_path / "m.json"}, r"The 'out' and 'plot' options name one file"),
        ({"out": tmp_path / "m.csv"}, r"'out' file '.*m\.csv' ends in '\.csv'; it is written as JSON \(\.json\)"),
        ({"plot": tmp_path / "pr.txt"}, r"'plot' file '.*pr\.txt' ends in '\.txt'; it is written as PNG \(\.png\) or PDF \(\.pdf\) or SVG"),
    )
    for outputs, match in refusals:
        with pytest.raises(extmem.OptionError, match=match):
            extmem.evaluate(model_dir, held_out, **outputs)
    assert list(tmp_path.iterdir()) == []
    extmem.evaluate(model_dir, held_out, out=tmp_path / "m.json", plot=tmp_path / "pr.pdf")
    assert (tmp_path / "pr.pdf").read_bytes()[:5] == b"%PDF-" and json.loads((tmp_path / "m.json").read_text())["rows"] > 0
    regression = extmem.train(held_out, label="position", rounds=1).booster  # no classes: its plot was an empty frame
    with pytest.raises(
        extmem.OptionError, match=r"curves \('plot'\) need class probabilities; this model's objective is 'reg:squarederror'"
    ):
        extmem.evaluate(regression, held_out, label="position", plot=tmp_path / "reg.png")
    assert not (tmp_path / "reg.png").exists()


def test_predict_with_filter_keeps_only_matching_rows(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "chr1.parquet"
    extmem.predict(model_dir, held_out, out, keep=["chrom"], filter="chrom == 'chr1'")
    chroms = pq.read_table(out).column("chrom").to_pylist()
    assert chroms and set(chroms) == {"chr1"}
    assert len(chroms) == _read_all(held_out).column("chrom").to_pylist().count("chr1")


def test_kept_columns_come_once_and_patterns_match_columns(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    """--keep gene_id,gene_id wrote two columns of one name; --keep 'gene_*' matched nothing."""
    extmem.predict(model_dir, held_out, tmp_path / "a.parquet", keep="gene_id,gene_id,position")
    assert pq.read_table(tmp_path / "a.parquet").column_names[:2] == ["gene_id", "position"]
    extmem.predict(model_dir, held_out, tmp_path / "b.parquet", keep="gene_*,position")
    kept = pq.read_table(tmp_path / "b.parquet").column_names[:-4]
    assert kept == [name for name in pq.read_schema(next(held_out.glob("*.parquet"))).names if name.startswith("gene_")] + ["position"]
    assert "gene_id" in kept and len(kept) > 2
    with pytest.raises(extmem.SchemaError, match=r"'keep' entry 'nothing_\*' matches no column"):
        extmem.predict(model_dir, held_out, tmp_path / "c.parquet", keep="nothing_*")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"keep": "no_such_column"}, extmem.SchemaError, "'keep' column 'no_such_column'"),
        ({"keep": "prob_donor"}, extmem.SchemaError, "'keep' column 'prob_donor'"),
        ({"filter": "chrom = 1"}, extmem.FilterError, "filter"),
    ],
)
def test_predict_errors_leave_no_output(
    model_dir: Path, held_out: Path, tmp_path: Path, kwargs: dict, error: type[Exception], match: str
) -> None:
    if kwargs.get("keep") == "prob_donor":
        write_shard(tmp_path / "data" / "a.parquet", {"4mer_AAAA": [1.0, 0.0], "prob_donor": [0.1, 0.2]})
        data = tmp_path / "data"
    else:
        data = held_out
    with pytest.raises(error, match=match):
        extmem.predict(model_dir, data, tmp_path / "out" / "preds.parquet", **kwargs)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_predictions_are_not_written_among_the_shards_they_score(model_dir: Path, small_synth: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_synth, data)
    shards = sorted(path.name for path in data.iterdir())
    for out, source in ((data / "pred.parquet", str(data)), (data / "batch_99.parquet", str(data / "batch_*.parquet"))):
        with pytest.raises(extmem.OptionError, match="would lie among the shards it scores"):
            extmem.predict(model_dir, source, out)
    assert sorted(path.name for path in data.iterdir()) == shards
    extmem.predict(model_dir, data, data / "_predictions.parquet")  # a hidden name is never a shard
    extmem.predict(model_dir, str(data / "batch_*.parquet"), data / "pred.parquet")  # outside the pattern
    assert sorted(path.name for path in data.iterdir()) == sorted([*shards, "_predictions.parquet", "pred.parquet"])


def test_columns_of_another_kind_than_the_model_reads_are_refused_by_name(tmp_path: Path) -> None:
    rows = {"x": [1.0, 2.0] * 10, "c": ["a", "b"] * 10, "splice_type": ["donor", "neither"] * 10}
    model = extmem.train(write_shard(tmp_path / "train" / "a.parquet", rows).parent, preset="splice-sites", categorical="c", rounds=2)
    for name, changed, reads in (("c", [1, 2] * 10, "a categorical feature of strings such as 'a'"), ("x", ["1.0"] * 20, "numbers")):
        data = write_shard(tmp_path / name / "a.parquet", {**rows, name: changed}).parent
        with pytest.raises(extmem.SchemaError, match=f"The column '{name}' is .* in '.*a.parquet', but the model reads it as {reads}"):
            extmem.predict(model.booster, data, tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_predictions_to_a_csv_file_are_csv_and_other_formats_are_refused(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    """p.csv was written as parquet under a .csv name; it is now CSV with the same values, and p.json is refused before any work."""
    extmem.predict(model_dir, held_out, tmp_path / "p.parquet", keep="gene_id")
    extmem.predict(model_dir, held_out, tmp_path / "p.csv", keep="gene_id")
    from_csv = pa.csv.read_csv(tmp_path / "p.csv")
    from_parquet = pq.read_table(tmp_path / "p.parquet")
    assert from_csv.column_names == from_parquet.column_names and from_csv["gene_id"].to_pylist() == from_parquet["gene_id"].to_pylist()
    np.testing.assert_allclose(from_csv["prob_donor"].to_numpy(), from_parquet["prob_donor"].to_numpy(), rtol=1e-6)
    with pytest.raises(
        extmem.OptionError, match=r"'out' file '.*p\.json' ends in '\.json'; it is written as parquet \(\.parquet, \.pq\) or CSV"
    ):
        extmem.predict(model_dir, held_out, tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()
    data = write_shard(tmp_path / "lists" / "a.parquet", {"4mer_AAAA": [1.0, 2.0], "pairs": [[1, 2], [3]]}).parent
    with pytest.raises(extmem.OptionError, match=r"column 'pairs' is list<element: int64>, which a CSV file cannot hold"):
        extmem.predict(model_dir, data, tmp_path / "lists.csv", keep="pairs")  # a traceback from the CSV writer
    assert not (tmp_path / "lists.csv").exists()


def test_an_output_ending_in_a_slash_is_a_folder_not_a_file(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    """--out preds/ (a folder the user means) was written as a file named 'preds'."""
    with pytest.raises(extmem.OptionError, match=r"The 'out' path '.*preds/' is a folder \(it ends in a slash\); give a file name"):
        extmem.predict(model_dir, held_out, f"{tmp_path}/preds/")
    assert not (tmp_path / "preds").exists()


def test_a_model_feature_no_shard_holds_is_named_not_silently_missing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Scoring (or validation) data without one of the model's columns was scored as missing without a word."""
    rows = {"x": [1.0, 2.0] * 10, "score": [0.5, 0.1] * 10, "splice_type": ["donor", "neither"] * 10}
    model = extmem.train(write_shard(tmp_path / "train" / "a.parquet", rows).parent, preset="splice-sites", rounds=2)
    data = write_shard(tmp_path / "other" / "a.parquet", {k: v for k, v in rows.items() if k != "score"}).parent
    with caplog.at_level("INFO", logger="extmem"):
        extmem.predict(model.booster, data, tmp_path / "p.parquet")
    assert "1 feature column(s) are in none of the 1 shard(s) (first: " in caplog.text and "missing in every row: score" in caplog.text
    write_shard(tmp_path / "train" / "b.parquet", {k: v for k, v in rows.items() if k != "score"})
    caplog.clear()
    with caplog.at_level("INFO", logger="extmem"):
        extmem.train(tmp_path / "train", preset="splice-sites", rounds=1)
    assert "1 feature column(s) are in only some of the 2 shards, so missing in the others' rows: score" in caplog.text


def test_predict_on_unrelated_data_is_refused(model_dir: Path, tmp_path: Path) -> None:
    write_shard(tmp_path / "other" / "a.parquet", {"height": [1.0, 2.0], "weight": [3.0, 4.0]})
    with pytest.raises(extmem.SchemaError, match="None of the model's .* feature columns"):
        extmem.predict(model_dir, tmp_path / "other", tmp_path / "preds.parquet")
    assert not (tmp_path / "preds.parquet").exists()


def test_a_read_error_midway_removes_the_partial_output(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    data = with_broken_shard(held_out, tmp_path / "data")
    with pytest.raises(extmem.ShardReadError, match="zz_broken.parquet"):
        extmem.predict(model_dir, data, tmp_path / "out" / "preds.parquet")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_models_not_trained_by_extmem_are_refused(tmp_path: Path) -> None:
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(np.eye(4), label=[0, 1, 0, 1]), 2)
    booster.save_model(tmp_path / "model.ubj")
    with pytest.raises(extmem.OptionError, match="not trained by extmem"):
        extmem.Model.load(tmp_path)
    with pytest.raises(extmem.OptionError, match="No model at"):
        extmem.Model.load(tmp_path / "missing")


def test_array_of_the_wrong_width_is_refused(model_dir: Path) -> None:
    model = extmem.Model.load(model_dir)
    with pytest.raises(extmem.SchemaError, match=rf"expects \(rows, {len(model.layout.names)}\)"):
        model.predict_proba(np.zeros((3, 5)))
