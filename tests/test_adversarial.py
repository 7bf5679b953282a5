"""Cases from an adversarial user's session: each one reproduced, each a clear one-line error or a correct result, nothing left."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost
from conftest import cache_dirs, write_shard

import extmem
from extmem.cli._main import main

ROWS = 20
GOOD = {
    "x": [1.0, 2.0, 3.0, 4.0] * 5,
    "n": [1, 0, 2, 0] * 5,
    "gene_type": ["a", "b", "a", "b"] * 5,
    "gene_id": [f"g{i % 7}" for i in range(ROWS)],
    "splice_type": ["donor", "neither", "acceptor", "neither"] * 5,
    "pairs": [[1, 2]] * ROWS,
}
PACKED_META = {"version": 1, "indices": "kmer_indices", "values": "kmer_values", "columns": ["6mer_AAAAAA", "6mer_AAAAAC"]}


def _packed(path: Path, index_type: pa.DataType, indices: list, metadata: object) -> None:
    table = pa.table(
        {
            "x": [1.0, 2.0],
            "splice_type": ["donor", "neither"],
            "kmer_indices": pa.array(indices, pa.list_(index_type)),
            "kmer_values": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32())),
        }
    )
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"extmem.packed": text}), path)


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("adversarial")

    def shard(folder: str, columns: dict, name: str = "a.parquet") -> Path:
        return write_shard(tmp / folder / name, columns)

    shard("ok", GOOD)
    shard("numeric", {**GOOD, "splice_type": [0, 1, 2, 0] * 5})
    shard("fractional", {**GOOD, "splice_type": [0, 1.5, 2, 0] * 5})
    shard("negative", {**GOOD, "splice_type": [0, -1, 2, 0] * 5})
    shard("beyond", {**GOOD, "splice_type": [0, 1, 7, 0] * 5})
    shard("float32_range", {**GOOD, "x": [1e39, 2.0, 3.0, 4.0] * 5})
    first = shard("symlinked", GOOD)
    os.symlink(first, tmp / "symlinked" / "b.parquet")
    first = shard("hardlinked", GOOD)
    os.link(first, tmp / "hardlinked" / "b.parquet")
    shard("tiny", {"x": [1.0, 2.0, 3.0, 4.0], "splice_type": ["donor", "neither", "acceptor", "neither"], "g": ["a"] * 4})
    shard("negative_weights", {**GOOD, "w": [1.0, -1.0, 0.5, 2.0] * 5})
    shard("zero_weights", {**GOOD, "w": [0.0] * ROWS})
    shard("huge_class_ids", {**GOOD, "y": [0, 1_000_000] * (ROWS // 2)})
    shard("signed", {**GOOD, "y": [-1, 1] * (ROWS // 2)})
    shard("one_class", {**GOOD, "splice_type": ["donor"] * ROWS})
    shard("id_as_label", {"x": [float(i) for i in range(1100)], "y": [f"id{i}" for i in range(1100)]})
    shard("nested/batch1", GOOD)
    _packed(tmp / "packed_negative" / "a.parquet", pa.int32(), [[0, -1], [1]], PACKED_META)
    _packed(tmp / "packed_columns_text" / "a.parquet", pa.uint16(), [[0, 1], [1]], {**PACKED_META, "columns": "6mer_AAAAAA"})
    _packed(tmp / "packed_version_text" / "a.parquet", pa.uint16(), [[0, 1], [1]], {**PACKED_META, "version": "x", "indices": 5})
    _packed(tmp / "packed_not_json" / "a.parquet", pa.uint16(), [[0, 1], [1]], "{not json")
    _packed(tmp / "packed_float_indices" / "a.parquet", pa.float64(), [[0, 1], [1]], PACKED_META)
    extmem.train(tmp / "ok", preset="splice-sites", out=tmp / "model", rounds=2)
    extmem.train(tmp / "numeric", label="splice_type", out=tmp / "numeric_model", rounds=2)
    return {path.name: str(path) for path in tmp.iterdir()} | {"tmp": str(tmp)}


DEEP_AND = " & ".join(["(x > 1)"] * 3000)
CASES: list[tuple[str, str]] = [
    # evaluate: labels the model cannot have (fractional, negative, beyond its classes), strings against a numeric model
    (
        "evaluate {numeric_model} {fractional}",
        r"label 1\.5 of 'splice_type' in row group 0 of '.*fractional/a\.parquet' is not one of the model's 3 classes",
    ),
    ("evaluate {numeric_model} {negative}", r"label -1 of 'splice_type' .* is not one of the model's 3 classes"),
    ("evaluate {numeric_model} {beyond}", r"label 7 of 'splice_type' .* is not one of the model's 3 classes"),
    ("evaluate {numeric_model} {ok}", r"model was trained on numeric labels .* 'splice_type' holds strings .* give a --label-map"),
    # weights XGBoost and scikit-learn refuse with their own words: negative, or 0 in every row
    (
        "train {negative_weights} --out {out} --weight w",
        r"weight column 'w' has 5 negative value\(s\) \(first: -1\) in row group 0 of '.*negative_weights/a\.parquet'",
    ),
    ("train {zero_weights} --out {out} --weight w", r"weight column 'w' is 0 in every row of .*zero_weights; there is nothing to train on"),
    ("train {zero_weights} --out {out} --weight w --algorithm sgd_logistic", r"weight column 'w' is 0 in every row of .*zero_weights"),
    ("evaluate {model} {zero_weights} --weight w", r"weight column 'w' is 0 in every row of .*zero_weights; there is nothing to evaluate"),
    # numeric labels too large to be class ids, for a trainer that only classifies
    (
        "train {huge_class_ids} --out {out} --label y --algorithm sgd_logistic",
        r"Incremental models are classifiers: the label of .*huge_class_ids \(column 'y'\) reaches 1,000,000, beyond the class ids 0\.\.999",
    ),
    # a folder of folders that are not key=value partitions holds no shards of its own
    (
        "train {nested} --out {out}",
        r"folder '.*nested' holds no \.parquet files, but its subfolders do \(such as '.*batch1/a\.parquet'\): give a glob such as '.*nested/\*\*/\*\.parquet'",
    ),
    # XGBoost parameters at odds with the labels, or with the quantized matrices
    (
        "train {ok} --out {out} --param num_class=5",
        r"num_class \(--param\) is 5, but the label map makes 3 classes \(neither, donor, acceptor\)",
    ),
    (
        "train {ok} --out {out} --param objective=binary:logistic",
        r"The objective 'binary:logistic' \(--param\) takes two classes; the labels make 3",
    ),
    ("train {ok} --out {out} --param booster=gblinear", r"The booster 'gblinear' \(--param\) cannot train on XGBoost's quantized"),
    ("train {ok} --out {out} --param eval_metric=foo", r"XGBoost has no eval_metric 'foo' \(--param\): Unknown metric function foo"),
    # labels the objective does not take: refused by their range before the build, with the way to map them
    (
        "train {signed} --out {out} --label y --param objective=binary:logistic",
        r"'binary:logistic' \(--param\) takes labels from 0 to 1; the labels of 'y' are whole numbers from -1 to 1\. Map them .* --label-map",
    ),
    (
        "train {signed} --out {out} --label y --param objective=multi:softmax",
        r"'multi:softmax' \(--param\) takes labels that are class ids 0\.\.K-1",
    ),
    ("train {signed} --out {out} --label y --param objective=count:poisson", r"'count:poisson' \(--param\) takes labels of 0 or more"),
    (
        "train {signed} --out {out} --label y --param objective=survival:aft",
        r"'survival:aft' \(--param\) needs a lower and an upper bound per row",
    ),
    (
        "train {signed} --out {out} --label y --param objective=reg:quantileerror",
        r"'reg:quantileerror' \(--param\) needs the quantile\(s\) to fit",
    ),
    (
        "train {signed} --out {out} --label y --algorithm sgd_logistic",
        r"Incremental models are classifiers: .* found -1\. Map the labels to class ids 0\.\.K-1 with a --label-map",
    ),
    # string labels of one class were trained as regression (rmse 0)
    (
        "train {one_class} --out {out} --preset none --label splice_type",
        r"The labels of 'splice_type' make one class \('donor'\); a classifier needs two",
    ),
    (
        "train {one_class} --out {out} --preset none --label splice_type --algorithm sgd_logistic",
        r"The labels of 'splice_type' make one class \('donor'\)",
    ),
    # a label map of names for numeric labels, or of numbers that miss one
    ("train {signed} --out {out} --label y --label-map a=0,b=1", r"label column 'y' holds numbers .* but the label map names \['a', 'b'\]"),
    (
        "train {signed} --out {out} --label y --label-map 1=1,-2=0",
        r"label column 'y' has value\(s\) \[-1\.0\] .* the label map .* does not cover",
    ),
    # a name thousands of characters long is shown by its two ends
    (
        f"train {{ok}} --out {{out}} --features '{'y' * 5000}'",
        r"^extmem: error: The --features entry 'y{199}\.\.\.y{79}' matches no column",
    ),
    # one file reached twice
    ("train {symlinked} --out {out}", r"shard '.*symlinked/b\.parquet' is the same file as '.*symlinked/a\.parquet'"),
    ("train {hardlinked} --out {out}", r"shard '.*hardlinked/b\.parquet' is the same file as '.*hardlinked/a\.parquet'"),
    # values float32 cannot hold are not "infinite"
    ("train {float32_range} --out {out}", r"'x' holds 1e\+39 in row group 0 of '.*float32_range/a\.parquet', beyond float32's range"),
    # packed shards: a negative index, metadata of the wrong types, indices that are not integers
    (
        "train {packed_negative} --out {out}",
        r"packed index in row group 0 of '.*packed_negative/a\.parquet' is -1, outside the block's 2 columns",
    ),
    (
        "train {packed_columns_text} --out {out}",
        r"packed-layout metadata of '.*packed_columns_text/a\.parquet' is invalid: .*'columns' a list",
    ),
    ("train {packed_version_text} --out {out}", r"packed-layout metadata of '.*packed_version_text/a\.parquet' is invalid: version 'x'"),
    ("train {packed_not_json} --out {out}", r"packed-layout metadata of '.*packed_not_json/a\.parquet' is invalid"),
    ("train {packed_float_indices} --out {out}", r"lacks its numeric list column 'kmer_indices' \(found list<element: double>\)"),
    # filters: integers beyond 64 bits, mixed lists, deep nesting, types that do not match the column
    ("train {ok} --out {out} --filter 'x > 99999999999999999999999999'", r"Invalid --filter .*an integer beyond the 64-bit range"),
    ("train {ok} --out {out} --filter \"x in [1, 'a']\"", r"Invalid --filter .*a list mixing numbers, strings and booleans"),
    (f"train {{ok}} --out {{out}} --filter '{DEEP_AND}'", r"Invalid --filter '\(x > 1\) & .{40,80}\.\.\.': nested too deeply"),
    ("train {ok} --out {out} --filter 'gene_type > 3'", r"--filter 'gene_type > 3' cannot be applied to the columns it names"),
    (
        "train {id_as_label} --out {out} --label y",
        r"--label column 'y' has more than 1,024 distinct values .*; is it the right label column\?$",
    ),
    # parameters and split options
    (
        "train {ok} --out {out} --sketch-rows 100",
        r"--sketch-rows option must be at least the 256 bins per feature \(XGBoost's max_bin\)\. Got 100",
    ),
    ("train {ok} --out {out} --sketch-rows 100 --param max_bin=101", r"at least the 101 bins per feature"),
    ("train {ok} --out {out} --param seed=abc", r"XGBoost parameter 'seed' \(--param\) must be an integer\. Got 'abc'"),
    (
        "train {ok} --out {out} --valid-fraction 0.3 --group-by pairs",
        r"--group-by column 'pairs' is list<element: int64>; groups must be strings or numbers",
    ),
    (
        "train {tiny} --out {out} --valid-fraction 0.01",
        r"validation split of .*tiny is empty: the --valid-fraction 0\.01 of the rows selected no row",
    ),
    (
        "train {tiny} --out {out} --valid-fraction 0.5 --group-by g",
        r"training split of .*tiny is empty: .*--group-by groups \('g'\) took every row",
    ),
    ("train {tiny} --out {out} --algorithm sgd_logistic --valid-fraction 0.01", r"validation split of .*tiny is empty"),
    # places that access() calls writable (for root) but take no new files: refused before any work, naming the flag
    ("train {ok} --out /proc/extmem-model", r"Cannot write the --out .*'/proc/extmem-model'"),
    ("predict {model} {ok} --out /proc/extmem-predictions.parquet", r"Cannot write the --out .*'/proc/extmem-predictions\.parquet'"),
    ("pack {ok} /sys/extmem-packed", r"Cannot write the DST .*'/sys/extmem-packed'"),
    ("train {ok} --out {out} --cache-dir /proc", r"The --cache-dir folder '/proc' is unusable: no folder can be created in '/proc'"),
    ("train {ok} --out {out} --cache-dir s3://bkt/cache", r"The --cache-dir folder 's3://bkt/cache' must be a local folder"),
    ("train /dev/null --out {out}", r"The dataset path '/dev/null' is not a file or a folder \(a pipe or a device"),
]


@pytest.mark.parametrize(("command", "pattern"), CASES, ids=[command[:60] for command, _ in CASES])
def test_adversarial_input_is_one_clear_line_and_leaves_nothing(
    places: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_signals: None, command: str, pattern: str
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    argv = [part.format(**places, out=str(tmp_path / "out")) for part in shlex.split(command)]
    status = main([*argv, "--no-progress"] + (["--cache-dir", str(cache)] if argv[0] == "train" and "--cache-dir" not in argv else []))
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("extmem: error:")]
    assert status == 2, captured.err
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert re.search(pattern, errors[0]), errors[0]
    assert len(errors[0]) < 600 and not re.search(r"[.?!:;,]\.$", errors[0]), errors[0]  # one sentence, ended once
    assert not (tmp_path / "out").exists() and cache_dirs(cache) == []


def test_another_string_label_gets_its_own_classes_not_the_presets(places: dict[str, str], tmp_path: Path) -> None:
    status = main(["train", places["ok"], "--label", "gene_type", "--out", str(tmp_path / "m"), "--rounds", "2", "--no-progress"])
    assert status == 0
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["classes"] == ["a", "b"] and report["params"]["objective"] == "binary:logistic"


def test_a_page_of_zero_weights_among_others_trains_incrementally(tmp_path: Path) -> None:
    weights = [0.0] * 8 + [1.0] * 12  # the first page (8 rows) teaches nothing; scikit-learn refuses such a batch on its own
    data = write_shard(tmp_path / "data" / "a.parquet", {**GOOD, "w": weights}).parent
    model, report = extmem.train_incremental(data, label="splice_type", weight="w", page_rows=8, epochs=2, cache_dir=tmp_path)
    assert report["rows"] == ROWS and report["evaluation"]["train"]["rows"] == ROWS
    assert model.predict_proba(np.zeros((1, len(model.layout.names)))).shape == (1, 3)


def test_string_labels_score_against_a_numeric_model_with_a_label_map(places: dict[str, str]) -> None:
    metrics = extmem.evaluate(places["numeric_model"], places["ok"], label_map={"neither": 0, "donor": 1, "acceptor": 2})
    assert metrics["rows"] == ROWS


def test_string_view_labels_train_like_strings(tmp_path: Path) -> None:
    write_shard(tmp_path / "plain" / "a.parquet", GOOD)
    write_shard(tmp_path / "view" / "a.parquet", {**GOOD, "splice_type": pa.array(GOOD["splice_type"], pa.string_view())})
    plain = extmem.Model.from_booster(extmem.train(tmp_path / "plain", preset="splice-sites", rounds=2).booster)
    view = extmem.Model.from_booster(extmem.train(tmp_path / "view", preset="splice-sites", rounds=2).booster)
    assert (plain.predict_proba(tmp_path / "plain") == view.predict_proba(tmp_path / "view")).all()


@pytest.mark.parametrize("manifest", ["manifest.json", "_manifest.json"])
def test_overwrite_never_replaces_a_folder_extmem_did_not_write(places: dict[str, str], tmp_path: Path, manifest: str) -> None:
    """prune --overwrite into a folder holding someone's files: refused, every file kept (a foreign manifest is no proof)."""
    destination = tmp_path / "theirs"
    destination.mkdir()
    (destination / manifest).write_text(json.dumps({"files": ["notes.txt"]}))
    (destination / "notes.txt").write_text("keep me")
    with pytest.raises(extmem.OptionError, match=rf"holds '{re.escape(manifest)}', which extmem did not write there"):
        extmem.prune(places["ok"], destination, label="splice_type", overwrite=True)
    assert sorted(path.name for path in destination.iterdir()) == sorted([manifest, "notes.txt"])
    assert (destination / "notes.txt").read_text() == "keep me"


