"""Bad input for every command, and injected faults: a clear one-line error, or a correct result, and nothing left behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cache_dirs, write_shard

import extmem
from extmem.cli._main import main

GOOD = {
    "x": [1.0, 2.0, 3.0, 4.0],
    "n": [1, 0, 2, 0],
    "gene_type": ["a", "b", "a", "b"],
    "splice_type": ["donor", "neither", "acceptor", "neither"],
}


@pytest.fixture
def restore_signals() -> Iterator[None]:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _datasets(tmp: Path) -> dict[str, Path]:
    """Small datasets, good and broken, each a folder."""

    def shard(folder: str, name: str, columns: dict) -> None:
        write_shard(tmp / folder / name, columns)

    shard("ok", "a.parquet", GOOD)
    shard("ok", "b.parquet", GOOD)
    (tmp / "empty").mkdir()
    shard("zero_rows", "a.parquet", {k: pa.array([], pa.table({k: v}).schema.field(k).type) for k, v in GOOD.items()})
    shard("no_features", "a.parquet", {"gene_id": ["g1", "g2"], "splice_type": ["donor", "neither"]})
    shard("truncated", "a.parquet", GOOD)
    data = (tmp / "truncated" / "a.parquet").read_bytes()
    (tmp / "truncated" / "b.parquet").write_bytes(data[: len(data) // 2])
    shard("not_parquet", "a.parquet", GOOD)
    (tmp / "not_parquet" / "b.parquet").write_text("gene_id,x\ng1,1\n")
    shard("type_conflict", "a.parquet", GOOD)
    shard("type_conflict", "b.parquet", {**GOOD, "x": ["1", "2", "3", "4"]})
    pq.write_table(
        pa.Table.from_arrays([pa.array([1.0, 2.0]), pa.array([3.0, 4.0]), pa.array(["donor", "neither"])], names=["x", "x", "splice_type"]),
        tmp / "dup.parquet",
    )
    (tmp / "duplicate").mkdir()
    (tmp / "dup.parquet").rename(tmp / "duplicate" / "a.parquet")
    shard("infinite", "a.parquet", {**GOOD, "x": [1.0, np.inf, 2.0, 3.0]})
    shard("unknown_label", "a.parquet", {**GOOD, "splice_type": ["donor", "exon", "neither", "neither"]})
    shard("null_label", "a.parquet", {**GOOD, "splice_type": ["donor", None, "neither", "neither"]})
    shard("label_missing_once", "a.parquet", GOOD)
    shard("label_missing_once", "b.parquet", {k: v for k, v in GOOD.items() if k != "splice_type"})
    shard("no_label", "a.parquet", {k: v for k, v in GOOD.items() if k != "splice_type"})
    return {path.name: path for path in tmp.iterdir() if path.is_dir()}


BAD_INPUTS: list[tuple[str, str, str]] = [
    # (command line with {placeholders}, pattern of the one error line, what is checked to be absent afterwards)
    ("train {tmp}/absent --out {out}", r"dataset path '.*absent' does not exist", "out"),
    ("train {empty} --out {out}", r"folder '.*empty' holds no \.parquet files", "out"),
    ("train {zero_rows} --out {out}", r"No rows of .*zero_rows.*nothing to train on", "out"),
    ("train {no_features} --out {out}", r"No feature columns are left in '.*no_features/a\.parquet'", "out"),
    ("train {truncated} --out {out}", r"Cannot read the parquet shard '.*truncated/b\.parquet'", "out"),
    ("train {not_parquet} --out {out}", r"Cannot read the parquet shard '.*not_parquet/b\.parquet'", "out"),
    ("train {type_conflict} --out {out}", r"Column 'x' is double in '.*a\.parquet' but string in '.*b\.parquet'", "out"),
    ("train {duplicate} --out {out}", r"has the column 'x' more than once", "out"),
    ("train {infinite} --out {out}", r"feature column 'x' holds an infinite value in row group 0 of '.*infinite/a\.parquet'", "out"),
    ("train {unknown_label} --out {out}", r"label column 'splice_type' has value\(s\) \['exon'\]", "out"),
    ("train {null_label} --out {out}", r"1 null value\(s\) in row group 0 of '.*null_label/a\.parquet'", "out"),
    (
        "train {label_missing_once} --out {out}",
        r"label column 'splice_type' is missing \(or null in every row\) from the shard '.*b\.parquet'",
        "out",
    ),
    ("train {ok} --out {out} --filter 'x >'", r"Invalid --filter 'x >'", "out"),
    ("train {ok} --out {out} --filter nope==1", r"--filter 'nope==1' names the column 'nope'", "out"),
    ("train {ok} --out {out} --filter x>100", r"No rows of .* matching the --filter 'x>100'; there is nothing to train on", "out"),
    ("train {ok} --out {out} --param max_dept=3", r"XGBoost parameter 'max_dept' \(--param\) is unknown", "out"),
    ("train {ok} --out {out} --param tree_method=exact", r"tree_method 'exact' cannot train from external memory", "out"),
    (
        "train {ok} --out {out} --features x,gene_type",
        r"'gene_type' is .*string.* cannot be a numeric feature; leave it out of the --features, or make it a --categorical feature",
        "out",
    ),
    ("train {ok} --out {out} --features zzz*", r"--features entry 'zzz\*' matches no column", "out"),
    ("train {ok} --out {out} --label-map donor=0", r"label map .* does not cover", "out"),
    ("train {ok} --out {out} --cache-dir {tmp}/nowhere", r"--cache-dir folder '.*nowhere' is not an existing folder", "out"),
    ("train {ok} --out {out} --valid {tmp}/absent", r"dataset path '.*absent' does not exist", "out"),
    ("train {ok} --out {out} --hash-kmers 8", r"hashed features \(--hash-kmers\) found no k-mer count columns", "out"),
    ("train {ok} --out {out} --k 3", r"--k and --signed-hash need --kmers-from", "out"),
    ("resume {ok}", r"No checkpoint to resume in '.*ok'", ""),
    ("predict {tmp}/nomodel {ok} --out {out}/p.parquet", r"No model at '.*nomodel'", "out"),
    ("predict {model} {ok} --out {out}/p.parquet --keep nope", r"--keep column 'nope' is in none of the 2 shards", "out"),
    ("predict {model} {no_features} --out {out}/p.parquet", r"None of the model's 2 feature columns", "out"),
    ("predict {model} {truncated} --out {out}/p.parquet", r"Cannot read .*truncated/b\.parquet", "out"),
    ("evaluate {model} {no_label}", r"label column 'splice_type' is in none of the 1 shards", ""),
    ("evaluate {model} {ok} --filter x>100", r"No rows of .* matching the --filter 'x>100'; there is nothing to evaluate", ""),
    ("pack {tmp}/absent {out}", r"dataset path '.*absent' does not exist", "out"),
    ("pack {ok} {ok}", r"The DST folder '.*ok' exists and is not empty; pass --overwrite to replace it", ""),
    ("pack {truncated} {out}", r"Cannot read the parquet shard '.*truncated/b\.parquet'", "out"),
    ("pack {ok} {out} --block (", r"The --block '\(' is not a regular expression", "out"),
    ("prune {ok} {ok}", r"The DST folder '.*ok' exists and is not empty; pass --overwrite to replace it", ""),
    ("prune {no_label} {out}", r"label column 'splice_type' is in none", "out"),
    ("prune {not_parquet} {out}", r"Cannot read the parquet shard '.*not_parquet/b\.parquet'", "out"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("inputs")
    folders = _datasets(tmp)
    extmem.train(folders["ok"], preset="splice-sites", out=tmp / "model", rounds=2)
    return {**folders, "model": tmp / "model", "tmp": tmp}


@pytest.mark.parametrize(("command", "pattern", "absent"), BAD_INPUTS, ids=[c for c, _, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line_and_leaves_nothing(
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_signals: None,
    command: str,
    pattern: str,
    absent: str,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    places = {name: str(path) for name, path in inputs.items()} | {"out": str(tmp_path / "out")}
    argv = [part.format(**places) for part in shlex.split(command)]
    if argv[0] == "train" and "--cache-dir" not in argv:
        argv += ["--cache-dir", str(cache)]
    status = main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("extmem: error:")]
    assert status == 2, captured.err
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    assert re.search(pattern, errors[0]), errors[0]
    if absent:
        assert not (tmp_path / absent).exists()
    assert cache_dirs(cache) == [] and not list(inputs["tmp"].glob(".*partial*"))


USAGE_ERRORS = [
    ("train {ok} --out {out} --batch-rows 0", "--batch-rows: expected a positive integer, got '0'"),
    ("train {ok} --out {out} --batch-rows -5", "--batch-rows: expected a positive integer, got '-5'"),
    ("train {ok} --out {out} --page-rows x", "--page-rows: expected a positive integer, got 'x'"),
    ("train {ok} --out {out} --sketch-rows 0", "--sketch-rows: expected a positive integer, got '0'"),
    ("train {ok} --out {out} --rounds 0", "--rounds: expected a positive integer, got '0'"),
    ("train {ok} --out {out} --valid-fraction 1", "--valid-fraction: expected a fraction between 0 and 1, got '1'"),
    ("predict {model} {ok} --out {out}/p.parquet --batch-rows 0", "--batch-rows: expected a positive integer"),
    ("prune {ok} {out} --max-sample-rows 0", "--max-sample-rows: expected a positive integer"),
    ("synth {out} --rows 0", "--rows: expected a positive integer"),
    ("train {ok} --out {out} --kmers-from gene_type --k 0", "--k: expected an integer from 1 to 12, got '0'"),
    ("prune {ok} {out} --corr-threshold 2", "--corr-threshold: expected a number in (0, 1], got '2'"),
]


@pytest.mark.parametrize(("command", "message"), USAGE_ERRORS, ids=[c for c, _ in USAGE_ERRORS])
def test_out_of_range_sizes_are_usage_errors(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_signals: None, command: str, message: str
) -> None:
    places = {name: str(path) for name, path in inputs.items()} | {"out": str(tmp_path / "out")}
    with pytest.raises(SystemExit) as exit_info:
        main([part.format(**places) for part in shlex.split(command)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_huge_batches_are_refused(
    inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_signals: None
) -> None:
    assert main(["train", str(inputs["ok"]), "--out", str(tmp_path / "out"), "--batch-rows", str(2**21), "--no-progress"]) == 2
    assert "The --batch-rows option must be at most 1,048,576" in capsys.readouterr().err


def test_dirty_but_valid_input_trains(tmp_path: Path) -> None:
    """Zero-row shards, int vs float, NaN features and shards missing columns give a correct result."""
    write_shard(tmp_path / "d" / "a.parquet", GOOD)
    write_shard(tmp_path / "d" / "b.parquet", {**GOOD, "x": [1, 2, 3, 4]})  # int where a.parquet has float: promoted
    write_shard(tmp_path / "d" / "c.parquet", {k: pa.array([], pa.table({k: v}).schema.field(k).type) for k, v in GOOD.items()})
    write_shard(tmp_path / "d" / "d.parquet", {**GOOD, "x": [np.nan, 1.0, None, 2.0], "extra": [1.0, 2.0, 3.0, 4.0]})
    result = extmem.train(tmp_path / "d", preset="splice-sites", rounds=2)
    assert result.report["rows"] == 12 and result.report["features"] == 3


def test_unknown_param_keys_are_refused_by_the_api(tmp_path: Path) -> None:
    write_shard(tmp_path / "d" / "a.parquet", GOOD)
    with pytest.raises(
        extmem.OptionError, match="XGBoost parameter 'colsample_by_tree' \\('params'\\) is unknown \\(did you mean 'colsample_bytree'\\?\\)"
    ):
        extmem.train(tmp_path / "d", preset="splice-sites", rounds=2, params={"colsample_by_tree": 0.5})
    with pytest.raises(
        extmem.OptionError, match="XGBoost parameter 'eval_metrik' \\('params'\\) is unknown \\(did you mean 'eval_metric'\\?\\)"
    ):
        extmem.train(tmp_path / "d", preset="splice-sites", rounds=2, params={"eval_metrik": "auc"})
    assert extmem.train(
        tmp_path / "d", preset="splice-sites", rounds=2, params={"learning_rate": 0.3, "reg_lambda": 2, "nthread": 1}
    ).booster


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extmem", *args], capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@pytest.mark.slow
def test_a_full_disk_while_caching_is_a_clear_error_and_leaves_nothing(wide_synth: Path, tmp_path: Path) -> None:
    """RLIMIT_FSIZE stands in for a full disk: the first cache page that outgrows it fails to write."""
    cache = tmp_path / "cache"
    cache.mkdir()
    command = ["prlimit", f"--fsize={2 * 2**20}", sys.executable, "-m", "extmem", "train", str(wide_synth), "--out", str(tmp_path / "m")]
    run = subprocess.run(
        [*command, "--rounds", "2", "--cache", "disk", "--cache-dir", str(cache), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert re.search(r"extmem: error: Cannot write the external-memory cache in '.*cache'", run.stderr), run.stderr
    assert cache_dirs(cache) == [] and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("command", "written"),
    [
        (["synth", "{out}", "--rows", "3000", "--k", "4"], "{out}/batch_00001.parquet"),
        (["pack", "{data}", "{out}"], "{out}/batch_00001.parquet"),
        (["prune", "{data}", "{out}"], "{out}/batch_00001.parquet"),
        (["predict", "{model}", "{data}", "--out", "{out}"], "{out}"),
        (["explain", "{model}", "{data}", "--out", "{out}"], "{out}/contributions.parquet"),
    ],
    ids=["synth", "pack", "prune", "predict", "explain"],
)
def test_a_full_disk_while_writing_names_the_output_file_and_leaves_nothing(
    small_synth: Path, model_dir: Path, tmp_path: Path, command: list[str], written: str
) -> None:
    """RLIMIT_FSIZE stands in for a full disk: the first output file that outgrows it fails, and the error names it."""
    places = {"data": str(small_synth), "model": str(model_dir), "out": str(tmp_path / "out")}
    argv = [part.format(**places) for part in command]
    run = subprocess.run(
        ["prlimit", f"--fsize={16 * 1024}", sys.executable, "-m", "extmem", *argv, "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("extmem: error:")]
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert errors == [f"extmem: error: File too large: {written.format(**places)}"], run.stderr
    assert os.listdir(tmp_path) == []


def test_concurrent_runs_share_data_and_cache_root(small_synth: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extmem",
                "train",
                str(small_synth),
                "--out",
                str(tmp_path / f"m{i}"),
                "--rounds",
                "20",
                "--cache-dir",
                str(cache),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [process.communicate(timeout=300) for process in runs]
    assert [process.returncode for process in runs] == [0, 0], results
    assert cache_dirs(cache) == []
    first, second = (extmem.Model.load(tmp_path / f"m{i}") for i in range(2))
    np.testing.assert_array_equal(first.predict_proba(small_synth), second.predict_proba(small_synth))
    assert os.listdir(tmp_path / "m0") == os.listdir(tmp_path / "m1")


@pytest.mark.parametrize("cuts", ["", ", sketch_rows=1000"], ids=["own cuts", "cuts from a sample"])
def test_without_spool_the_cache_size_is_checked_before_xgboost_writes(wide_synth: Path, tmp_path: Path, cuts: str) -> None:
    """XGBoost aborts the process when its own cache write fails; extmem refuses first, with an error.

    With cuts from a sample, the sample's own external-memory matrix is the first cache written.
    """
    script = (
        "import signal, extmem; signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "try:\n"
        f"    extmem.dmatrix({str(wide_synth)!r}, spool=False, cache='disk', cache_dir={str(tmp_path)!r}{cuts})\n"
        "except extmem.CacheError as exc:\n"
        "    print(exc)\n"
    )
    run = subprocess.run(["prlimit", f"--fsize={2**20}", sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "above the file-size limit (ulimit -f) of 1.0 MiB" in run.stdout
    assert cache_dirs(tmp_path) == []


def _train_under_data_limit(data: Path, tmp_path: Path, limit_mib: int) -> subprocess.CompletedProcess[str]:
    """``extmem train`` of ``data`` into ``tmp_path/m`` under ``prlimit --data``, in an environment without the allocator
    settings the test process may have picked up from in-process runs of the command line."""
    command = ["prlimit", f"--data={limit_mib * 2**20}", sys.executable, "-m", "extmem", "train", str(data), "--out", str(tmp_path / "m")]
    environment = {name: value for name, value in os.environ.items() if name not in ("ARROW_DEFAULT_MEMORY_POOL", "OPENBLAS_NUM_THREADS")}
    options = ["--rounds", "2", "--cache-dir", str(tmp_path), "--no-progress"]
    return subprocess.run([*command, *options], capture_output=True, text=True, check=False, env=environment)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit_mib", "refusal"),
    [
        (200, r"out of memory before any data: the data limit \(prlimit --data\) of 200 MiB"),
        (300, r"is too small: (before any row is read|the leanest plan)"),  # what the libraries hold and the plan's reserve fill it
    ],
    ids=["below-the-libraries", "below-the-leanest-plan"],
)
def test_a_data_limit_too_small_is_one_clear_error_and_leaves_nothing(
    wide_synth: Path, tmp_path: Path, limit_mib: int, refusal: str
) -> None:
    """RLIMIT_DATA below what loading the libraries takes (they would crash the process), or below the leanest plan for
    4,100 columns: refused up front in one line, nothing left."""
    run = _train_under_data_limit(wide_synth, tmp_path, limit_mib)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("extmem: error:")]
    assert len(errors) == 1 and re.search(refusal, errors[0]), run.stderr
    assert cache_dirs(tmp_path) == [] and not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("limit_mib", "must_complete"), [(340, False), (360, False), (390, False), (440, True)])
def test_a_data_limit_the_plan_accepts_holds(wide_synth: Path, tmp_path: Path, limit_mib: int, must_complete: bool) -> None:
    """Under data limits around the leanest plan for 4,100 columns, each run is refused by the plan in one line or completes:
    never out of memory, never a crash (pyarrow and XGBoost abort the process when a thread cannot start)."""
    run = _train_under_data_limit(wide_synth, tmp_path, limit_mib)
    if run.returncode == 2 and not must_complete:
        assert re.search(r"^extmem: error: A memory budget of .* is too small: ", run.stderr, flags=re.MULTILINE), run.stderr
        assert not (tmp_path / "m").exists()
    else:
        assert run.returncode == 0, run.stderr
        assert (tmp_path / "m" / "report.json").exists()
    assert cache_dirs(tmp_path) == []
