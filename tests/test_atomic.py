"""Atomic output files: unique partial names, no symlink followed, last complete writer wins, killed writers swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extmem._atomic import PARTIAL_SUFFIX, atomic_file, sweep_partials, write_json
from extmem._destinations import check_output_file, publish_folder, staging_folder
from extmem._sink import TableSink
from extmem.errors import OptionError
from extmem.read._discover import discover_shards


def test_an_error_while_writing_leaves_the_old_file_and_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), atomic_file(target) as file:
        file.write(b"{half")
        raise RuntimeError
    assert target.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.json"]


def test_a_folder_that_takes_no_new_file_is_named_by_the_file_being_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that refuses new files (/proc, a read-only mount) names the output, not the hidden partial extmem made there."""
    target = tmp_path / "out.parquet"

    def refuse(path: str | os.PathLike[str], *args: object) -> int:
        raise OSError(30, "Read-only file system", os.fspath(path))

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OSError, match="Read-only file system") as raised, atomic_file(target):
        pass
    assert raised.value.filename == str(target)


def test_standard_output_is_refused_as_an_output_file() -> None:
    with pytest.raises(OptionError, match="extmem writes files .* not standard output"):
        check_output_file("-", overwrite=True)


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "out.json"
    target.symlink_to(victim)
    write_json(target, [1])
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_text() == "[\n  1\n]\n"


def test_a_symlink_planted_at_the_partial_name_is_never_written_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    monkeypatch.setattr("extmem._atomic.secrets.token_hex", lambda _: "predictable")
    created = tmp_path / ".out.json.predictable.extmem-new"
    created.symlink_to(victim)
    with pytest.raises(FileExistsError):  # created exclusively: an existing name, link or not, is never opened
        write_json(tmp_path / "out.json", [1])
    created.unlink()
    renamed = tmp_path / f".out.json.predictable{PARTIAL_SUFFIX}"
    renamed.symlink_to(victim)
    write_json(tmp_path / "out.json", [1])  # the locked partial is renamed over the link, never written through it
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "out.json").is_symlink() and (tmp_path / "out.json").read_text() == "[\n  1\n]\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.json", "victim.txt"]


def test_partial_files_of_killed_writers_are_ignored_by_readers_and_swept_by_the_next_writer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"x": [1.0]}), data / "a.parquet")
    script = (
        "import sys, pyarrow as pa\n"
        "from extmem._sink import TableSink\n"
        "with TableSink(sys.argv[1], pa.schema([('x', pa.float64())]), row_group_rows=1) as sink:\n"
        "    sink.write(pa.record_batch({'x': [1.0]}))\n"
        "    print('writing', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(data / "b.parquet")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    (partial,) = [path for path in data.iterdir() if path.name.endswith(PARTIAL_SUFFIX)]
    assert sweep_partials(data) == [], "a live writer's partial is locked"
    os.kill(writer.pid, signal.SIGKILL)
    assert writer.wait() == -signal.SIGKILL
    assert partial.exists()
    assert discover_shards([str(data)]) == [str(data / "a.parquet")]
    write_json(data / "notes.json", {})
    assert not partial.exists()


WRITER = """
import sys, pyarrow as pa
from extmem._sink import TableSink
path, value, repeats = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
schema = pa.schema([("x", pa.float64())])
for _ in range(repeats):
    with TableSink(path, schema, row_group_rows=5000) as sink:
        for _ in range(20):
            sink.write(pa.record_batch({"x": [value] * 5000}))
"""


def test_concurrent_writers_of_one_file_publish_only_complete_files(tmp_path: Path) -> None:
    target = tmp_path / "preds.parquet"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(value), "15"]) for value in (1.0, 2.0, 3.0, 4.0)]
    seen = 0
    while any(writer.poll() is None for writer in writers):
        if target.exists():
            column = pq.read_table(target).column("x").to_pylist()
            assert len(column) == 100_000 and len(set(column)) == 1, "a torn or mixed file was published"
            seen += 1
    assert [writer.returncode for writer in writers] == [0, 0, 0, 0]
    assert seen > 0
    assert pq.read_table(target).num_rows == 100_000
    assert sorted(path.name for path in tmp_path.iterdir()) == ["preds.parquet"]


def test_a_parquet_sink_error_leaves_nothing(tmp_path: Path) -> None:
    schema = pa.schema([("x", pa.float64())])
    with pytest.raises(KeyboardInterrupt), TableSink(tmp_path / "p.parquet", schema) as sink:
        sink.write(pa.record_batch({"x": [1.0]}))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_without_replace_a_file_written_meanwhile_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    meanwhile = r"'.*out\.bin' was written by another run while this one ran; pass 'overwrite'"
    with pytest.raises(OptionError, match=meanwhile), atomic_file(target, replace=False) as file:
        file.write(b"mine")
        target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.bin"]
    with atomic_file(tmp_path / "new.bin", replace=False) as file:
        file.write(b"mine")
    assert (tmp_path / "new.bin").read_bytes() == b"mine"


@pytest.mark.parametrize("replace", [False, True])
def test_a_folder_filled_meanwhile_is_replaced_only_when_asked(tmp_path: Path, replace: bool) -> None:
    target = tmp_path / "out"
    with staging_folder(target) as staging:
        (staging.path / "mine.txt").write_text("mine")
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
        if replace:
            publish_folder(staging, target, replace=True)
        else:
            with pytest.raises(OptionError, match=r"'.*out' was written by another run while this one ran"):
                publish_folder(staging, target, replace=False)
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert [path.name for path in target.iterdir()] == (["mine.txt"] if replace else ["theirs.txt"])


def test_wide_rows_make_row_groups_of_fewer_rows_bounded_in_bytes(tmp_path: Path) -> None:
    """Rows of 10 kB (a kept sequence) end a row group once it holds the byte bound, not at 65,536 rows (655 MB held)."""
    schema = pa.schema([("sequence", pa.string()), ("i", pa.int64())])
    with TableSink(tmp_path / "wide.parquet", schema, row_group_bytes=2**20) as sink:
        for start in range(0, 2000, 50):
            sink.write(pa.record_batch({"sequence": ["ACGT" * 2500] * 50, "i": list(range(start, start + 50))}, schema=schema))
    metadata = pq.ParquetFile(tmp_path / "wide.parquet").metadata
    rows = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
    assert sum(rows) == 2000 and max(rows) <= 150  # 1 MiB of 10 kB rows, and the batch that crossed it
    assert pq.read_table(tmp_path / "wide.parquet").column("i").to_pylist() == list(range(2000))
    with TableSink(tmp_path / "narrow.parquet", schema, row_group_rows=1000) as sink:  # the default bound: 32 MiB
        for start in range(0, 2000, 50):
            sink.write(pa.record_batch({"sequence": ["ACGT"] * 50, "i": list(range(start, start + 50))}, schema=schema))
    assert pq.ParquetFile(tmp_path / "narrow.parquet").metadata.num_row_groups == 2
