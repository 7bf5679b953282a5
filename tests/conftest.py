"""Shared fixtures: synthetic datasets, hand-written shards, and cache-folder checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import extmem
from extmem._contracts import Block
from extmem._folders import CACHE_PREFIX as PREFIX
from extmem._folders import LOCK_FILE
from extmem.encode._blocks import Encoder
from extmem.encode._pages import concat_blocks
from extmem.read._discover import discover_shards
from extmem.read._reader import read_batches
from extmem.read._selection import Selection


@pytest.fixture(scope="session", autouse=True)
def sigint_not_ignored() -> None:
    """Tests send SIGINT to this process and to child processes. A run started as a background
    job ignores SIGINT, and children would inherit that; a handled signal resets to the default
    in a child, so Python installs its own handler there again."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 rows in 3 shards of 4-mer data (256 k-mer columns, differing per shard)."""
    out = tmp_path_factory.mktemp("small_synth")
    extmem.synth(out, extmem.SynthOptions(rows=3000, shards=3, k=4, seq_len=40, row_group_rows=500, seed=7))
    return out


@pytest.fixture(scope="session")
def model_dir(small_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15-round model of ``small_synth`` (read only: tests that change a model copy it)."""
    out = tmp_path_factory.mktemp("model")
    extmem.train(small_synth, preset="splice-sites", out=out, rounds=15, params={"max_depth": 4})
    return out


@pytest.fixture(scope="session")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 rows of the same kind as ``small_synth``, from another seed: data a model has not seen."""
    out = tmp_path_factory.mktemp("held_out")
    extmem.synth(out, extmem.SynthOptions(rows=1200, shards=2, k=4, seq_len=40, row_group_rows=300, seed=21))
    return out


@pytest.fixture(scope="session")
def wide_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 rows in 2 shards of 6-mer data: the real width (~4,100 columns)."""
    out = tmp_path_factory.mktemp("wide_synth")
    extmem.synth(out, extmem.SynthOptions(rows=4000, shards=2, k=6, row_group_rows=1000, seed=3))
    return out


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    """An empty folder to hold extmem's private cache folders."""
    root = tmp_path / "cache-root"
    root.mkdir()
    return root


def cache_dirs(root: Path | str | None = None) -> list[Path]:
    """extmem cache folders currently under ``root`` (default: the system temp folder)."""
    return sorted(Path(root or tempfile.gettempdir()).glob(PREFIX + "*"))


@pytest.fixture(autouse=True)
def no_cache_left_in_tmp() -> Iterator[None]:
    """Every test must leave no cache folder of this process in the system temp folder."""
    before = set(cache_dirs())
    yield
    leaked = [d for d in set(cache_dirs()) - before if f'"pid": {os.getpid()}' in _marker(d)]
    assert not leaked, f"cache folders left behind: {leaked}"


def _marker(directory: Path) -> str:
    try:
        return (directory / "owner.json").read_text()
    except OSError:
        return ""


def write_shard(path: Path, columns: dict[str, list], row_group_size: int | None = None) -> Path:
    """Write one parquet shard from column lists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def with_broken_shard(source: Path, folder: Path) -> Path:
    """``folder`` holding a copy of the shards of ``source`` and, last in order, ``zz_broken.parquet``, which no reader can read."""
    folder.mkdir(parents=True)
    for shard in discover_shards([str(source)]):
        (folder / Path(shard).name).write_bytes(Path(shard).read_bytes())
    (folder / "zz_broken.parquet").write_bytes(b"PAR1" + b"\0" * 100 + b"PAR1")
    return folder


def kill_while_staging(command: list[str], staging_parent: Path, staging_prefix: str) -> None:
    """Run ``command`` and SIGKILL it as soon as its staging folder holds output (a shard being written).

    Fails if the command ends on its own first, so a test cannot pass without the kill it claims to test.
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(staging_prefix) and _holds_output(p) for p in _entries(staging_parent)):
        assert process.poll() is None and time.monotonic() < deadline, f"{command[3]} ended before it could be killed"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, f"{command[3]} finished before the kill landed"


def _entries(folder: Path) -> list[Path]:
    """The folder's entries that are folders (staging folders come and go while they are listed)."""
    try:
        return [entry for entry in folder.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []


def _holds_output(staging: Path) -> bool:
    try:
        return any(entry.name != LOCK_FILE for entry in staging.iterdir())
    except FileNotFoundError:
        return False


def encoded(selection: Selection, batch_rows: int | None = None, refs: list | None = None) -> list[Block]:
    """The selection read and encoded batch by batch, as extmem streams it."""
    encoder = Encoder(selection.layout, strict_categories=selection.dataset.strict_categories)
    return [encoder(batch) for batch in read_batches(selection, batch_rows or selection.dataset.batch_rows, refs)]


def all_rows(selection: Selection) -> Block:
    """The whole selection as one block."""
    return concat_blocks(encoded(selection))


@pytest.fixture(autouse=True)
def restore_signals() -> Iterator[None]:
    """The signal handlers as they were, after every test (the command line run in-process installs its own)."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)}
    unraisablehook = sys.unraisablehook
    yield
    sys.unraisablehook = unraisablehook
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
