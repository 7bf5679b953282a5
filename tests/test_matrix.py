from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from conftest import all_rows, cache_dirs, write_shard

import extmem
from extmem import Dataset, ShardReadError
from extmem._folders import LOCK_FILE, PrivateFolder
from extmem.encode import _pages as reading_pages
from extmem.read._reader import read_batches, sample_row_groups
from extmem.read._selection import select_dataset
from extmem.xgb._build import MatrixOptions
from extmem.xgb._matrix import matrix_info, open_matrix

PARAMS = {"tree_method": "hist", "objective": "multi:softprob", "num_class": 3, "seed": 0, "max_depth": 4, "eta": 0.3}


def in_memory(path: Path, **options) -> tuple[xgb.DMatrix, list[str]]:
    """The whole dataset as one CSR matrix, built from the same blocks extmem streams."""
    source = select_dataset(Dataset(path, preset="splice-sites", **options))
    block = all_rows(source)
    names = list(source.layout.names)
    return xgb.QuantileDMatrix(block.X, block.label, missing=np.nan, feature_names=names), names


def test_external_memory_model_equals_in_memory_model(small_synth: Path, cache_root: Path) -> None:
    external = extmem.dmatrix(small_synth, preset="splice-sites", batch_rows=300, page_rows=700, cache_dir=cache_root)
    assert matrix_info(external).stats.pages > 1
    in_mem, names = in_memory(small_synth)
    booster_external = xgb.train(PARAMS, external, 15)
    booster_memory = xgb.train(PARAMS, in_mem, 15)
    probe = xgb.DMatrix(in_mem.get_data(), feature_names=names, missing=np.nan)
    np.testing.assert_allclose(booster_external.predict(probe), booster_memory.predict(probe), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(external.get_label(), in_mem.get_label())


def test_sparse_pages_for_approx_train_as_well_as_in_memory(small_synth: Path, cache_root: Path) -> None:
    """approx re-sketches every page with hessian weights, so trees differ slightly from in-memory."""
    external = extmem.dmatrix(small_synth, preset="splice-sites", sparse_pages=True, page_rows=1000, cache_dir=cache_root)
    assert not isinstance(external, xgb.QuantileDMatrix)
    params = {**PARAMS, "tree_method": "approx", "eval_metric": "mlogloss"}
    source = select_dataset(Dataset(small_synth, preset="splice-sites"))
    block = all_rows(source)
    in_mem = xgb.DMatrix(block.X, block.label, missing=np.nan, feature_names=list(source.layout.names))
    losses = []
    for matrix in (external, in_mem):
        history: dict = {}
        xgb.train(params, matrix, 10, evals=[(in_mem, "all")], evals_result=history, verbose_eval=False)
        losses.append(history["all"]["mlogloss"][-1])
    assert losses[0] == pytest.approx(losses[1], rel=0.05)


def test_drop_in_for_xgb_train_with_validation_ref(small_synth: Path, tmp_path: Path, cache_root: Path) -> None:
    valid_dir = tmp_path / "valid"
    extmem.synth(valid_dir, extmem.SynthOptions(rows=400, shards=1, k=4, seq_len=40, seed=99))
    dtrain = extmem.dmatrix(small_synth, preset="splice-sites", cache_dir=cache_root)
    dvalid = extmem.dmatrix(valid_dir, preset="splice-sites", ref=dtrain, cache_dir=cache_root)
    assert matrix_info(dvalid).layout.names == matrix_info(dtrain).layout.names
    history: dict = {}
    booster = xgb.train(PARAMS, dtrain, 50, evals=[(dvalid, "valid")], early_stopping_rounds=5, evals_result=history, verbose_eval=False)
    assert booster.best_iteration < 49 or len(history["valid"]["mlogloss"]) == 50
    assert history["valid"]["mlogloss"][-1] < history["valid"]["mlogloss"][0]


def test_cache_lives_with_the_dmatrix(small_synth: Path, cache_root: Path) -> None:
    matrix = extmem.dmatrix(small_synth, preset="splice-sites", cache_dir=cache_root, cache="disk")
    (folder,) = cache_dirs(cache_root)
    assert (folder / LOCK_FILE).is_file()
    assert any(p.name.endswith(".page") for p in folder.iterdir())
    del matrix
    gc.collect()
    assert cache_dirs(cache_root) == []


def test_read_error_mid_stream_leaves_no_cache(small_synth: Path, tmp_path: Path, cache_root: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for shard in sorted(small_synth.glob("*.parquet"))[:2]:
        (data / shard.name).write_bytes(shard.read_bytes())
    broken = data / "batch_00009.parquet"
    raw = bytearray((small_synth / "batch_00003.parquet").read_bytes())
    footer_start = len(raw) - 8 - int.from_bytes(raw[-8:-4], "little")
    raw[4:footer_start] = os.urandom(footer_start - 4)
    broken.write_bytes(bytes(raw))
    with pytest.raises(ShardReadError, match="batch_00009.parquet"):
        extmem.dmatrix(data, preset="splice-sites", cache_dir=cache_root)
    assert cache_dirs(cache_root) == []


def test_bad_input_before_reading_leaves_no_cache(tmp_path: Path, cache_root: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1.0], "splice_type": ["exon"]})
    with pytest.raises(extmem.LabelError, match="'exon'"):
        extmem.dmatrix(tmp_path, preset="splice-sites", cache_dir=cache_root)
    with pytest.raises(extmem.SchemaError, match="gene_type"):
        extmem.dmatrix(tmp_path, preset="splice-sites", features=["gene_type"], cache_dir=cache_root)
    assert cache_dirs(cache_root) == []


