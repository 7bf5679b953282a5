from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from conftest import all_rows, with_broken_shard, write_shard

import extmem
from extmem.read._discover import discover_shards
from extmem.score._explain import RowSample, top_contributions
from extmem.score._incremental_model import FeatureParts


@pytest.fixture(scope="module")
def in_ram(model_dir: Path, held_out: Path) -> tuple[extmem.Model, np.ndarray, np.ndarray, object]:
    """The model, XGBoost's contributions and margins on the whole held-out set in one matrix, and its rows."""
    model = extmem.Model.load(model_dir)
    selection = model.select(extmem.Dataset(held_out))
    block = all_rows(selection)
    matrix = xgb.DMatrix(block.X, missing=np.nan, feature_names=list(model.layout.names))
    contributions = model.booster.predict(matrix, pred_contribs=True)
    margins = model.booster.predict(matrix, output_margin=True)
    return model, contributions, margins, block


def test_streamed_contributions_equal_xgboost_on_the_whole_matrix(model_dir: Path, held_out: Path, in_ram: tuple, tmp_path: Path) -> None:
    """Every contribution of every feature (``full``), streamed in small batches, equals TreeSHAP in RAM; they sum to the margin."""
    model, expected, margins, _ = in_ram
    names = list(model.layout.names)
    extmem.explain(model_dir, held_out, tmp_path / "x", full=names, batch_rows=256, keep="gene_id")
    table = pq.read_table(tmp_path / "x" / "contributions.parquet")
    assert table.num_rows == expected.shape[0] and table.column_names[:2] == ["gene_id", "predicted"]
    for k, output in enumerate(model.explained_outputs):
        streamed = np.column_stack(
            [table.column(f"shap_{output}_{name}").to_numpy() for name in names] + [table.column(f"bias_{output}").to_numpy()]
        )
        np.testing.assert_allclose(streamed, expected[:, k, :], atol=1e-5)
        np.testing.assert_allclose(streamed.sum(axis=1), margins[:, k], atol=1e-4)
    assert table.column("predicted").to_pylist() == np.asarray(model.classes)[margins.argmax(axis=1)].tolist()


def test_top_k_are_the_true_top_k(model_dir: Path, held_out: Path, in_ram: tuple, tmp_path: Path) -> None:
    model, expected, _, _ = in_ram
    extmem.explain(model_dir, held_out, tmp_path / "x", top=7, batch_rows=300)
    table = pq.read_table(tmp_path / "x" / "contributions.parquet")
    names = np.asarray(model.layout.names)
    for k, output in enumerate(model.explained_outputs):
        rows = table.column(f"top_{output}").to_pylist()
        for row, entries in enumerate(rows):
            phi = expected[row, k, :-1]
            order = np.argsort(-np.abs(phi), kind="stable")
            true = [i for i in order[:7] if phi[i] != 0]
            assert [entry["feature"] for entry in entries] == names[true].tolist()
            np.testing.assert_allclose([entry["contribution"] for entry in entries], phi[true], atol=1e-5)


