"""The encoded-rows cache: a first read's rows kept in a folder, replayed by later runs on the same shards and options."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

import extmem
from extmem.xgb._encoded import MANIFEST_FILE, find
from extmem.xgb._matrix import matrix_info

PARAMS = {"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 4}


def _entries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if (path / MANIFEST_FILE).is_file())


def _build(data: Path, folder: Path | str, cache_root: Path, **options: object) -> xgb.DMatrix:
    options = {"page_rows": 1024, **options}
    return extmem.dmatrix(data, preset="splice-sites", cache="disk", encoded_cache=folder, cache_dir=cache_root, **options)


def _copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for shard in sorted(source.glob("*.parquet")):
        (target / shard.name).write_bytes(shard.read_bytes())
    return target


def test_a_second_run_replays_the_rows_and_trains_the_same_model(small_synth: Path, tmp_path: Path) -> None:
    folder, root = tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    first = _build(small_synth, folder, root)
    assert not matrix_info(first).stats.reused_rows and matrix_info(first).stats.read.rows == 3000
    model_first = xgb.train(PARAMS, first, 5).save_raw("ubj")
    assert len(_entries(folder)) == 1
    second = _build(small_synth, folder, root)
    stats = matrix_info(second).stats
    assert stats.reused_rows and stats.rows == 3000
    assert stats.read.rows == 0 and stats.decode_seconds == 0  # nothing read from the parquet
    assert xgb.train(PARAMS, second, 5).save_raw("ubj") == model_first
    assert [path.name for path in folder.iterdir()] == [_entries(folder)[0].name]  # no staging folder left


def test_a_rewritten_shard_or_other_options_make_a_new_entry(small_synth: Path, tmp_path: Path) -> None:
    data, folder, root = _copy(small_synth, tmp_path / "data"), tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    _build(data, folder, root)
    assert not matrix_info(_build(data, folder, root, max_rows=2000)).stats.reused_rows
    assert len(_entries(folder)) == 2
    shard = min(data.glob("*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.slice(0, table.num_rows - 1), shard)  # one row fewer: the old rows must not come back
    rewritten = _build(data, folder, root)
    assert not matrix_info(rewritten).stats.reused_rows and matrix_info(rewritten).stats.rows == 2999
    assert len(_entries(folder)) == 3


def test_a_run_replays_the_largest_pages_its_plan_allows(small_synth: Path, tmp_path: Path) -> None:
    """Kept in pages of 1,024 rows: a plan of 2,048-row pages replays them (smaller pages take less memory); one of 512 cannot."""
    folder, root = tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    _build(small_synth, folder, root)
    larger = matrix_info(_build(small_synth, folder, root, page_rows=2048)).stats
    assert larger.reused_rows and larger.pages == 3  # the kept pages of 1,024 rows
    smaller = matrix_info(_build(small_synth, folder, root, page_rows=512)).stats
    assert not smaller.reused_rows and smaller.pages == 6
    assert sorted(int(path.name.rpartition("-")[2]) for path in _entries(folder)) == [512, 1024]
    assert matrix_info(_build(small_synth, folder, root, page_rows=600)).stats.pages == 6  # the 512-row entry


def test_a_failed_first_read_leaves_no_entry(small_synth: Path, tmp_path: Path) -> None:
    data, folder, root = _copy(small_synth, tmp_path / "data"), tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    last = max(data.glob("*.parquet"))
    table = pq.read_table(last)
    labels = table.column("splice_type").to_pylist()
    labels[-1] = "intron"  # a label the label map does not cover, in the last row read
    pq.write_table(table.set_column(table.schema.get_field_index("splice_type"), "splice_type", [labels]), last)
    with pytest.raises(extmem.LabelError, match="intron"):
        _build(data, folder, root, label_map={"neither": 0, "donor": 1, "acceptor": 2})
    assert list(folder.iterdir()) == []
    assert list(root.iterdir()) == []


def test_two_runs_at_once_keep_one_entry(small_synth: Path, tmp_path: Path) -> None:
    folder, root = tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    built: list[xgb.DMatrix] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            built.append(_build(small_synth, folder, root))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=build, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads), "a build never ended"
    assert errors == []
    assert len(_entries(folder)) == 1 and len(list(folder.iterdir())) == 1
    models = [xgb.train(PARAMS, matrix, 3).save_raw("ubj") for matrix in built]
    assert models[0] == models[1]
    third = _build(small_synth, folder, root)
    assert matrix_info(third).stats.reused_rows
    np.testing.assert_array_equal(third.get_label(), built[0].get_label())


def test_a_folder_that_cannot_be_one_is_named(small_synth: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(extmem.OptionError, match="'encoded_cache'") as raised:
        _build(small_synth, blocker / "rows", tmp_path)
    assert "encoded_cache" in raised.value.options
    with pytest.raises(extmem.OptionError, match="must be a local folder"):
        _build(small_synth, "s3://bucket/rows", tmp_path)
    assert os.listdir(tmp_path) == ["file"]


def test_training_reports_reused_rows(small_synth: Path, tmp_path: Path) -> None:
    folder = tmp_path / "rows"
    options = {"preset": "splice-sites", "rounds": 3, "encoded_cache": folder, "cache_dir": tmp_path, "valid_fraction": 0.2}
    first = extmem.train(small_synth, **options).report
    second = extmem.train(small_synth, **options).report
    assert [first["data"][name]["reused_encoded_rows"] for name in ("train", "valid")] == [False, False]
    assert [second["data"][name]["reused_encoded_rows"] for name in ("train", "valid")] == [True, True]
    assert second["history"] == first["history"] and second["evaluation"] == first["evaluation"]
    assert len(_entries(folder)) == 2  # the training side and the validation side


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_entry_is_not_replayed_but_replaced(
    small_synth: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder, root = tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    model = xgb.train(PARAMS, _build(small_synth, folder, root), 3).save_raw("ubj")
    (entry,) = _entries(folder)
    page = entry / "page-000001.data.npy"
    if damage == "truncated":
        os.truncate(page, page.stat().st_size // 2)
    else:
        page.unlink()
    again = _build(small_synth, folder, root)
    assert not matrix_info(again).stats.reused_rows and matrix_info(again).stats.read.rows == 3000
    assert "damaged" in caplog.text and entry.name in caplog.text
    assert xgb.train(PARAMS, again, 3).save_raw("ubj") == model
    assert _entries(folder) == [entry] and len(list(folder.iterdir())) == 1  # replaced in place, nothing set aside left
    replayed = _build(small_synth, folder, root)
    assert matrix_info(replayed).stats.reused_rows
    assert xgb.train(PARAMS, replayed, 3).save_raw("ubj") == model


def test_a_kept_page_that_cannot_be_read_is_named(small_synth: Path, tmp_path: Path) -> None:
    """Damage after the entry was found (between two runs' steps): the error names the file and the folder, not a traceback."""
    folder, root = tmp_path / "rows", tmp_path / "caches"
    root.mkdir()
    _build(small_synth, folder, root)
    (entry,) = _entries(folder)
    spool = find(entry.parent, json.loads((entry / MANIFEST_FILE).read_text())["identity"], None)
    assert spool is not None and spool.reused
    (entry / "page-000002.indices.npy").unlink()
    with pytest.raises(extmem.CacheError, match=r"page-000002\.indices\.npy of the kept encoded rows in .*delete that folder"):
        list(spool.replay(10))
    os.truncate(entry / "page-000001.data.npy", 100)
    with pytest.raises(extmem.CacheError, match=r"page-000001\.data\.npy"):
        list(spool.replay(10))


def test_a_folder_inside_the_model_folder_is_refused_before_any_work(small_synth: Path, tmp_path: Path) -> None:
    """The run replaces its 'out' folder with the model at the end: rows kept inside it would be lost."""
    out = tmp_path / "model"
    for inside in (out / "rows", out):
        with pytest.raises(extmem.OptionError, match="'encoded_cache' folder .* inside the 'out' folder") as raised:
            extmem.train(small_synth, preset="splice-sites", rounds=1, out=out, encoded_cache=inside, cache_dir=tmp_path)
        assert set(raised.value.options) == {"encoded_cache", "out"}
    assert os.listdir(tmp_path) == []
    beside = tmp_path / "rows"
    extmem.train(small_synth, preset="splice-sites", rounds=1, out=out, encoded_cache=beside, cache_dir=tmp_path)
    assert len(_entries(beside)) == 1 and sorted(os.listdir(out)) == ["model.ubj", "report.json"]
