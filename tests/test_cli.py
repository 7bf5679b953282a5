from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cache_dirs, write_shard

import extmem
from extmem.cli._main import main
from extmem.cli._parser import parse


def extmem_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "extmem", *args], capture_output=True, text=True, check=False, timeout=timeout)


def test_synth_then_train(tmp_path: Path) -> None:
    data, model = tmp_path / "data", tmp_path / "model"
    made = extmem_cli("synth", str(data), "--rows", "1500", "--shards", "2", "--k", "4", "--seq-len", "40")
    assert made.returncode == 0, made.stderr
    assert "wrote 2 shard(s)" in made.stdout
    run = extmem_cli(
        "train",
        str(data),
        "--out",
        str(model),
        "--rounds",
        "5",
        "--param",
        "max_depth=3",
        "--param",
        "eta=0.2",
        "--param",
        "seed=7",
        "--no-progress",
        "--cache-dir",
        str(tmp_path),
    )
    assert run.returncode == 0, run.stderr
    assert "trained 5 rounds on 1,500 rows" in run.stdout
    assert "not using 6 non-numeric column(s)" in run.stderr
    report = json.loads((model / "report.json").read_text())
    assert (report["params"]["max_depth"], report["params"]["eta"], report["params"]["seed"]) == (3, 0.2, 7)
    assert report["rows"] == 1500
    assert cache_dirs(tmp_path) == []


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = {"x": [1.0, 2.0], "gene_type": ["a", "b"], "splice_type": ["donor", "neither"]}
    write_shard(tmp / "ok" / "a.parquet", good)
    write_shard(tmp / "corrupt" / "a.parquet", good)
    (tmp / "corrupt" / "b.parquet").write_bytes(b"PAR1 truncated")
    write_shard(tmp / "nolabel" / "a.parquet", {"x": [1.0]})
    write_shard(tmp / "nulllabel" / "a.parquet", {"x": [1.0, 2.0], "splice_type": ["donor", None]})
    write_shard(tmp / "conflict" / "a.parquet", {"x": [1.0], "splice_type": ["donor"]})
    write_shard(tmp / "conflict" / "b.parquet", {"x": ["1"], "splice_type": ["donor"]})
    (tmp / "empty").mkdir()
    return {
        "missing path": ([str(tmp / "absent")], "does not exist"),
        "no parquet": ([str(tmp / "empty")], "holds no .parquet files"),
        "corrupt shard": ([str(tmp / "corrupt")], "b.parquet"),
        "label missing": ([str(tmp / "nolabel")], "label column 'splice_type' is in none"),
        "null label": ([str(tmp / "nulllabel")], "1 null value"),
        "string feature": ([str(tmp / "ok"), "--features", "x,gene_type"], "'gene_type' is large_string"),
        "type conflict": ([str(tmp / "conflict")], "'x' is double in .*a.parquet.* but string in .*b.parquet"),
        "bad filter": ([str(tmp / "ok"), "--filter", "x >"], "Invalid --filter"),
    }


@pytest.mark.slow
def test_bad_input_gives_one_line_errors_and_leaves_nothing(tmp_path: Path) -> None:
    for name, (args, match) in _bad_inputs(tmp_path).items():
        out = tmp_path / f"model-{name.replace(' ', '-')}"
        run = extmem_cli("train", *args, "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path))
        assert run.returncode == 2, (name, run.stderr)
        error_lines = [line for line in run.stderr.splitlines() if line.startswith("extmem: error:")]
        assert len(error_lines) == 1, (name, run.stderr)
        assert "Traceback" not in run.stderr, name
        assert re.search(match, error_lines[0]), (name, error_lines[0])
        assert not out.exists(), name
    assert cache_dirs(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    run = extmem_cli("--debug", "train", str(tmp_path / "absent"), "--out", str(tmp_path / "m"))
    assert run.returncode == 2 and "Traceback" in run.stderr


def test_bad_flag_values_are_usage_errors(tmp_path: Path) -> None:
    run = extmem_cli("train", str(tmp_path), "--out", str(tmp_path / "m"), "--batch-rows", "-5")
    assert run.returncode == 2 and "--batch-rows: expected a positive integer, got '-5'" in run.stderr
    run = extmem_cli("train", str(tmp_path), "--out", str(tmp_path / "m"), "--param", "max_depth")
    assert run.returncode == 2 and "--param: expected KEY=VALUE" in run.stderr
    run = extmem_cli("train", str(tmp_path), "--out", str(tmp_path / "m"), "--label-map", "donor=0,donor=1,neither=2")
    assert run.returncode == 2 and "--label-map: the label 'donor' is given more than once" in run.stderr


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--class-weight", "balanced"], "--class-weight applies to the incremental algorithms"),  # the incremental default, typed out
        (["--class-w", "balanced"], "--class-weight applies to the incremental algorithms"),  # abbreviated
        (["--algorithm", "sgd_logistic", "--rounds", "100"], "--rounds applies to --algorithm xgboost only"),  # xgboost's default
    ],
)
def test_a_flag_of_another_algorithm_is_refused_even_at_its_default(flags: list[str], refused: str, tmp_path: Path) -> None:
    run = extmem_cli("train", str(tmp_path), "--out", str(tmp_path / "m"), *flags)
    assert run.returncode == 2 and refused in run.stderr, run.stderr


