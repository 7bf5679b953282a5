"""Memory plans: sizes, cache kind and refusals under a budget; the data limit as a budget; prefetch and cache kinds agree."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from conftest import cache_dirs, encoded

import extmem
from extmem._contracts import DataProfile
from extmem._defaults import DEFAULT_PAGE_ROWS
from extmem._units import format_size, parse_size
from extmem.encode._probe import profile
from extmem.read._budget import Budget, data_limit
from extmem.read._costs import (
    LARGE_GROUP_BATCHES,
    READER_BYTES_PER_COLUMN,
    UNBUDGETED_PAGE_BYTES,
    decode_bytes,
    page_bytes,
)
from extmem.read._dataset import Dataset
from extmem.read._plan import MAX_PAGE_ROWS, MIN_BATCH_ROWS, MIN_PAGE_ROWS, fixed_bytes, plan_batches, plan_memory
from extmem.read._selection import select_dataset
from extmem.xgb._matrix import matrix_info

MiB = 2**20
WIDE = DataProfile(rows=640_000, arrow_bytes_per_row=33_500, stored_values_per_row=120, outputs=3)
FIXED = 400 * MiB


def _budget(size: str) -> Budget:
    return Budget(parse_size(size), "--memory-budget")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2 * 10**9),
        ("2GiB", 2 * 2**30),
        ("2G", 2 * 2**30),
        ("1.5GiB", 3 * 2**29),
        ("800M", 800 * MiB),
        ("800 mb", 800 * 10**6),
        ("800MiB", 800 * MiB),
        ("1073741824", 2**30),
        ("64k", 65536),
    ],
)
def test_sizes_read_like_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("size", "text"),
    [(3 * 2**29, "1.50 GiB"), (640 * MiB, "640 MiB"), (0, "0 MiB"), (MiB // 4, "0.25 MiB"), (1024, "1,024 bytes")],
)
def test_sizes_are_written_so_a_small_one_is_not_zero(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(("requested", "size"), [(np.int64(2**31), 2**31), (1.5e9, 1_500_000_000), ("2GiB", 2**31)])
def test_a_budget_is_bytes_or_text(requested: object, size: int) -> None:
    budget = Budget.resolve(requested)  # type: ignore[arg-type]
    assert budget is not None and budget.bytes == min(size, data_limit() or size)


@pytest.mark.parametrize("requested", [True, 1.5, [2**30]])
def test_a_budget_of_another_kind_is_refused_not_guessed(requested: object) -> None:
    with pytest.raises(extmem.OptionError, match=r"The 'memory_budget' must be a size in bytes or text such as '2GiB'"):
        Budget.resolve(requested)  # type: ignore[arg-type]


def test_an_unreadable_size_names_itself() -> None:
    with pytest.raises(extmem.OptionError, match="'2 parsecs'"):
        parse_size("2 parsecs")


@pytest.mark.parametrize("values_per_row", [2, 120, 4_000])
@pytest.mark.parametrize("rows", [3_000, 160_000, 5_000_000])
def test_unbudgeted_pages_are_the_fewest_that_stay_under_the_page_bytes(rows: int, values_per_row: int) -> None:
    """XGBoost reads each page of its disk cache at every tree level: without a budget, pages are as large as the page bytes allow."""
    data = DataProfile(rows=rows, arrow_bytes_per_row=8.0 * values_per_row, stored_values_per_row=values_per_row, outputs=3)
    plan = plan_memory(data, None, batch_rows=2048, cache="disk", fixed=FIXED)
    assert MIN_PAGE_ROWS <= plan.page_rows <= MAX_PAGE_ROWS
    building = page_bytes(data, plan.page_rows - MIN_PAGE_ROWS, prefetch=0)  # pages are whole multiples of MIN_PAGE_ROWS
    assert building <= UNBUDGETED_PAGE_BYTES or plan.page_rows <= DEFAULT_PAGE_ROWS
    if plan.page_rows < min(rows, MAX_PAGE_ROWS):  # smaller than the data: a larger page would cost too much to build
        assert page_bytes(data, plan.page_rows + MIN_PAGE_ROWS, prefetch=0) > UNBUDGETED_PAGE_BYTES


def test_plans_stay_under_their_budget_and_grow_with_it() -> None:
    sizes = ("600MiB", "800MiB", "1GiB", "2GiB", "8GiB")
    plans = [plan_memory(WIDE, _budget(size), batch_rows=2048, page_rows=32768, fixed=FIXED) for size in sizes]
    for plan in plans:
        assert plan.budget is not None and plan.expected_peak_bytes <= plan.budget.bytes
    assert [p.batch_rows for p in plans] == sorted(p.batch_rows for p in plans)
    assert [p.page_rows for p in plans] == sorted(p.page_rows for p in plans)
    assert plans[0].batch_rows < 2048, "the tightest budget gets smaller batches once no page size leaves room for 2,048 rows"
    assert plans[1].batch_rows == 2048 and plans[1].page_rows < 32768, (
        "a tight budget gets smaller pages first: small batches decode slowly"
    )
    assert plans[-1].batch_rows == 2048 and plans[-1].page_rows == 32768, "ample budgets get the given sizes"
    assert plans[0].cache == "disk" and plans[-1].cache == "memory"
    assert "would crowd the budget" in plans[0].reason and "fits the budget with room to spare" in plans[-1].reason


def test_a_budget_that_cannot_hold_one_batch_is_refused() -> None:
    with pytest.raises(extmem.OptionError, match=r"A memory budget of 300 MiB \(--memory-budget\) is too small: the leanest plan"):
        plan_memory(WIDE, _budget("300MiB"), batch_rows=2048, page_rows=8192, fixed=FIXED)
    smallest = plan_memory(WIDE, _budget("600MB"), batch_rows=2048, page_rows=8192, fixed=FIXED)
    assert smallest.batch_rows >= MIN_BATCH_ROWS


def test_memory_cache_on_request_is_refused_when_the_matrix_cannot_fit() -> None:
    huge = DataProfile(rows=50_000_000, arrow_bytes_per_row=500, stored_values_per_row=100)
    with pytest.raises(extmem.OptionError, match="try 'cache' disk"):
        plan_memory(huge, _budget("4GiB"), batch_rows=2048, page_rows=8192, cache="memory", fixed=FIXED)
    assert plan_memory(huge, _budget("4GiB"), batch_rows=2048, page_rows=8192, fixed=FIXED).cache == "disk"


def test_without_a_budget_the_given_sizes_stand() -> None:
    plan = plan_memory(WIDE, None, batch_rows=4096, page_rows=16384, cache="disk", fixed=FIXED)
    assert (plan.batch_rows, plan.page_rows, plan.cache, plan.reason) == (4096, 16384, "disk", "asked for")


def test_row_batches_of_a_large_row_group_are_planned_larger() -> None:
    """One row group of 120,000 rows (as ``DataFrame.to_parquet`` writes a shard) decodes in row batches at about twice the
    memory of 4,096-row groups; read whole (a row group of at most half a page), it decodes in column parts."""
    small = DataProfile(rows=640_000, arrow_bytes_per_row=37_000, stored_values_per_row=120, outputs=3, row_group_rows=4096, columns=4099)
    large = DataProfile(**{**small.__dict__, "row_group_rows": 120_000})
    assert decode_bytes(large, 2048) >= 1.7 * decode_bytes(small, 2048)
    assert decode_bytes(large, 2048, whole_rows=120_000) == decode_bytes(small, 2048, whole_rows=4096)  # whole, in column parts
    in_batches, whole = decode_bytes(small, 2048), decode_bytes(small, 2048, whole_rows=4096)
    assert in_batches - whole == READER_BYTES_PER_COLUMN * 4099  # a reader each
    assert decode_bytes(small, 4096 // LARGE_GROUP_BATCHES) == decode_bytes(small, 4096 // LARGE_GROUP_BATCHES, whole_rows=0)
    lean, spacious = (plan_memory(data, _budget("1GiB"), batch_rows=2048, page_rows=32768, fixed=FIXED) for data in (large, small))
    assert lean.expected_peak_bytes <= 2**30 and lean.batch_rows * lean.page_rows < spacious.batch_rows * spacious.page_rows


def test_a_pass_reads_row_groups_whole_where_that_holds_less() -> None:
    """55,000 columns in row groups of 4,000 rows: row batches of every column hold a reader per column (537 MiB), so a
    pass reads each row group whole, in column parts, and handles its rows at once; unless those rows hold more (explain)."""
    wide = DataProfile(rows=8000, arrow_bytes_per_row=500_000, stored_values_per_row=300, outputs=3, row_group_rows=4000, columns=55_000)
    predict = plan_batches(wide, _budget("1GiB"), batch_rows=2048, fixed=FIXED)
    assert predict.page_rows == 4000 and predict.batch_rows < 4000
    assert predict.decode_bytes < decode_bytes(wide, predict.batch_rows) - READER_BYTES_PER_COLUMN * 55_000  # no reader per column
    explain = plan_batches(wide, None, batch_rows=2048, row_bytes=3 * 55_000 * 4 * 3, fixed=FIXED)  # every contribution
    assert explain.page_rows == explain.batch_rows < 4000
    narrow = replace(wide, arrow_bytes_per_row=900, row_group_rows=1000, columns=100)
    assert plan_batches(narrow, None, batch_rows=2048, fixed=FIXED).page_rows == 2048  # groups smaller than a batch come whole anyway


@pytest.fixture(scope="module")
def one_large_row_group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60,000 rows of the 4,096 6-mer count columns (uint8, mostly zero) in a single row group."""
    folder = tmp_path_factory.mktemp("one_row_group")
    rng = np.random.default_rng(0)
    rows = 60_000
    columns: dict[str, np.ndarray] = {}
    for kmer in itertools.product("ACGT", repeat=6):
        counts = np.zeros(rows, dtype=np.uint8)
        counts[rng.integers(0, rows, rows // 40)] = rng.integers(1, 4, rows // 40)
        columns["6mer_" + "".join(kmer)] = counts
    columns["splice_type"] = np.array(["neither", "donor", "acceptor"])[rng.integers(0, 3, rows)]
    pq.write_table(pa.table(columns), folder / "a.parquet", row_group_size=rows)
    return folder


@pytest.fixture(scope="module")
def large_group_model(one_large_row_group: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = tmp_path_factory.mktemp("large_group") / "model"
    extmem.train(one_large_row_group, preset="splice-sites", out=model, rounds=2)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "predict", "explain"])
def test_a_budget_accepted_for_one_large_row_group_holds(
    one_large_row_group: Path, large_group_model: Path, tmp_path: Path, command: str
) -> None:
    """Under the kernel's data limit, a run completes or refuses the budget before any work: never out of memory.

    The plan counted row batches of such a row group as of small ones (512 MiB ran out of memory in training), and the
    output sink's small pending batches pinned glibc's heap (explain ran out of memory under 512 MiB).
    """
    model = large_group_model
    completed = []
    for limit in (512 * MiB, 768 * MiB):
        out = tmp_path / f"{command}-{limit}" / ("p.parquet" if command == "predict" else "o")
        arguments = (
            [str(one_large_row_group), "--out", str(out)]
            if command == "train"
            else [str(model), str(one_large_row_group), "--out", str(out)]
        )
        limited = ["prlimit", f"--data={limit}", sys.executable, "-m", "extmem", command, *arguments, "--no-progress"]
        run = subprocess.run(
            [*limited, *(["--rounds", "2", "--cache-dir", str(tmp_path)] if command == "train" else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        assert "out of memory" not in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert run.returncode == 0 or "is too small:" in run.stderr, run.stderr
        completed.append(run.returncode == 0)
    assert completed[-1], "768 MiB holds a plan"
    assert cache_dirs(tmp_path) == []


@pytest.mark.slow
def test_a_budget_accepted_for_long_sequences_counted_into_kmers_holds(tmp_path: Path) -> None:
    """8,192 windows of 10,000 bases (k=6: ~3,700 distinct k-mers a row) under 768 MiB and 1 GiB data limits: counting a
    batch summed all its windows at once (940 MiB for 2,048 rows) and ran out of memory under 1 GiB; rows are now finished
    chunk by chunk."""
    rng = np.random.default_rng(0)
    rows, length = 8192, 10_000
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size=rows * length)].tobytes()
    offsets = pa.py_buffer(np.arange(0, rows * length + 1, length, dtype=np.int64).tobytes())
    sequences = pa.LargeStringArray.from_buffers(rows, offsets, pa.py_buffer(bases))
    labels = np.array(["neither", "donor", "acceptor"])[rng.integers(0, 3, rows)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"sequence": sequences, "splice_type": labels}), tmp_path / "data" / "a.parquet", row_group_size=rows)
    del bases, sequences
    command = [sys.executable, "-m", "extmem", "train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--kmers-from", "sequence"]
    command += ["--k", "6", "--rounds", "2", "--cache-dir", str(tmp_path), "--no-progress"]
    for limit in (768 * MiB, 1024 * MiB):  # the larger limit plans larger batches
        run = subprocess.run(["prlimit", f"--data={limit}", *command, "--overwrite"], capture_output=True, text=True, check=False)
        assert "out of memory" not in run.stderr and "Traceback" not in run.stderr, f"{limit // MiB} MiB: {run.stderr}"
        assert run.returncode == 0 or (limit < 2**30 and "is too small:" in run.stderr), run.stderr
    assert json.loads((tmp_path / "m" / "report.json").read_text())["features"] == 4**6  # 1 GiB holds a plan
    assert cache_dirs(tmp_path) == []