def test_partial_and_hidden_files_are_never_taken_for_shards(tmp_path: Path) -> None:
    """A killed run's partial file (even one ending in .parquet) and hidden files in a data folder are not shards."""
    write_shard(tmp_path / "data" / "a.parquet", GOOD)
    (tmp_path / "data" / ".a.parquet.x1y2.extmem-partial").write_bytes(b"torn")
    (tmp_path / "data" / ".hidden.parquet").write_bytes(b"torn")
    (tmp_path / "data" / "_manifest.json").write_text("{}")
    result = extmem.train(tmp_path / "data", preset="splice-sites", rounds=1)
    assert result.report["rows"] == ROWS


def test_byte_flipped_models_are_one_clear_line_never_a_crash(places: dict[str, str], tmp_path: Path) -> None:
    """30 random single-byte flips of model.ubj: each predict exits 2 naming the corruption (XGBoost never parses it), no output."""
    rng = random.Random(0)
    flips = []
    for case in range(30):
        folder = tmp_path / f"model{case}"
        shutil.copytree(places["model"], folder)
        data = bytearray((folder / "model.ubj").read_bytes())
        position = rng.randrange(len(data))
        data[position] ^= 1 << rng.randrange(8)
        (folder / "model.ubj").write_bytes(bytes(data))
        flips.append(folder)
    script = (
        "import sys\nfrom extmem.cli import main\n"
        "sys.exit(max(main(['predict', f, sys.argv[1], '--out', f + '/p.parquet', '--no-progress']) for f in sys.argv[2:]))"
    )
    done = subprocess.run([sys.executable, "-c", script, places["ok"], *map(str, flips)], capture_output=True, text=True, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("extmem: error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 30 and all("is corrupt: its checksum does not match" in line for line in errors), done.stderr[-2000:]
    assert not any((folder / "p.parquet").exists() for folder in flips)


def test_numeric_labels_map_to_classes_and_predictions_are_the_labels(places: dict[str, str], tmp_path: Path) -> None:
    """Labels -1/1 with the label map 1=1,-1=0: a binary classifier whose predictions are -1 and 1 again (they trained as regression)."""
    out = tmp_path / "m"
    assert (
        main(["train", places["signed"], "--label", "y", "--label-map", "1=1,-1=0", "--out", str(out), "--rounds", "2", "--no-progress"])
        == 0
    )
    assert json.loads((out / "report.json").read_text())["params"]["objective"] == "binary:logistic"
    extmem.predict(out, places["signed"], out=tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("predicted").type == pa.int64() and set(table["predicted"].to_pylist()) <= {-1, 1}
    assert table.column_names[:2] == ["prob_-1", "prob_1"]
    assert extmem.evaluate(out, places["signed"], label="y")["confusion_matrix"]["classes"] == ["-1", "1"]
    incremental, _ = extmem.train_incremental(places["signed"], label="y", label_map={-1: 0, 1: 1}, epochs=1, cache_dir=tmp_path)
    assert incremental.layout.class_values.tolist() == [-1, 1]


def test_labels_sharing_a_class_id_make_one_class(places: dict[str, str], tmp_path: Path) -> None:
    """A label map sending two labels to one id (acceptor and donor as 'site') has two classes everywhere, named by each id's first label."""
    label_map = {"neither": 0, "donor": 1, "acceptor": 1}
    model = extmem.train(places["ok"], label="splice_type", label_map=label_map, out=tmp_path / "m", rounds=2)
    assert model.report["classes"] == ["neither", "donor"]
    extmem.predict(tmp_path / "m", places["ok"], out=tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.column_names == ["prob_neither", "prob_donor", "predicted"]
    confusion = extmem.evaluate(tmp_path / "m", places["ok"])["confusion_matrix"]
    assert confusion["classes"] == ["neither", "donor"] and np.sum(confusion["counts"]) == ROWS


@pytest.mark.parametrize(
    ("objective", "metric"), [("count:poisson", "poisson-nloglik"), ("binary:hinge", "error"), ("reg:absoluteerror", "mae")]
)
def test_other_objectives_are_watched_by_their_own_metric(places: dict[str, str], objective: str, metric: str) -> None:
    """XGBoost's default metric for an objective extmem has no metrics of its own (a hinge loss has no log loss)."""
    result = extmem.train(places["signed"], label="y", label_map={-1: 0, 1: 1}, params={"objective": objective}, rounds=2)
    assert result.report["params"]["eval_metric"] == [metric] and list(result.report["metrics"]["train"]) == [metric]


def test_feature_constraints_are_checked_against_the_real_features(places: dict[str, str]) -> None:
    """Constraints for two features pass (XGBoost's check on a one-feature probe refused them); too many are XGBoost's clear words."""
    result = extmem.train(places["numeric"], label="splice_type", features=["x", "n"], params={"monotone_constraints": "(1,0)"}, rounds=2)
    assert result.report["features"] == 2
    with pytest.raises(xgboost.core.XGBoostError, match="monotone constraint should be less or equal to the number of features"):
        extmem.train(places["numeric"], label="splice_type", features=["x", "n"], params={"monotone_constraints": "(1,0,1)"}, rounds=2)


def test_constraints_name_features_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--param monotone_constraints='{"x": -1}' constrains the column by name (a JSON value); a name that is no feature is one line."""
    rng = np.random.default_rng(0)
    x, z = rng.normal(size=2000), rng.normal(size=2000)
    write_shard(tmp_path / "data" / "a.parquet", {"x": x, "z": z, "y": (np.sin(3 * x) + 0.3 * z > 0).astype(int)})
    argv = ["train", str(tmp_path / "data"), "--label", "y", "--rounds", "20", "--no-progress", "--param", "max_depth=3"]
    grid = np.zeros((50, 2))
    grid[:, 0] = np.linspace(-2, 2, 50)
    for direction in (1, -1):
        assert main([*argv, "--out", str(tmp_path / "m"), "--overwrite", "--param", f'monotone_constraints={{"x": {direction}}}']) == 0
        steps = np.diff(extmem.Model.load(tmp_path / "m").predict_proba(grid)[:, 1])
        assert (direction * steps >= -1e-6).all() and (direction * steps > 1e-6).any()
    assert main([*argv, "--out", str(tmp_path / "m2"), "--param", 'interaction_constraints=[["x", "q"]]']) == 2
    assert "The interaction_constraints (--param) name ['q'], which are not features of this run" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists()


def test_a_column_null_in_every_row_of_one_shard_is_absent_there(tmp_path: Path) -> None:
    """pandas writes an all-None column with arrow's null type: that shard lacks its values, it does not conflict with the others."""
    write_shard(tmp_path / "data" / "a.parquet", {"x": [1.0, 2.0, 3.0, 4.0] * 5, "c": ["a", "b"] * 10, "y": [0, 1] * 10})
    write_shard(tmp_path / "data" / "b.parquet", {"x": pa.nulls(ROWS), "c": pa.nulls(ROWS), "y": [1, 0] * 10})
    result = extmem.train(tmp_path / "data", label="y", categorical=["c"], filter="c != 'b' or c is None", out=tmp_path / "m", rounds=2)
    assert result.report["rows"] == 30 and result.report["features"] == 2
    extmem.predict(tmp_path / "m", tmp_path / "data", out=tmp_path / "p.parquet", keep=["x", "c"])
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("x").type == pa.float64() and table["x"].null_count == ROWS and table["c"].null_count == ROWS
    with pytest.raises(extmem.LabelError, match=r"'label' column 'x' is missing \(or null in every row\) from the shard '.*b\.parquet'"):
        extmem.train(tmp_path / "data", label="x", rounds=1)


def test_column_names_xgboost_refuses_train_and_explain_under_their_own_names(tmp_path: Path) -> None:
    """'score[0]' and 'len<5' (XGBoost refuses [, ] and < in feature names: a traceback) train, score and explain by their names;
    a name holding a comma is selected in double quotes, a name with glob characters by itself; a pandas index is no feature."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    columns = {"score[0]": x, "score(0)": -x, "len<5": rng.normal(size=400), "a,b": x * 2, "__index_level_0__": np.arange(400)}
    write_shard(tmp_path / "data" / "a.parquet", {**columns, "y": (x > 0).astype(int)})
    features = 'score[0],score(0),len<5,"a,b"'
    argv = ["train", str(tmp_path / "data"), "--label", "y", "--rounds", "3", "--no-progress", "--out", str(tmp_path / "m")]
    assert main([*argv, "--features", features, "--param", 'monotone_constraints={"score[0]": 1}']) == 0
    assert extmem.Model.load(tmp_path / "m").layout.names == ("score[0]", "score(0)", "len<5", "a,b")
    extmem.explain(tmp_path / "m", tmp_path / "data", out=tmp_path / "e")
    importance = pq.read_table(tmp_path / "e" / "importance.parquet")
    assert set(importance["feature"].to_pylist()) == {"score[0]", "score(0)", "len<5", "a,b"}
    assert main([*argv, "--overwrite"]) == 0
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["features"] == 4 and "__index_level_0__" in report["dropped_columns"]


def test_a_broken_symbolic_link_as_output_is_refused_before_any_work(places: dict[str, str], tmp_path: Path) -> None:
    """A dangling link at --out: predict ran to the end and then blamed 'another run'; a model folder failed to publish. Both now
    refuse up front, the link untouched."""
    for name in ("p.parquet", "m"):
        (tmp_path / name).symlink_to(tmp_path / "gone" / name)
    with pytest.raises(extmem.OptionError, match=r"'out' path '.*p\.parquet' is a broken symbolic link \(to '.*gone/p\.parquet'\)"):
        extmem.predict(places["model"], places["ok"], tmp_path / "p.parquet")
    with pytest.raises(extmem.OptionError, match=r"'out' path '.*m' is a broken symbolic link"):
        extmem.train(places["ok"], preset="splice-sites", out=tmp_path / "m", overwrite=True, rounds=1)
    assert all((tmp_path / name).is_symlink() and not (tmp_path / name).exists() for name in ("p.parquet", "m"))


def test_numpy_integers_are_integers_for_every_option(places: dict[str, str], tmp_path: Path) -> None:
    """Options from a numpy grid (np.int64) were refused ('must be a positive integer. Got np.int64(3)'), and where they slipped
    through, a holdout seed crashed its hash; now they are taken as integers and stored as such."""
    result = extmem.train(
        places["ok"],
        preset="splice-sites",
        out=tmp_path / "m",
        rounds=np.int64(2),
        checkpoint_every=np.int64(1),
        page_rows=np.int64(8),
        batch_rows=np.int64(8),
        max_rows=np.int64(16),
        valid_fraction=0.3,
        group_by="gene_id",
        params={"max_depth": np.int64(2), "seed": np.int64(4)},
        kmers=None,
    )
    assert result.report["rounds"] == 2 and json.loads((tmp_path / "m" / "report.json").read_text())["config"]["data"]["max_rows"] == 16
    assert extmem.cross_validate(places["ok"], preset="splice-sites", folds=np.int64(2), rounds=np.int64(1), seed=np.int64(1))["folds"] == 2
    assert extmem.explain(tmp_path / "m", places["ok"], tmp_path / "e", top=np.int64(2))["rows"] == ROWS
    assert extmem.KmerEncoding(width=np.int64(8)).to_dict()["width"] == 8