def test_ctrl_c_during_build_interrupts_and_cleans(small_synth: Path, cache_root: Path) -> None:
    seen: list[int] = []

    def interrupt(rows: int) -> None:
        seen.append(rows)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    cache = PrivateFolder(cache_root)
    with pytest.raises(KeyboardInterrupt):
        open_matrix(Dataset(small_synth, preset="splice-sites"), cache, MatrixOptions(page_rows=500), on_rows=interrupt)
    assert len(seen) == 2, "the build must stop at the next callback after the signal"
    assert cache_dirs(cache_root) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_default_sigterm_during_build_still_removes_the_cache(small_synth: Path, cache_root: Path) -> None:
    """A library caller keeps Python's default SIGTERM handler, which ends the process at once."""
    script = """
import os, signal, sys
from extmem import Dataset
from extmem._folders import PrivateFolder
from extmem.xgb._build import MatrixOptions
from extmem.xgb._matrix import open_matrix
open_matrix(Dataset(sys.argv[1]), PrivateFolder(sys.argv[2]), MatrixOptions(page_rows=500), on_rows=lambda rows: os.kill(os.getpid(), signal.SIGTERM))
"""
    completed = subprocess.run(
        [sys.executable, "-c", script, str(small_synth), str(cache_root)], capture_output=True, check=False, timeout=120
    )
    assert completed.returncode == -signal.SIGTERM, completed.stderr
    assert cache_dirs(cache_root) == []


def test_cache_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(extmem.OptionError, match="The 'cache_dir' folder .*absent' is not an existing folder"):
        PrivateFolder(tmp_path / "absent")