@pytest.mark.slow
def test_a_budget_accepted_for_wide_output_rows_holds(one_large_row_group: Path, large_group_model: Path, tmp_path: Path) -> None:
    """Outputs whose rows are wide: predictions keeping a 20 kB text column, every contribution of 4,096 features. Their
    sinks held 65,536 rows (predict ran out of memory under 768 MiB) and the parquet writer's metadata of every row group
    grew with the columns (explain aborted on std::bad_alloc under 1 GiB); each now completes or refuses before any work."""
    rng = np.random.default_rng(0)
    rows = 20_000
    table = pa.table({"x": rng.normal(size=rows), "note": ["A" * 20_000] * rows, "y": rng.integers(0, 2, rows)})
    (tmp_path / "notes").mkdir()
    pq.write_table(table, tmp_path / "notes" / "a.parquet")
    extmem.train(tmp_path / "notes", label="y", out=tmp_path / "m", rounds=2, cache_dir=tmp_path)
    cases = {
        "predict": ([str(tmp_path / "m"), str(tmp_path / "notes"), "--keep", "note", "--out", str(tmp_path / "p.parquet")], 768),
        "explain": ([str(large_group_model), str(one_large_row_group), "--full", "*", "--out", str(tmp_path / "e")], 1024),
    }
    for command, (arguments, limit) in cases.items():
        limited = ["prlimit", f"--data={limit * MiB}", sys.executable, "-m", "extmem", command, *arguments, "--no-progress"]
        run = subprocess.run(limited, capture_output=True, text=True, check=False)
        assert run.returncode in (0, 2) and "out of memory" not in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert run.returncode == 0 or "is too small:" in run.stderr, run.stderr
    assert (tmp_path / "p.parquet").exists(), "the predictions fit 768 MiB"
    assert pq.read_table(tmp_path / "p.parquet", columns=["note"]).num_rows == rows


