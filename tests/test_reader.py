from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_shard

import extmem
from extmem import Dataset, InputPathError, LabelError, SchemaError, ShardReadError
from extmem._contracts import ReadCounters
from extmem._layout import FeatureLayout
from extmem.encode._blocks import Encoder
from extmem.encode._pages import read_pages
from extmem.errors import FilterError
from extmem.read import _scan
from extmem.read._discover import discover_shards
from extmem.read._reader import read_batches
from extmem.read._scan import scan
from extmem.read._selection import Selection, select_dataset


def read_all(selection: Selection, counters: ReadCounters | None = None) -> tuple[dict[str, list], list[float]]:
    """Every feature column as read (absent columns as nulls) and the labels."""
    columns: dict[str, list] = {name: [] for name in selection.layout.names}
    labels: list[float] = []
    for batch in read_batches(selection, selection.dataset.batch_rows, counters=counters):
        for name in selection.layout.names:
            present = batch.columns.schema.get_field_index(name) >= 0
            columns[name].extend(batch.columns.column(name).to_pylist() if present else [None] * batch.rows)
        labels.extend(batch.label.tolist())
    return columns, labels


def test_discovery_sorts_folder_shards_and_expands_globs(tmp_path: Path) -> None:
    for name in ("batch_00002.parquet", "batch_00001.parquet"):
        write_shard(tmp_path / name, {"x": [1]})
    (tmp_path / "notes.txt").write_text("not a shard")
    folder = discover_shards([str(tmp_path)])
    assert [Path(p).name for p in folder] == ["batch_00001.parquet", "batch_00002.parquet"]
    assert discover_shards([str(tmp_path / "batch_*2.parquet")]) == [str(tmp_path / "batch_00002.parquet")]


def test_an_existing_path_named_with_glob_characters_is_itself(tmp_path: Path) -> None:
    """A folder 'run[1]' or a file 'a?.parquet' that exists is read as named; only absent paths are patterns."""
    write_shard(tmp_path / "run[1]" / "a?.parquet", {"x": [1]})
    write_shard(tmp_path / "run1" / "b.parquet", {"x": [2]})
    assert discover_shards([str(tmp_path / "run[1]")]) == [str(tmp_path / "run[1]" / "a?.parquet")]
    assert discover_shards([str(tmp_path / "run[1]" / "a?.parquet")]) == [str(tmp_path / "run[1]" / "a?.parquet")]
    assert discover_shards([str(tmp_path / "run[0-9]" / "*.parquet")]) == [str(tmp_path / "run1" / "b.parquet")]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p / "absent", "does not exist"),
        (lambda p: p, "holds no .parquet files"),
        (lambda p: p / "*.parquet", "No file matches"),
    ],
)
def test_discovery_errors_name_the_path(tmp_path: Path, make, match: str) -> None:
    with pytest.raises(InputPathError, match=match):
        discover_shards([str(make(tmp_path))])


def test_union_promotes_int_and_float_and_keeps_first_seen_order(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1, 2], "y": [0.5, 1.5]})
    write_shard(tmp_path / "b.parquet", {"z": [3.0], "x": [1.5]})
    union = scan(discover_shards([str(tmp_path)]))
    assert list(union.columns) == ["x", "y", "z"]
    assert str(union.columns["x"].arrow_type) == "double"
    assert union.missing_from("y") == [str(tmp_path / "b.parquet")]
    assert union.rows == 3


def test_union_types_and_holders_whatever_order_the_types_come_in(tmp_path: Path) -> None:
    """A type seen again in the next shard is not merged twice; one seen before, then another, still promotes."""
    tables = {
        "a": pa.table({"x": pa.array([1], pa.int64()), "s": pa.array(["u"], pa.string())}),
        "b": pa.table({"x": pa.array([1.5], pa.float32()), "s": pa.array(["v"], pa.large_string())}),
        "c": pa.table({"x": pa.array([2.5], pa.float32()), "y": pa.array([3], pa.int32())}),
        "d": pa.table({"x": pa.array([4], pa.int64()), "y": pa.array([5], pa.int32())}),
    }
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
    union = scan(discover_shards([str(tmp_path)]))
    assert {name: str(column.arrow_type) for name, column in union.columns.items()} == {"x": "double", "s": "large_string", "y": "int32"}
    assert union.missing_from("x") == [] and union.missing_from("s") == [str(tmp_path / "c.parquet"), str(tmp_path / "d.parquet")]
    assert union.missing_from("y") == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    assert [union.columns[name].first_shard for name in ("x", "y")] == [str(tmp_path / "a.parquet"), str(tmp_path / "c.parquet")]