def test_importance_tables_equal_numpy_on_the_whole_matrix(model_dir: Path, held_out: Path, in_ram: tuple, tmp_path: Path) -> None:
    """Exact aggregates over all rows, overall and per ``group_by`` value, beside XGBoost's own gain."""
    model, expected, _, _ = in_ram
    report = extmem.explain(model_dir, held_out, tmp_path / "x", group_by="gene_type", batch_rows=200)
    names = list(model.layout.names)

    def check(table: object, phi_all: np.ndarray) -> None:
        for k, output in enumerate(model.explained_outputs):
            part = table.filter(pc.equal(table.column("output"), output))
            assert part.column("rank").to_pylist() == list(range(1, len(names) + 1))
            at = [names.index(name) for name in part.column("feature").to_pylist()]
            phi = phi_all[:, k, :-1][:, at].astype(np.float64)
            np.testing.assert_allclose(part.column("mean_abs_shap").to_numpy(), np.abs(phi).mean(axis=0), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(part.column("mean_shap").to_numpy(), phi.mean(axis=0), rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(part.column("positive_share").to_numpy(), (phi > 0).mean(axis=0))
            np.testing.assert_array_equal(part.column("nonzero_rows").to_numpy(), (phi != 0).sum(axis=0))
            assert np.all(np.diff(part.column("mean_abs_shap").to_numpy()) <= 0)
            gain = model.booster.get_score(importance_type="gain")
            assert part.column("xgb_gain").to_pylist() == [gain.get(name, 0.0) for name in part.column("feature").to_pylist()]

    folder = tmp_path / "x"
    check(pq.read_table(folder / "importance.parquet"), expected)
    groups = pq.read_table(folder / "importance_groups.parquet")
    gene_types = np.asarray(
        pa.concat_tables([pq.read_table(shard, columns=["gene_type"]) for shard in discover_shards([str(held_out)])]).column(0).to_pylist()
    )
    assert set(groups.column("gene_type").to_pylist()) == set(gene_types)
    for value in set(gene_types):
        check(groups.filter(pc.equal(groups.column("gene_type"), value)), expected[gene_types == value])
    summary = json.loads((folder / "importance.json").read_text())
    assert summary["rows"] == report["rows"] == expected.shape[0]
    assert summary["groups"] == {value: int((gene_types == value).sum()) for value in set(gene_types)}
    np.testing.assert_allclose(list(summary["mean_bias"].values()), expected[:, :, -1].astype(np.float64).mean(axis=0), rtol=1e-6)


def test_interactions_of_chosen_features_equal_xgboost_in_ram(small_synth: Path, held_out: Path, tmp_path: Path) -> None:
    """A narrow model (XGBoost computes every pair, (features + 1)² values a row): the pairs asked for, exact over all rows."""
    features = "donor_score,acceptor_score,neither_score,4mer_GT*"
    extmem.train(small_synth, preset="splice-sites", out=tmp_path / "m", rounds=8, features=features, params={"max_depth": 4})
    model = extmem.Model.load(tmp_path / "m")
    names = list(model.layout.names)
    chosen = ["donor_score", "acceptor_score", "4mer_GTAA"]
    report = extmem.explain(model, held_out, tmp_path / "x", interactions=chosen, batch_rows=250)
    assert "interactions.parquet" in report["files"]
    block = all_rows(model.select(extmem.Dataset(held_out)))
    matrix = xgb.DMatrix(block.X, missing=np.nan, feature_names=names)
    every = model.booster.predict(matrix, pred_interactions=True).astype(np.float64)  # (rows, outputs, features + 1, features + 1)
    contributions = model.booster.predict(matrix, pred_contribs=True)
    np.testing.assert_allclose(every.sum(axis=3), contributions, atol=1e-4)  # each feature's interactions sum to its contribution
    at = [names.index(name) for name in chosen]
    table = pq.read_table(tmp_path / "x" / "interactions.parquet")
    for k, output in enumerate(model.explained_outputs):
        part = table.filter(pc.equal(table.column("output"), output))
        assert part.column("feature").to_pylist() == [a for a in chosen for _ in chosen]
        assert part.column("other").to_pylist() == chosen * len(chosen)
        pairs = every[:, k][:, at][:, :, at]
        np.testing.assert_allclose(part.column("mean_abs_shap").to_numpy().reshape(3, 3), np.abs(pairs).mean(axis=0), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(part.column("mean_shap").to_numpy().reshape(3, 3), pairs.mean(axis=0), rtol=1e-5, atol=1e-8)


def test_linear_contributions_sum_to_the_decision_function(small_synth: Path, held_out: Path, tmp_path: Path) -> None:
    """coefficient x (value - mean) per raw feature; naive Bayes, which has no additive margin, is refused before any reading."""
    model, _ = extmem.train_incremental(small_synth, preset="splice-sites", algorithm="sgd_logistic", epochs=2, out=tmp_path / "m")
    selection = model.select(extmem.Dataset(held_out))
    block = all_rows(selection)
    values = model.contributions(block.X)
    parts = FeatureParts.split(block.X, model.layout)
    decision = model.learner.estimators["linear"].decision_function(model.learner.standardizer.scaled(parts))
    np.testing.assert_allclose(values.sum(axis=2), decision, rtol=1e-4, atol=1e-4)
    report = extmem.explain(tmp_path / "m", held_out, tmp_path / "x", top=3)
    table = pq.read_table(tmp_path / "x" / "importance.parquet")
    assert "coefficient" in table.column_names and report["rows"] == block.X.shape[0]
    with pytest.raises(extmem.OptionError, match="tree model"):
        extmem.explain(tmp_path / "m", held_out, tmp_path / "y", interactions="donor_score")
    bayes, _ = extmem.train_incremental(small_synth, preset="splice-sites", algorithm="naive_bayes", epochs=1)
    with pytest.raises(extmem.OptionError, match="linear model"):
        extmem.explain(bayes, held_out, tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_the_planted_signal_comes_out_on_top(tmp_path: Path) -> None:
    """Synthetic splice sites: the base-model scores lead, and donors' k-mers are those of the planted MAG|GTRAGT consensus."""
    data = tmp_path / "data"
    extmem.synth(data, extmem.SynthOptions(rows=6000, shards=2, k=6, row_group_rows=1500, seed=11))
    extmem.train(data, preset="splice-sites", out=tmp_path / "m", rounds=20)
    report = extmem.explain(tmp_path / "m", data, tmp_path / "x", max_rows=3000)
    top = {output: [entry["feature"] for entry in entries] for output, entries in report["top_features"].items()}
    assert {"donor_score", "donor_peak_height"} & set(top["donor"][:2])
    assert {"acceptor_score", "acceptor_peak_height"} & set(top["acceptor"][:2])
    kmers = pq.read_table(tmp_path / "x" / "kmers.parquet").to_pylist()
    donor = [row["kmer"] for row in kmers if row["output"] == "donor"][:5]
    assert {"GTAAGT", "GTGAGT"} & set(donor), donor
    assert "GT" in [motif["motif"] for motif in report["motifs"]["donor"][:2]]
    assert {"CT", "TC", "TT", "CC"} & {motif["motif"] for motif in report["motifs"]["acceptor"][:2]}  # the polypyrimidine tract


def test_plots_and_refusals_on_the_command_line(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "why"
    command = [sys.executable, "-m", "extmem", "explain", str(model_dir), str(held_out), "--out", str(out), "--no-progress"]
    run = subprocess.run([*command, "--plot", "--keep", "gene_id", "--top", "3"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "donor: mean |SHAP|" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "contributions.parquet",
        "importance.json",
        "importance.parquet",
        "importance.png",
        "kmers.parquet",
        "summary.png",
    ]
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(command, capture_output=True, text=True, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    for flags, message in (
        (["--out", str(tmp_path / "theirs"), "--overwrite"], "notes.txt"),
        (["--full", "no_such_feature", "--out", str(tmp_path / "new")], "no_such_feature"),
        (["--keep", "predicted", "--out", str(tmp_path / "new")], "'predicted'"),
        (["--group-by", "gene_id", "--out", str(tmp_path / "new")], "gene_id"),
        (["--group-by", "no_such_column", "--out", str(tmp_path / "new")], "The --group-by column 'no_such_column' is in none"),
        (["--interactions", "nope", "--out", str(tmp_path / "new")], "'nope'"),
    ):
        run = subprocess.run([*command[:6], *flags, "--no-progress"], capture_output=True, text=True, check=False)
        errors = [line for line in run.stderr.splitlines() if "error" in line]
        assert run.returncode == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in run.stderr, run.stderr
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs", "why"]


def test_full_contributions_of_features_chosen_by_glob(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    """--full '4mer_AA*' (refused as an unknown feature) gives every matching k-mer's contributions, in the model's order."""
    layout = extmem.Model.load(model_dir).layout
    matching = [name for name in layout.names if name.startswith("4mer_AA")]
    extmem.explain(model_dir, held_out, tmp_path / "x", full=["4mer_AA*", matching[0]], max_rows=50)
    names = pq.read_schema(tmp_path / "x" / "contributions.parquet").names
    assert len(matching) > 1 and [name for name in names if name.startswith("shap_donor_")] == [f"shap_donor_{m}" for m in matching]
    with pytest.raises(extmem.OptionError, match=r"The 'full' feature '9mer_\*' matches none of the model's"):
        extmem.explain(model_dir, held_out, tmp_path / "y", full="9mer_*")


def test_top_contributions_and_the_row_sample() -> None:
    phi = np.array([[0.0, -3.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    lists = top_contributions(phi, 2, pa.array(["a", "b", "c", "d"])).to_pylist()
    assert lists == [
        [{"feature": "b", "contribution": -3.0}, {"feature": "d", "contribution": 2.0}],
        [{"feature": "d", "contribution": 0.5}],
        [],
    ]
    sample = RowSample(100, seed=1)
    for start in range(0, 10_000, 700):
        sample.add(np.arange(start, min(start + 700, 10_000), dtype=float)[:, None])
    assert sample.rows is not None and sample.rows.shape == (100, 1) and len(set(sample.rows[:, 0])) == 100
    assert 3000 < sample.rows.mean() < 7000  # uniform over the stream, not its first or last batches


def test_groups_of_a_list_column_are_refused_before_reading(model_dir: Path, tmp_path: Path) -> None:
    data = write_shard(tmp_path / "data" / "a.parquet", {"pairs": [[1, 2], [3]]}).parent
    with pytest.raises(
        extmem.ExtmemError, match=r"The 'group_by' column 'pairs' is list<element: int64>; groups must be strings or numbers"
    ):
        extmem.explain(model_dir, data, tmp_path / "out", group_by="pairs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_bad_shard_leaves_no_output_folder(model_dir: Path, held_out: Path, tmp_path: Path) -> None:
    data = with_broken_shard(held_out, tmp_path / "data")
    with pytest.raises(extmem.ShardReadError, match="zz_broken.parquet"):
        extmem.explain(model_dir, data, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_plots_of_a_narrow_model_on_data_with_missing_values(tmp_path: Path) -> None:
    """Fewer features than a plot shows, and missing values (grey in the beeswarm)."""
    random = np.random.default_rng(0)
    score = random.normal(size=400)
    write_shard(
        tmp_path / "d" / "s.parquet",
        {
            "a": [None if i % 7 == 0 else float(v) for i, v in enumerate(score)],
            "b": random.normal(size=400).tolist(),
            "y": (score > 0).astype(int).tolist(),
        },
    )
    extmem.train(tmp_path / "d", label="y", out=tmp_path / "m", rounds=3)
    report = extmem.explain(tmp_path / "m", tmp_path / "d", tmp_path / "x", plot=True)
    assert {"importance.png", "summary.png"} <= set(report["files"]) and report["outputs"] == ["1"]
    assert report["top_features"]["1"][0]["feature"] == "a"
