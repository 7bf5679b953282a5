"""Ctrl-C and SIGTERM at any moment of every command: exit 130 or 143, one line, nothing left behind.

No sleep decides where a signal lands. Each run is watched until the kernel shows that it
handles SIGTERM (``SigCgt`` in /proc: the command installs its handlers first thing), then
signalled 0.1, 0.5, 1 or 3 s later, wherever it is by then (imports, planning, reading,
training or writing). Every workload runs for minutes, so the test fails if a run ends before
its signal, as a kill test must.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import cache_dirs

import extmem
from extmem.cli import main

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"

OFFSETS = (0.1, 0.5, 1.0, 3.0)
STOPS = ((signal.SIGINT, 130, "interrupted (SIGINT)"), (signal.SIGTERM, 143, "terminated (SIGTERM)"))


def handles_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (its caught-signals mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    match = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return match is not None and bool(int(match.group(1), 16) >> (signal.SIGTERM - 1) & 1)


@pytest.fixture(scope="module")
def model(wide_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "model"
    extmem.train(wide_synth, preset="splice-sites", out=out, rounds=2, max_rows=500)
    return out


def _arguments(command: str, data: Path, model: Path, work: Path) -> list[str]:
    """A run of ``command`` that takes minutes, writing only under ``work``."""
    cache = ["--cache-dir", str(work)]
    return {
        "train": [
            "train",
            str(data),
            "--out",
            str(work / "out"),
            "--rounds",
            "100000",
            "--batch-rows",
            "200",
            "--encoded-cache",
            str(work / "rows"),
            *cache,
        ],
        "predict": ["predict", str(model), str(data), "--out", str(work / "out" / "p.parquet"), "--batch-rows", "1"],
        "evaluate": ["evaluate", str(model), str(data), "--out", str(work / "out" / "m.json"), "--batch-rows", "1"],
        # row groups of one row: read in row batches of one row (whole row groups are read fast), written one by one
        "pack": ["pack", str(data), str(work / "out"), "--batch-rows", "1", "--row-group-rows", "1"],
        "prune": ["prune", str(data), str(work / "out"), "--batch-rows", "1", "--row-group-rows", "1"],
        "synth": ["synth", str(work / "out"), "--rows", "100000000"],
        "demo": ["demo", "--dir", str(work / "out"), "--rows", "10000000"],
    }[command]


def _communicate_or_dump(process: subprocess.Popen[str], case: str) -> str:
    """The run's stderr once it exits; a run still alive after minutes fails the test with its stacks (py-spy, when installed)."""
    try:
        return process.communicate(timeout=180)[1]
    except subprocess.TimeoutExpired:
        py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        dump = (
            subprocess.run([py_spy, "dump", "--native", "--pid", str(process.pid)], capture_output=True, text=True, check=False)
            if py_spy
            else None
        )
        process.kill()
        process.communicate()
        pytest.fail(
            f"{case}: still running 3 minutes after its signal; stacks:\n{(dump.stdout + dump.stderr) if dump else '(py-spy not installed)'}"
        )


def _leftovers(work: Path) -> list[str]:
    """What a stopped run left: extmem's hidden partial, staging or cache folders and files, anywhere under ``work``."""
    hidden = [str(path) for path in work.rglob(".*")]
    return hidden + [str(path) for path in cache_dirs(work)]


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "pack", "prune", "synth", "demo"])
def test_a_signal_at_any_moment_exits_cleanly(command: str, wide_synth: Path, model: Path, tmp_path: Path) -> None:
    runs = []
    for signum, status, line in STOPS:
        for offset in OFFSETS:
            work = tmp_path / f"{signum.name}-{offset}"
            work.mkdir()
            arguments = [sys.executable, "-m", "extmem", *_arguments(command, wide_synth, model, work), "--no-progress"]
            process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            runs.append((process, signum, status, line, offset, work))
    deadline = time.monotonic() + 120
    started: dict[int, float] = {}
    pending = list(runs)
    while pending:
        assert time.monotonic() < deadline, "a run never installed its signal handlers"
        for run in list(pending):
            process, signum, _, _, offset, _ = run
            if process.pid not in started and handles_sigterm(process.pid):
                started[process.pid] = time.monotonic()
            if process.pid in started and time.monotonic() - started[process.pid] >= offset:
                assert process.poll() is None, f"{command} ended before its signal at {offset} s: {process.communicate()}"
                process.send_signal(signum)
                pending.remove(run)
        time.sleep(0.005)
    for process, signum, status, line, offset, work in runs:
        case = f"{command}, {signum.name} at {offset} s"
        stderr = _communicate_or_dump(process, case)
        assert process.returncode == status, f"{case}: {stderr}"
        assert "Traceback" not in stderr, f"{case}: {stderr}"
        assert stderr.strip().splitlines()[-1] == f"extmem: {line}; nothing was left behind", f"{case}: {stderr}"
        assert _leftovers(work) == [], case
        out = work / "out"
        if command != "demo":
            assert not out.exists() or not any(out.iterdir()), f"{case}: {list(out.iterdir())}"


class _SignalsWhenCollected:
    """An object whose ``__del__`` gets SIGTERM: Python prints and drops the exception raised there."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)


def _swallowing_the_signal(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _SignalsWhenCollected()  # collected at once: the Stopped raised in its __del__ is dropped
        return function(*args, **kwargs)

    return wrapper


def _mangling_the_signal(function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException as exc:  # as numpy's import does with any failure of its C extension
            raise ImportError("Importing the numpy C-extensions failed") from exc
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("interference", [_swallowing_the_signal, _mangling_the_signal])
def test_a_signal_whose_exception_is_dropped_or_replaced_still_stops_the_run(
    interference: Callable[..., Any],
    wide_synth: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_signals: None,
) -> None:
    """Code that drops the signal's exception (a __del__, a ctypes callback) or turns it into its own error cannot keep the run going."""
    from extmem.run import _xgboost

    monkeypatch.setattr(_xgboost, "infer_objective", interference(_xgboost.infer_objective))
    out = tmp_path / "out"
    status = main(["train", str(wide_synth), "--out", str(out), "--rounds", "50", "--cache-dir", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "extmem: terminated (SIGTERM); nothing was left behind", err
    assert not out.exists() and _leftovers(tmp_path) == []
    extmem.train(wide_synth, preset="splice-sites", rounds=1, max_rows=200)  # the signal was the command's: later work runs


def test_a_signal_dropped_while_synth_scans_a_shard_stops_it_at_the_next_row_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], restore_signals: None
) -> None:
    """synth draws a shard's row groups once to find its k-mer columns before writing any: that pass checks for a recorded signal too."""
    from extmem.tools import _synth

    drawn: list[int] = []

    def drawing(*args: Any, **kwargs: Any) -> Any:
        drawn.append(1)
        if len(drawn) == 1:
            _SignalsWhenCollected()  # the Stopped raised in its __del__ is dropped
        return original(*args, **kwargs)

    original = _synth._row_group
    monkeypatch.setattr(_synth, "_row_group", drawing)
    out = tmp_path / "out"
    status = main(["synth", str(out), "--rows", "100000", "--shards", "1", "--row-group-rows", "1000", "--k", "3", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 143, err
    assert err.strip().splitlines()[-1] == "extmem: terminated (SIGTERM); nothing was left behind", err
    assert len(drawn) == 1  # not the shard's other 99 row groups
    assert not out.exists() and _leftovers(tmp_path) == []