@pytest.mark.slow
def test_a_budget_accepted_for_tens_of_thousands_of_columns_holds(tmp_path: Path) -> None:
    """30,000 8-mer count columns: a reader per column (10 KiB each) for a row batch of every column, in the probe before
    any plan and in batches the plan did not count, aborted on std::bad_alloc under 512 MiB and ran out of memory under 640.
    Predictions read row groups larger than their batches in row batches of every column, refused under 640 MiB (1.6 GiB
    planned; 3.8 GiB unbudgeted for 55,000 columns); they read them whole, in column parts, as training does."""
    rng = np.random.default_rng(0)
    rows = 2000
    columns: dict[str, np.ndarray] = {}
    for kmer in itertools.islice(itertools.product("ACGT", repeat=8), 30_000):
        counts = np.zeros(rows, dtype=np.uint8)
        counts[rng.integers(0, rows, 8)] = 1
        columns["8mer_" + "".join(kmer)] = counts
    columns["splice_type"] = np.array(["neither", "donor", "acceptor"])[rng.integers(0, 3, rows)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table(columns), tmp_path / "data" / "a.parquet", row_group_size=1000)
    del columns
    command = [sys.executable, "-m", "extmem", "train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--rounds", "2"]
    command += ["--preset", "splice-sites", "--cache-dir", str(tmp_path), "--overwrite", "--no-progress"]
    for limit in (512 * MiB, 640 * MiB):
        run = subprocess.run(["prlimit", f"--data={limit}", *command], capture_output=True, text=True, check=False)
        assert run.returncode in (0, 2) and "out of memory" not in run.stderr, f"{limit // MiB} MiB: {run.stderr}"
        assert run.returncode == 0 or "is too small:" in run.stderr, run.stderr
    assert run.returncode == 0, "640 MiB holds a plan"
    assert cache_dirs(tmp_path) == []
    predict = [sys.executable, "-m", "extmem", "predict", str(tmp_path / "m"), str(tmp_path / "data"), "--out", str(tmp_path / "p.parquet")]
    predict += ["--batch-rows", "256", "--no-progress"]  # row groups larger than a batch
    run = subprocess.run(["prlimit", f"--data={640 * MiB}", *predict], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert "row groups of up to 1,000 rows whole" in run.stderr
    assert pq.read_metadata(tmp_path / "p.parquet").num_rows == rows
    library = f"import extmem; print(len(extmem.Model.load({str(tmp_path / 'm')!r}).predict(extmem.Dataset({str(tmp_path / 'data')!r}, batch_rows=256))))"
    run = subprocess.run(["prlimit", f"--data={640 * MiB}", sys.executable, "-c", library], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.split() == [str(rows)], run.stderr  # the library's predictions are planned too


@pytest.mark.slow
def test_a_budget_the_probe_cannot_hold_is_refused_before_any_row_is_read(tmp_path: Path) -> None:
    """55,000 count columns under a 512 MiB data limit: the probe of the first rows, before any plan, ran out of memory
    (with more row groups, pyarrow aborted the process on std::bad_alloc building the footer's schema)."""
    rng = np.random.default_rng(0)
    rows, width = 1000, 55_000
    counts = np.zeros((width, rows), dtype=np.uint8)
    counts[rng.integers(0, width, 4 * rows), rng.integers(0, rows, 4 * rows)] = 1
    names = ["8mer_" + "".join(kmer) for kmer in itertools.islice(itertools.product("ACGT", repeat=8), width)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({**dict(zip(names, counts)), "y": rng.integers(0, 2, rows)}), tmp_path / "data" / "a.parquet")
    del counts
    command = [sys.executable, "-m", "extmem", "train", str(tmp_path / "data"), "--label", "y", "--out", str(tmp_path / "m")]
    run = subprocess.run(["prlimit", f"--data={512 * MiB}", *command, "--no-progress"], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "out of memory" not in run.stderr, run.stderr
    assert "is too small: before any row is read" in run.stderr and "reading the first rows of 55,000 features" in run.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_a_budget_accepted_for_a_categorical_feature_of_many_categories_holds(tmp_path: Path) -> None:
    """A categorical feature of 300,000 gene ids: XGBoost gives it a histogram bin per category, max_bin aside, which the
    plan's bins (from the probe's first rows) missed: planned 362 MiB, std::bad_alloc in boosting under 512 MiB."""
    rng = np.random.default_rng(0)
    rows = 300_000
    genes = [f"ENSG{i:011d}" for i in rng.permutation(rows)]
    table = pa.table(
        {"x": rng.normal(size=rows), "gene_id": genes, "splice_type": np.array(["donor", "neither"])[rng.integers(0, 2, rows)]}
    )
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "a.parquet", row_group_size=50_000)
    command = [sys.executable, "-m", "extmem", "train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--rounds", "2"]
    command += ["--categorical", "gene_id", "--max-categories", "400000", "--cache-dir", str(tmp_path), "--overwrite", "--no-progress"]
    for limit in (512 * MiB, 768 * MiB):
        run = subprocess.run(["prlimit", f"--data={limit}", *command], capture_output=True, text=True, check=False)
        assert run.returncode in (0, 2) and "out of memory" not in run.stderr and "bad_alloc" not in run.stderr, run.stderr
        assert run.returncode == 0 or "XGBoost's state for the feature space (fewer features, categories" in run.stderr, run.stderr
    assert run.returncode == 0, "768 MiB holds a plan"
    assert cache_dirs(tmp_path) == []


def test_the_profile_measures_the_first_rows(wide_synth: Path) -> None:
    source = select_dataset(Dataset(wide_synth, preset="splice-sites"))
    measured = profile(source, outputs=3)
    assert measured.rows == 4000 and measured.footer_bytes > 0
    first = encoded(source)[0]
    stored = first.stored_values / first.rows
    assert measured.stored_values_per_row == pytest.approx(stored, rel=0.5)
    assert measured.arrow_bytes_per_row >= 8 * len(source.layout.names) * 0.9, "wide float64 columns: about 8 bytes per column and row"


def _python_under_limit(limit: int, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["prlimit", f"--data={limit}", sys.executable, "-c", script], capture_output=True, text=True, check=False)


def test_the_data_limit_is_the_default_budget_and_caps_a_larger_one() -> None:
    script = "from extmem.read._budget import Budget; print(Budget.resolve(None)); print(Budget.resolve('64GiB'))"
    run = _python_under_limit(8 * 2**30, script)
    assert run.returncode == 0, run.stderr
    default, capped = run.stdout.splitlines()
    assert "bytes=8589934592" in default and "prlimit --data" in default
    assert "bytes=8589934592" in capped and "below the requested 64.00 GiB" in capped


def test_the_library_under_a_data_limit_sets_up_the_allocators_as_the_command_line_does() -> None:
    """A library user's process under ``prlimit --data`` gets capped arenas and pyarrow's system pool at ``import extmem``,
    one given a ``memory_budget`` when the run plans: the plan then counts the smaller runtime reserve, as for the command line;
    without either nothing changes."""
    script = (
        "import os, extmem, pyarrow as pa; from extmem._allocators import allocators_limited; "
        "print(allocators_limited(), pa.default_memory_pool().backend_name)"
    )
    assert _python_under_limit(4 * 2**30, script).stdout.split() == ["True", "system"]
    environment = {name: value for name, value in os.environ.items() if name not in ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX")}
    unlimited = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, env=environment)
    assert unlimited.stdout.split()[0] == "False"
    budgeted = script.replace("print(", "from extmem.read._budget import Budget; Budget.resolve('1GiB'); print(")
    run = subprocess.run([sys.executable, "-c", budgeted], capture_output=True, text=True, check=False, env=environment)
    assert run.stdout.split() == ["True", "system"], run.stderr  # a run given memory_budget plans as the command line does


def test_a_refused_budget_says_when_libraries_were_imported_before_extmem(small_synth: Path) -> None:
    """Under a data limit, numpy imported first starts OpenBLAS's threads (a buffer each) before extmem can limit them: the
    process holds more than the command line's, and the refusal says what to change."""
    script = f"{{}}import extmem; extmem.train({str(small_synth)!r}, preset='splice-sites', rounds=1)"
    late, first = (_python_under_limit(360 * MiB, script.format(imports)) for imports in ("import numpy, pyarrow; ", ""))
    assert "is too small" in late.stderr and "(numpy, pyarrow imported before extmem" in late.stderr, late.stderr[-800:]
    assert "import extmem first" in late.stderr
    assert first.returncode == 0 or "is too small" in first.stderr, first.stderr[-800:]  # held, or refused for the data alone
    assert "imported before extmem" not in first.stderr


def test_training_under_a_data_limit_plans_for_it_and_completes(small_synth: Path, tmp_path: Path) -> None:
    """The kernel enforces the limit: any allocation beyond it fails, so completing is the proof.

    1 GiB, or more on machines with many cores, whose thread stacks the data limit counts too.
    """
    limit = max(2**30, -(-(fixed_bytes() + 256 * MiB) // 2**30) * 2**30)  # whole GiB
    command = ["prlimit", f"--data={limit}", sys.executable, "-m", "extmem", "train", str(small_synth), "--out", str(tmp_path / "m")]
    run = subprocess.run(
        [*command, "--rounds", "3", "--no-progress", "--cache-dir", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert f"memory plan: budget {format_size(limit)} (the process's data limit (prlimit --data))" in run.stderr
    plan = json.loads((tmp_path / "m" / "report.json").read_text())["memory_plan"]["train"]
    assert plan["budget_bytes"] == limit and plan["expected_peak_bytes"] <= limit
    assert cache_dirs(tmp_path) == []


def test_a_budget_too_small_is_a_clear_error_that_leaves_nothing(small_synth: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "extmem", "train", str(small_synth), "--out", str(tmp_path / "m"), "--memory-budget", "200MiB"]
    run = subprocess.run([*command, "--no-progress", "--cache-dir", str(tmp_path)], capture_output=True, text=True, check=False)
    assert run.returncode == 2, run.stderr
    assert "extmem: error: A memory budget of 200 MiB (--memory-budget) is too small: " in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_bad_budget_flag_is_refused_by_name(small_synth: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "extmem", "train", str(small_synth), "--out", "x", "--memory-budget", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2 and "--memory-budget: expected a size such as 2GiB" in run.stderr


def _predictions(matrix: xgb.DMatrix) -> np.ndarray:
    params = {"tree_method": "hist", "objective": "multi:softprob", "num_class": 3, "max_depth": 4, "seed": 0}
    return xgb.train(params, matrix, 5).predict(matrix)


def test_prefetch_and_cache_kind_do_not_change_the_model(small_synth: Path, cache_root: Path) -> None:
    reference = extmem.dmatrix(small_synth, preset="splice-sites", cache="disk", prefetch=0, cache_dir=cache_root)
    expected = _predictions(reference)
    assert matrix_info(reference).plan.cache == "disk"
    for cache, prefetch in (("disk", 2), ("memory", 0), ("memory", 1)):
        matrix = extmem.dmatrix(small_synth, preset="splice-sites", cache=cache, prefetch=prefetch, cache_dir=cache_root)
        assert isinstance(matrix, xgb.QuantileDMatrix) != (cache == "disk")
        np.testing.assert_allclose(_predictions(matrix), expected, rtol=1e-5, atol=1e-6)
        assert matrix.num_row() == reference.num_row() and matrix.num_nonmissing() == reference.num_nonmissing()


def test_a_read_error_in_the_prefetch_thread_reaches_the_caller(small_synth: Path, tmp_path: Path, cache_root: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for shard in sorted(small_synth.glob("*.parquet")):
        (data / shard.name).write_bytes(shard.read_bytes())
    last = max(data.glob("*.parquet"))
    content = last.read_bytes()
    last.write_bytes(content[:4] + b"\0" * (len(content) // 2) + content[4 + len(content) // 2 :])  # data pages garbled, footer intact
    threads = threading.active_count()
    with pytest.raises(extmem.ShardReadError, match=last.name):
        extmem.dmatrix(data, preset="splice-sites", cache="disk", prefetch=2, sketch_rows=10**6, cache_dir=cache_root)
    assert threading.active_count() == threads, "the prefetch thread was stopped"
    assert cache_dirs(cache_root) == []


def test_predict_and_prune_plan_their_batches_and_refuse_a_budget_too_small(small_synth: Path, tmp_path: Path) -> None:
    model = extmem.train(small_synth, preset="splice-sites", out=tmp_path / "model", rounds=2).booster
    report = extmem.predict(model, small_synth, tmp_path / "p.parquet", memory_budget="64GiB", batch_rows=1000)
    assert report["rows"] == 3000
    assert report["memory_plan"]["batch_rows"] == 1000 and report["memory_plan"]["budget_bytes"] == 64 * 2**30
    manifest = extmem.prune(small_synth, tmp_path / "pruned", label="splice_type", memory_budget="64GiB")
    assert manifest["memory_plan"]["cache"] == "none" and manifest["memory_plan"]["parts"]["matrix"] > 0, "sample and correlations"
    with pytest.raises(extmem.OptionError, match="is too small: before any row is read, .* is the process itself"):
        extmem.predict(model, small_synth, tmp_path / "q.parquet", memory_budget="100MiB")
    with pytest.raises(extmem.OptionError, match="is too small: before any row is read, .* is the process itself"):
        extmem.prune(small_synth, tmp_path / "pruned2", label="splice_type", memory_budget="100MiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "p.parquet", "pruned"]


def test_many_rows_get_large_pages_because_xgboost_keeps_state_per_page() -> None:
    """3.7M rows of 10k bins: small pages would spend the budget on XGBoost's per-page state, so the plan takes large ones."""
    many = DataProfile(rows=3_700_000, arrow_bytes_per_row=2_000, stored_values_per_row=120, outputs=3, bins=10_000)
    fixed = 300 * 2**20
    plan = plan_memory(many, Budget(2**30, "test"), batch_rows=2048, cache="disk", fixed=fixed)
    small = plan_memory(many, Budget(8 * 2**30, "test"), batch_rows=2048, page_rows=2048, cache="disk", fixed=fixed)
    assert plan.page_rows >= 32_768 and plan.expected_peak_bytes <= 2**30
    assert small.feature_space_bytes > 4 * plan.feature_space_bytes
    assert plan_memory(many, None, batch_rows=2048, cache="disk", fixed=fixed).page_rows >= 3_700_000 // 64


def test_the_plan_counts_the_feature_space() -> None:
    """Hashed widths: XGBoost's per-bin state grows the plan with the bins, so 2M hashed features do not fit 2 GB."""
    narrow, wide = (
        DataProfile(rows=20_000, arrow_bytes_per_row=2_000, stored_values_per_row=120, outputs=3, bins=bins) for bins in (17_000, 4_070_000)
    )
    fixed = 300 * 2**20
    assert plan_memory(narrow, Budget(2 * 2**30, "test"), batch_rows=2048, cache="disk", fixed=fixed).expected_peak_bytes < 2**30
    with pytest.raises(
        extmem.OptionError, match=r"XGBoost.s state for the feature space \(fewer features, categories or hash buckets fit better\)"
    ):
        plan_memory(wide, Budget(2 * 10**9, "test"), batch_rows=2048, cache="disk", fixed=fixed)


def test_sizes_no_machine_of_this_size_holds_are_refused_without_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """page_rows=2 over 160k rows (80,000 pages of XGBoost state, ~100 GiB) ran until the kernel killed it; it is refused up front,
    naming the pages as the cost, and a budget above the RAM is the way to try anyway."""
    many = DataProfile(rows=160_000, arrow_bytes_per_row=2_000, stored_values_per_row=120, outputs=3, bins=10_000)
    fixed = 300 * 2**20
    monkeypatch.setattr("extmem.read._plan.psutil.virtual_memory", lambda: type("Memory", (), {"available": 16 * 2**30})())
    with pytest.raises(
        extmem.OptionError, match=r"16\.00 GiB \(the RAM available; .*state for the feature space \(fewer, larger pages \('page_rows'\)"
    ):
        plan_memory(many, None, batch_rows=2, page_rows=2, cache="disk", fixed=fixed)
    assert plan_memory(many, Budget(2**40, "test"), batch_rows=2, page_rows=2, cache="disk", fixed=fixed).expected_peak_bytes > 16 * 2**30
    assert plan_memory(many, None, batch_rows=2048, cache="disk", fixed=fixed).expected_peak_bytes < 2**30