@pytest.mark.parametrize(("command", "dest"), [("synth", "out_dir"), ("pack", "dst"), ("prune", "dst")])
def test_output_folders_are_positional_or_out_like_every_command(command: str, dest: str, capsys: pytest.CaptureFixture[str]) -> None:
    sources = [] if command == "synth" else ["src"]
    extra = ["--rows", "10"] if command == "synth" else []
    assert getattr(parse([command, *sources, "new", *extra]), dest) == "new"
    given = parse([command, *sources, "--out", "new", *extra])
    assert getattr(given, dest) == "new" and not [name for name in vars(given) if name.startswith(dest + "_")]
    for argv in ([command, *sources, "one", "--out", "two", *extra], [command, *sources, *extra]):
        with pytest.raises(SystemExit) as stopped:
            parse(argv)
        assert stopped.value.code == 2
    assert "--out: not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_during_training_exits_cleanly(wide_synth: Path, tmp_path: Path, signum: int, status: int) -> None:
    out = tmp_path / "model"
    command = [
        sys.executable,
        "-m",
        "extmem",
        "train",
        str(wide_synth),
        "--out",
        str(out),
        "--rounds",
        "2000",
        "--page-rows",
        "1000",
        "--batch-rows",
        "500",
        "--cache",
        "disk",
    ]
    process = subprocess.Popen(
        [*command, "--no-progress", "--cache-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".page") for d in cache_dirs(tmp_path) for p in d.iterdir()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert cache_dirs(tmp_path) == []
    assert not out.exists()


def test_train_predict_evaluate(small_synth: Path, tmp_path: Path) -> None:
    model, preds, metrics, plot = tmp_path / "model", tmp_path / "preds.parquet", tmp_path / "metrics.json", tmp_path / "pr.png"
    trained = extmem_cli(
        "train", str(small_synth), "--out", str(model), "--rounds", "8", "--valid-fraction", "0.2", "--group-by", "gene_id", "--no-progress"
    )
    assert trained.returncode == 0, trained.stderr
    assert re.search(r"valid: mlogloss [\d.]+, merror [\d.]+, macro_f1 [\d.]+, accuracy [\d.]+", trained.stdout)
    predicted = extmem_cli("predict", str(model), str(small_synth), "--out", str(preds), "--keep", "gene_id", "--no-progress")
    assert predicted.returncode == 0, predicted.stderr
    assert "wrote 3,000 rows (gene_id, prob_neither, prob_donor, prob_acceptor, predicted)" in predicted.stdout
    evaluated = extmem_cli(
        "evaluate", str(model), str(small_synth), "--out", str(metrics), "--plot", str(plot), "--filter", "chrom == 'chr1'", "--no-progress"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "confusion matrix (rows: true class, columns: predicted)" in evaluated.stdout
    assert re.search(r"^donor +[\d.]+ +[\d.]+", evaluated.stdout, re.MULTILINE)
    result = json.loads(metrics.read_text())
    assert result["rows"] < 3000 and set(result["per_class"]) == {"neither", "donor", "acceptor"}
    assert plot.stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["predict", "{tmp}/nowhere", "{data}", "--out", "{tmp}/p.parquet"], "No model at"),
        (["evaluate", "{tmp}/nowhere", "{data}"], "No model at"),
        (["resume", "{tmp}"], "No checkpoint to resume"),
        (["train", "{data}", "--out", "{data}"], "folder .* exists and is not empty; pass --overwrite"),
        (["train", "{data}", "--out", "{tmp}/m", "--group-by", "gene_id"], "The --group-by option needs --valid-fraction"),
        (["synth", "{tmp}/s", "--rows", "5", "--shards", "10"], r"^extmem: error: The --rows option \(5\) must be at least the number"),
    ],
)
def test_command_errors_are_one_line(small_synth: Path, tmp_path: Path, args: list[str], match: str) -> None:
    run = extmem_cli(*(a.format(tmp=tmp_path, data=small_synth) for a in args), "--no-progress")
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert re.search(match, run.stderr.strip().splitlines()[-1]), run.stderr