@pytest.mark.parametrize("spool", [False, True], ids=["row-groups", "spooled-pages"])
def test_large_datasets_take_cuts_from_a_sample(small_synth: Path, cache_root: Path, spool: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a spool, whole row groups (500 rows) are read again; with one, pages (500 rows here) are replayed from it."""
    passes = []
    read = reading_pages.read_batches
    monkeypatch.setattr(
        reading_pages,
        "read_batches",
        lambda selection, rows, refs=None, counters=None, **whole: passes.append(refs) or read(selection, rows, refs, counters, **whole),
    )
    sampled = extmem.dmatrix(
        small_synth, preset="splice-sites", sketch_rows=900, seed=4, cache_dir=cache_root, cache="disk", spool=spool, page_rows=500
    )
    stats = matrix_info(sampled).stats
    assert 900 <= stats.cuts_from_rows < 3000
    assert stats.cuts_from_rows % 500 == 0
    assert stats.passes == 2, "with cuts given, XGBoost skips its own sketching pass"
    assert stats.read.rows == 3000
    assert len(passes) == (1 if spool else 5), f"with a spool the parquet is decoded once, sample included: {passes}"
    full = extmem.dmatrix(small_synth, preset="splice-sites", cache_dir=cache_root, cache="disk", spool=spool, page_rows=500)
    assert matrix_info(full).stats.cuts_from_rows == 3000 and matrix_info(full).stats.passes == 3


def test_row_group_sample_is_seeded_and_spread(small_synth: Path) -> None:
    source = select_dataset(Dataset(small_synth, preset="splice-sites"))
    first = sample_row_groups(source, 1500, seed=1)
    assert first == sample_row_groups(source, 1500, seed=1)
    assert sum(ref.rows for ref in first) == 1500
    draws = [sample_row_groups(source, 1500, seed=s) for s in range(20)]
    assert len({tuple((r.shard, r.index) for r in draw) for draw in draws}) > 10
    assert {r.shard for draw in draws for r in draw} == set(source.schema.shards)
    rows = sum(b.rows for b in read_batches(source, 2048, first))
    assert rows == 1500


def test_no_rows_after_filter_is_a_clear_error(small_synth: Path, cache_root: Path) -> None:
    with pytest.raises(extmem.NoRowsError, match=r"No rows of .*small_synth.* matching the 'filter' 'position < 0'"):
        extmem.dmatrix(small_synth, preset="splice-sites", filter="position < 0", cache_dir=cache_root)
    assert cache_dirs(cache_root) == []


def test_sample_emptied_by_the_filter_falls_back_to_all_rows(tmp_path: Path, cache_root: Path) -> None:
    rows = 4000
    write_shard(
        tmp_path / "a.parquet",
        {"x": [float(i) for i in range(rows)], "splice_type": ["donor", "neither"] * (rows // 2)},
        row_group_size=100,
    )
    sample = sample_row_groups(select_dataset(Dataset(tmp_path, preset="splice-sites", filter="x >= 3800")), 200, seed=1)
    assert {ref.index for ref in sample}.isdisjoint({38, 39}), "the seeded sample must miss the only matching row groups"
    matrix = extmem.dmatrix(tmp_path, preset="splice-sites", filter="x >= 3800", sketch_rows=200, max_bin=128, seed=1, cache_dir=cache_root)
    assert matrix.num_row() == 200
    assert matrix_info(matrix).stats.cuts_from_rows == 200, "cuts come from every filtered row, not the empty sample"


FAILED_BUILD = """
import gc, sys, warnings, extmem
from extmem.xgb import _build
failure = RuntimeError("the full build failed") if sys.argv[3] == "error" else OSError(28, "No space left on device")
def fail(*args, **kwargs):
    raise failure
_build.CachedQuantileDMatrix.__init__ = fail
warnings.simplefilter("always")
try:
    extmem.dmatrix(sys.argv[1], preset="splice-sites", sketch_rows=256, cache="disk", cache_dir=sys.argv[2])
except (RuntimeError, extmem.CacheError) as exc:
    print("raised:", exc)
gc.collect()
"""


@pytest.mark.parametrize("failure", ["error", "full disk"])
def test_a_failed_build_frees_the_cut_samples_matrix_before_its_folder_goes(small_synth: Path, tmp_path: Path, failure: str) -> None:
    """The quantile-cut sample is an external-memory matrix of its own in the cache folder. Alive past the folder's removal
    (held by the failed build's frames), XGBoost warned when it was freed that it could not remove its cache files."""
    command = [sys.executable, "-c", FAILED_BUILD, str(small_synth), str(tmp_path), failure]
    run = subprocess.run(command, check=False, capture_output=True, text=True)
    assert "raised:" in run.stdout and run.returncode == 0, run.stderr
    assert "cache file" not in run.stderr, run.stderr
    assert cache_dirs(tmp_path) == []