@pytest.mark.parametrize("room", [1, 1 << 30])
def test_footers_parsed_at_once_stay_within_the_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Each footer takes room for its estimated parsed size (at most the whole room): a room smaller than any footer parses one at a time."""
    for index in range(12):
        write_shard(tmp_path / f"s{index:02d}.parquet", {f"c{index}": [index], "x": [float(index)]})
    reference = scan(discover_shards([str(tmp_path)]))
    parsing, most, calls = [0], [0], [0]
    guard = threading.Lock()
    overlapped = threading.Event()
    parse = _scan._parse_footer

    def counted(*args: object) -> object:
        with guard:
            parsing[0] += 1
            most[0] = max(most[0], parsing[0])
            if parsing[0] > 1:
                overlapped.set()
            first = calls[0] == 0
            calls[0] += 1
        try:
            if first:  # the first parse holds on until another starts beside it (within the room, none can); the bounds hold either way
                overlapped.wait(timeout=1.0)
            return parse(*args)
        finally:
            with guard:
                parsing[0] -= 1

    monkeypatch.setattr(_scan, "FOOTER_ROOM", room)
    monkeypatch.setattr(_scan, "_parse_footer", counted)
    assert scan(discover_shards([str(tmp_path)])) == reference
    assert most[0] == 1 if room == 1 else 1 <= most[0] <= _scan.SCAN_THREADS


def test_string_vs_number_conflict_names_both_files(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1]})
    write_shard(tmp_path / "b.parquet", {"x": ["one"]})
    with pytest.raises(SchemaError, match=r"'x'.*a\.parquet.*b\.parquet"):
        scan(discover_shards([str(tmp_path)]))


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\0" * 64])
def test_unreadable_shard_is_named(tmp_path: Path, content: bytes) -> None:
    write_shard(tmp_path / "good.parquet", {"x": [1]})
    (tmp_path / "bad.parquet").write_bytes(content)
    with pytest.raises(ShardReadError, match="bad.parquet"):
        scan(discover_shards([str(tmp_path)]))


def test_truncated_data_pages_fail_while_reading_with_row_group_named(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "s.parquet", {"x": list(range(5000)), "splice_type": ["donor"] * 5000})
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[4:footer_start] = b"\xff" * (footer_start - 4)  # data pages garbage, footer intact
    path.write_bytes(bytes(data))
    source = select_dataset(Dataset(tmp_path, preset="splice-sites"))
    with pytest.raises(ShardReadError, match=r"row group 0 of .*s\.parquet"):
        read_all(source)


def test_missing_columns_are_nulls_and_strings_are_dropped_with_notice(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    extmem.synth(tmp_path, extmem.SynthOptions(rows=90, shards=3, k=4, seq_len=40))
    with caplog.at_level(logging.INFO, logger="extmem"):
        source = select_dataset(Dataset(tmp_path, preset="splice-sites"))
    assert "gene_type" in caplog.text and "sequence" in caplog.text
    assert not {"gene_id", "sequence", "gene_type", "splice_type"} & set(source.layout.names)
    shard_columns = [set(pq.read_schema(s).names) for s in source.schema.shards]
    partial = [n for n in source.layout.names if any(n not in cols for cols in shard_columns)]
    assert partial, "the synthetic shards should differ in their k-mer columns"
    columns, labels = read_all(source)
    assert len(labels) == 90
    first_shard_rows = source.schema.shard_rows[0]
    absent = next(n for n in partial if n not in shard_columns[0])
    assert columns[absent][:first_shard_rows] == [None] * first_shard_rows


def test_features_and_drop_select_features(small_synth: Path) -> None:
    source = select_dataset(Dataset(small_synth, preset="splice-sites", features=["donor_score", "4mer_*"], drop="4mer_AAAA"))
    assert source.layout.names[0] == "donor_score"
    assert all(n.startswith("4mer_") for n in source.layout.names[1:])
    assert "4mer_AAAA" not in source.layout.names
    assert source.dropped["4mer_AAAA"] == "in 'drop'"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"features": ["gene_type"]}, SchemaError, "'gene_type' is .*string.*cannot be a numeric feature; leave it out of the 'features'"),
        ({"features": ["nope*"]}, SchemaError, "The 'features' entry 'nope\\*' matches no column"),
        ({"drop": ["typo"]}, SchemaError, "The 'drop' entry 'typo'"),
        ({"label": "absent"}, LabelError, "'label' column 'absent' is in none"),
        ({"filter": "nope > 1"}, SchemaError, "'nope', which is in no shard"),
        ({"filter": "position >"}, FilterError, "Invalid 'filter'"),
    ],
)
def test_bad_selection_errors(small_synth: Path, options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        select_dataset(Dataset(small_synth, **options))


def test_labels_map_to_class_ids(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0, 3.0], "splice_type": ["neither", "donor", "acceptor"]})
    _, labels = read_all(select_dataset(Dataset(tmp_path, preset="splice-sites")))
    assert labels == [0.0, 1.0, 2.0]
    _, labels = read_all(select_dataset(Dataset(tmp_path, preset="splice-sites", label_map={"donor": 0, "acceptor": 1, "neither": 2})))
    assert labels == [2.0, 0.0, 1.0]


def test_unknown_and_null_labels_are_errors_naming_the_shard(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0], "splice_type": ["neither", "intron"]})
    with pytest.raises(LabelError, match=r"\['intron'\].*a\.parquet.*'label_map'"):
        read_all(select_dataset(Dataset(tmp_path, preset="splice-sites")))
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0], "splice_type": ["neither", None]})
    with pytest.raises(LabelError, match=r"1 null.*a\.parquet"):
        read_all(select_dataset(Dataset(tmp_path, preset="splice-sites")))
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0], "y": [0.0, float("nan")]})
    with pytest.raises(LabelError, match=r"label column 'y' has 1 null or non-finite"):
        read_all(select_dataset(Dataset(tmp_path, label="y")))


def test_label_missing_from_one_shard_is_named(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1.0], "splice_type": ["donor"]})
    write_shard(tmp_path / "b.parquet", {"x": [1.0]})
    with pytest.raises(LabelError, match=r"missing \(or null in every row\) from the shard .*b\.parquet"):
        select_dataset(Dataset(tmp_path, preset="splice-sites"))


def test_filter_prunes_row_groups_and_rows(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"position": list(range(1000)), "splice_type": ["neither"] * 1000}, row_group_size=100)
    source = select_dataset(Dataset(tmp_path, preset="splice-sites", filter="(position >= 250) & (position < 420)"))
    counters = ReadCounters()
    columns, _ = read_all(source, counters)
    assert columns["position"] == list(range(250, 420))
    assert counters.row_groups_read == 3  # row groups 2, 3 and 4 overlap [250, 420)
    assert counters.row_groups_skipped == 7


def test_filter_on_string_column_and_isin(small_synth: Path) -> None:
    source = select_dataset(Dataset(small_synth, preset="splice-sites", filter="chrom in ['chr1', 'chr2'] and strand == '+'"))
    rows = sum(b.rows for b in read_batches(source, 2048))
    table = pq.ParquetDataset(small_synth).read(columns=["chrom", "strand"]).to_pydict()
    expected = sum(c in ("chr1", "chr2") and s == "+" for c, s in zip(table["chrom"], table["strand"]))
    assert rows == expected > 0


def test_max_rows_and_batch_rows(small_synth: Path) -> None:
    source = select_dataset(Dataset(small_synth, preset="splice-sites", max_rows=1234, batch_rows=100))
    sizes = [b.rows for b in read_batches(source, source.dataset.batch_rows)]
    assert sum(sizes) == 1234 and max(sizes) == 100


def test_layout_forces_training_columns_on_other_data(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"b": [2.0], "extra": [9.0], "splice_type": ["donor"]})
    layout = FeatureLayout.build(["a", "b"], r"^\d+mer_")
    source = select_dataset(Dataset(tmp_path, preset="splice-sites"), layout=layout)
    columns, _ = read_all(source)
    assert columns == {"a": [None], "b": [2.0]}


def test_weight_column(tmp_path: Path) -> None:
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0], "w": [0.5, 2], "splice_type": ["donor", "neither"]})
    source = select_dataset(Dataset(tmp_path, preset="splice-sites", weight="w"))
    assert source.layout.names == ("x",)
    weights = np.concatenate([b.weight for b in read_batches(source, 2048)])
    assert weights.tolist() == [0.5, 2.0]


def test_a_shard_without_any_feature_column_keeps_its_rows(tmp_path: Path) -> None:
    """Its rows are read as missing values, not dropped (a zero-column batch still has rows): training sees all 7."""
    write_shard(tmp_path / "a.parquet", {"x": [1.0, 2.0, 3.0, 4.0], "splice_type": ["donor", "neither", "acceptor", "neither"]})
    write_shard(tmp_path / "b.parquet", {"other": ["p", "q", "r"], "splice_type": ["donor", "neither", "acceptor"]})
    selection = select_dataset(Dataset(tmp_path, preset="splice-sites"))
    assert [(Path(batch.shard).name, batch.rows) for batch in read_batches(selection, 128)] == [("a.parquet", 4), ("b.parquet", 3)]
    assert extmem.train(tmp_path, preset="splice-sites", rounds=1).report["rows"] == 7


@pytest.mark.parametrize(
    "options",
    [{}, {"filter": "position > 100"}, {"holdout": extmem.Holdout(0.2, seed=1, side="valid")}],
    ids=["all rows", "filter", "holdout"],
)
def test_a_reading_pass_leaves_no_reference_cycles(small_synth: Path, tmp_path: Path, options: dict) -> None:
    """A parsed footer caught in a reference cycle (pyarrow's FileMetaData.schema) is freed only by a garbage
    collection, which reading rarely triggers: 817k rows in 4 wide shards held 690 MB of them and broke a 1 GiB budget."""
    packed = tmp_path / "packed"
    extmem.pack(small_synth, packed)
    for data in (small_synth, packed):
        gc.collect()
        gc.disable()
        try:
            selection = select_dataset(Dataset(data, preset="splice-sites", **options))  # the scan reads every footer
            rows = sum(page.rows for page in read_pages(selection, Encoder(selection.layout), 300, 1000))
            rows += sum(batch.rows for batch in read_batches(selection, 300, whole_rows=300))  # predictions' pass
            found = gc.collect()
        finally:
            gc.enable()
        assert rows > 0
        assert found == 0, f"{data.name}: {found} objects in reference cycles"