def test_a_run_is_reproduced_from_its_report(small_synth: Path, tmp_path: Path) -> None:
    """report.json's command line and its config each repeat the run: the same model, bit for bit."""
    first = tmp_path / "first"
    run = extmem_cli(
        "train", str(small_synth), "--out", str(first), "--rounds", "4", "--param", "max_depth=3", "--valid-fraction", "0.2",
        "--early-stopping", "2", "--no-progress", "--cache-dir", str(tmp_path),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads((first / "report.json").read_text())
    for field in ("command", "started_at", "environment", "config", "data", "memory_plan", "stages", "early_stopping", "checksums"):
        assert report[field], field
    assert report["environment"]["packages"]["xgboost"]

    command = report["command"]
    assert command[:2] == ["extmem", "train"]
    second = tmp_path / "second"
    command[command.index("--out") + 1] = str(second)
    rerun = extmem_cli(*command[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert (second / "model.ubj").read_bytes() == (first / "model.ubj").read_bytes()

    config = report["config"]
    again = extmem.train(
        extmem.Dataset.from_dict(config["data"]),
        valid=extmem.Dataset.from_dict(config["valid"]) if config["valid"] else None,
        rounds=config["rounds"],
        params=config["params"],
        early_stopping_rounds=config["early_stopping_rounds"],
        page_rows=config["page_rows"],
        sketch_rows=config["sketch_rows"],
        cache=config["cache"],
        prefetch=config["prefetch"],
        cache_dir=tmp_path,
    )
    assert bytes(again.booster.save_raw("ubj")) == (first / "model.ubj").read_bytes()


def test_an_error_naming_one_option_as_text_shows_its_flag() -> None:
    """options=("k") is the text 'k', not a tuple: every character was an option; an error now takes it as one option."""
    from extmem.cli._main import _as_flags

    error = extmem.OptionError("The 'min_variance' must be >= 0.", options="min_variance")  # type: ignore[arg-type]
    assert error.options == ("min_variance",)
    assert _as_flags(str(error), error.options) == "The --min-variance must be >= 0."


@pytest.mark.parametrize("option", ["qid", "weight", "label"])
def test_a_column_named_as_its_option_keeps_its_name_in_errors(option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--qid qid: the option became its flag, and so did the column's name ("The --qid column --qid")."""
    write_shard(tmp_path / "data" / "a.parquet", {"x": [1.0, 2.0], "y": [0, 1]})
    flags = {"label": ["--label", "label"], "qid": ["--label", "y", "--qid", "qid"], "weight": ["--label", "y", "--weight", "weight"]}
    assert main(["train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), *flags[option]]) != 0
    assert f"The --{option} column '{option}' is in none of the 1 shards" in capsys.readouterr().err


def test_library_warnings_are_one_line_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    """XGBoost's warnings came with their time, source path and the Python line that called it."""
    import warnings

    from extmem.cli._main import _command_logging

    with _command_logging(), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("[22:06:38] WARNING: /__w/xgboost/src/context.cc:53: No visible GPU is found, setting device to CPU.", stacklevel=1)
    assert capsys.readouterr().err == "extmem: warning: No visible GPU is found, setting device to CPU.\n"


def test_a_quoted_tilde_is_the_home_folder_for_data_outputs_models_and_caches(
    small_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'~/data' reaches extmem unexpanded when quoted (or from a config file); it names the home folder, as in a shell or pandas."""
    home = tmp_path / "home"
    shutil.copytree(small_synth, home / "data")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    train = ["train", "~/data", "--out", "~/model", "--rounds", "1", "--cache-dir", "~", "--encoded-cache", "~/rows", "--no-progress"]
    assert main([*train, "--preset", "splice-sites"]) == 0
    assert main(["predict", "~/model", "~/data", "--out", "~/predictions.parquet", "--no-progress"]) == 0
    assert sorted(path.name for path in home.iterdir()) == ["data", "model", "predictions.parquet", "rows"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["home"]  # no folder named '~'


@pytest.mark.parametrize(
    ("command", "advised", "not_advised"),
    [
        (["pack", "{data}", "{out}"], ["--batch-rows", "--row-group-rows"], ["--memory-budget", "--page-rows", "extmem pack"]),
        (["train", "{data}", "--out", "{out}"], ["--memory-budget", "--batch-rows", "--page-rows", "extmem pack"], []),
    ],
)
def test_out_of_memory_advice_names_only_the_flags_of_the_command(
    small_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command, advised, not_advised
) -> None:
    """pack has no memory budget: running out of memory advised it to give one, and to pack the data first."""

    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr("extmem.read._selection.scan", exhausted)
    monkeypatch.setattr("extmem.tools._pack.scan", exhausted)
    argv = [part.format(data=small_synth, out=tmp_path / "out") for part in command]
    assert main([*argv, "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert "out of memory" in message
    assert all(flag in message for flag in advised) and not any(flag in message for flag in not_advised), message
