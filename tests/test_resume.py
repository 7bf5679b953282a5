from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import cache_dirs

import extmem
from extmem._defaults import CHECKPOINT_FILE as CHECKPOINT
from extmem.run._callbacks import Checkpoint
from extmem.run._checkpoint import load_checkpoint, save_checkpoint

PARAMS = {"max_depth": 5, "eta": 0.05}


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("valid")
    extmem.synth(out, extmem.SynthOptions(rows=1000, shards=1, k=4, seq_len=40, seed=11))
    return out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "extmem", *args]


@pytest.mark.slow
def test_kill_9_then_resume_reaches_the_uninterrupted_model(small_synth: Path, valid: Path, tmp_path: Path) -> None:
    out, cache = tmp_path / "run", tmp_path / "cache"
    cache.mkdir()
    args = ["train", str(small_synth), "--out", str(out), "--rounds", "400", "--checkpoint-every", "3", "--valid", str(valid)]
    args += ["--early-stopping", "25", *(f"--param={k}={v}" for k, v in PARAMS.items()), "--no-progress", "--cache-dir", str(cache)]
    process = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "model.ubj").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(out / CHECKPOINT)[0].num_boosted_rounds()
    assert killed_at % 3 == 0 and killed_at > 0
    assert cache_dirs(cache), "the killed run leaves its cache; the next start sweeps it"

    resumed = subprocess.run(
        _cli("resume", str(out), "--no-progress", "--cache-dir", str(cache)), check=False, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from round {killed_at}" in resumed.stdout
    assert sorted(p.name for p in out.iterdir()) == ["model.ubj", "report.json"]
    assert cache_dirs(cache) == []

    full = extmem.train(small_synth, preset="splice-sites", valid=valid, rounds=400, early_stopping_rounds=25, params=PARAMS)
    report = json.loads((out / "report.json").read_text())
    assert report["rounds"] == full.report["rounds"] < 400
    assert report["early_stopping"] == full.report["early_stopping"]
    assert report["history"] == full.report["history"]
    model = extmem.Model.load(out)
    np.testing.assert_array_equal(model.predict_proba(valid), extmem.Model.from_booster(full.booster).predict_proba(valid))


def test_a_finished_run_leaves_no_checkpoint(small_synth: Path, tmp_path: Path) -> None:
    extmem.train(small_synth, preset="splice-sites", out=tmp_path, rounds=6, checkpoint_every=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ubj", "report.json"]
    with pytest.raises(extmem.OptionError, match="the run finished"):
        extmem.resume(tmp_path)


def test_a_new_run_does_not_overwrite_a_checkpoint(small_synth: Path, tmp_path: Path) -> None:
    booster = extmem.train(small_synth, preset="splice-sites", rounds=2).booster
    save_checkpoint(booster, tmp_path / CHECKPOINT, {"config": {}, "history": {}, "seconds": 0.0})
    with pytest.raises(extmem.OptionError, match="unfinished run: continue it with 'extmem resume', or pass 'overwrite'"):
        extmem.train(small_synth, preset="splice-sites", out=tmp_path, rounds=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]
    extmem.train(small_synth, preset="splice-sites", out=tmp_path, rounds=2, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ubj", "report.json"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "no state"])
def test_a_damaged_checkpoint_is_one_clear_error(small_synth: Path, tmp_path: Path, damage: str) -> None:
    booster = extmem.train(small_synth, preset="splice-sites", rounds=2).booster
    path = tmp_path / CHECKPOINT
    save_checkpoint(booster, path, {"config": {}, "history": {}, "seconds": 0.0})
    content = bytearray(path.read_bytes())
    if damage == "flip":
        content[len(content) // 2] ^= 0xFF
    elif damage == "truncate":
        content = content[: len(content) - 100]
    elif damage == "foreign":
        content = bytearray(booster.save_raw("ubj"))
    else:
        save_checkpoint(booster, path, {"history": {}})
        content = bytearray(path.read_bytes())
    path.write_bytes(bytes(content))
    match = {
        "flip": "is corrupt: its checksum",
        "truncate": "is corrupt",
        "foreign": "is not an extmem checkpoint",
        "no state": "is corrupt: its header",
    }
    with pytest.raises(extmem.OptionError, match=match[damage]):
        extmem.resume(tmp_path)


def _stopped_after_a_checkpoint(data: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of 6 rounds with checkpoints every 2, stopped as Ctrl-C would stop it once the first is saved."""
    save = Checkpoint.after_iteration

    def save_then_stop(self: Checkpoint, model: object, epoch: int, evals_log: object) -> bool:
        save(self, model, epoch, evals_log)  # type: ignore[arg-type]
        if (out / CHECKPOINT).exists():
            raise KeyboardInterrupt
        return False

    with monkeypatch.context() as patched:
        patched.setattr(Checkpoint, "after_iteration", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            extmem.train(data, preset="splice-sites", out=out, rounds=6, checkpoint_every=2)
    assert load_checkpoint(out / CHECKPOINT)[0].num_boosted_rounds() == 2


@pytest.mark.parametrize("change", ["added", "gone", "rewritten"])
def test_resuming_on_changed_data_is_refused_and_keeps_the_checkpoint(
    small_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(small_synth, data)
    _stopped_after_a_checkpoint(data, out, monkeypatch)
    shards = sorted(data.glob("*.parquet"))
    if change == "added":
        shutil.copy(shards[0], data / "zz_more.parquet")
    elif change == "gone":
        shards[-1].unlink()
    else:
        pq.write_table(pq.read_table(shards[1]).slice(0, 10), shards[1])
    with pytest.raises(extmem.OptionError, match=rf"Cannot resume '.*run': the shard '.*' of its train data (was|is) {change}"):
        extmem.resume(out)
    assert sorted(p.name for p in out.iterdir()) == [CHECKPOINT]


def test_resuming_on_the_same_data_touched_finishes_the_run(small_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    shutil.copytree(small_synth, data)
    _stopped_after_a_checkpoint(data, out, monkeypatch)
    for shard in data.glob("*.parquet"):
        os.utime(shard)
    report = extmem.resume(out).report
    assert report["rounds"] == 6 and report["details"]["resumed_from_round"] == 2


def test_checkpoints_need_an_output_folder(small_synth: Path) -> None:
    with pytest.raises(extmem.OptionError, match="'checkpoint_every' option needs a local output folder"):
        extmem.train(small_synth, preset="splice-sites", rounds=2, checkpoint_every=1)
