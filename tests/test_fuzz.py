"""Property-based fuzzing of the command line: random shards, schemas, flags and filters.

Every generated case either succeeds or exits 2 with one ``extmem: error:`` line and no
traceback, and leaves no cache folder and no partial output behind. The case count is
``EXTMEM_FUZZ_EXAMPLES`` (300 in CI); the search is derandomized so CI is reproducible, and a
larger count or ``EXTMEM_FUZZ_SEED`` explores further.
"""

from __future__ import annotations

import datetime
import decimal
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cache_dirs, write_shard
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import extmem
from extmem.cli._main import main

pytestmark = pytest.mark.slow  # the fast set: pytest -m "not slow"

EXAMPLES = int(os.environ.get("EXTMEM_FUZZ_EXAMPLES", "300"))
SEED = int(os.environ.get("EXTMEM_FUZZ_SEED", "0"))
NAMES = ("x", "n", "flag", "s", "cat", "splice_type", "w", "g", "6mer_AAAAAA", "6mer_ACGTAC", "when", "pairs", "amount")
LABELS = ("donor", "acceptor", "neither")

TAME = st.floats(-100, 100)
FLOATS = st.one_of(TAME, TAME, TAME, st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 3.5e38, 1e39]))
TYPED_VALUES: dict[str, tuple[pa.DataType, st.SearchStrategy[object]]] = {
    "float64": (pa.float64(), FLOATS),
    "float32": (pa.float32(), st.one_of(st.none(), st.floats(width=32, allow_nan=True, allow_infinity=True))),
    "int8": (pa.int8(), st.one_of(st.none(), st.integers(-128, 127))),
    "int64": (pa.int64(), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3))),
    "uint64": (pa.uint64(), st.one_of(st.none(), st.integers(0, 2**64 - 1), st.integers(0, 3))),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "string": (pa.string(), st.one_of(st.none(), st.sampled_from(["a", "b", "", "donor", "ü", "x" * 50]))),
    "large_string": (pa.large_string(), st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))),
    "binary": (pa.binary(), st.one_of(st.none(), st.binary(max_size=4))),
    "list": (pa.list_(pa.int64()), st.one_of(st.none(), st.lists(st.integers(-5, 5), max_size=3))),
    "timestamp": (pa.timestamp("ms"), st.one_of(st.none(), st.datetimes(datetime.datetime(1970, 1, 1), datetime.datetime(2100, 1, 1)))),
    "decimal": (pa.decimal128(10, 2), st.one_of(st.none(), st.decimals(-1000, 1000, places=2, allow_nan=False))),
    "null": (pa.null(), st.none()),
}
LABEL_VALUES: dict[str, tuple[pa.DataType, st.SearchStrategy[object]]] = {
    "classes": (pa.string(), st.sampled_from(LABELS)),
    "classes_or_null": (pa.string(), st.one_of(st.none(), st.sampled_from([*LABELS, "other"]))),
    "ints": (pa.int64(), st.integers(-1, 3)),
    "floats": (pa.float64(), st.one_of(st.sampled_from([0.0, 1.0, 2.0, 0.5]), FLOATS)),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(LABELS)),
}


@st.composite
def datasets(draw: st.DrawFn) -> list[tuple[dict[str, pa.Array], int | None]]:
    """One to three shards: mostly one schema with a usable label, each shard free to lack columns or change a type."""
    common = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    common += ["splice_type"] if draw(MOSTLY) and "splice_type" not in common else []
    kinds = {name: draw(_kind(name)) for name in common}
    shards = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(0, 24))
        names = [name for name in common if draw(MOSTLY)]
        names += [name for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2)) if name not in names]
        table = {}
        for name in names:
            kind = kinds[name] if name in kinds and draw(MOSTLY) else draw(_kind(name))
            table[name] = _array(draw, name, kind, rows)
        shards.append((table, draw(st.sampled_from([None, 1, 5]))))
    return shards


def _kind(name: str) -> st.SearchStrategy[str]:
    if name == "splice_type":
        return st.sampled_from(["classes"] * 6 + sorted(LABEL_VALUES))
    return st.sampled_from(sorted(TYPED_VALUES))


def _array(draw: st.DrawFn, name: str, kind: str, rows: int) -> pa.Array:
    arrow_type, values = (LABEL_VALUES if name == "splice_type" else TYPED_VALUES)[kind]
    drawn = draw(st.lists(values, min_size=rows, max_size=rows))
    if pa.types.is_dictionary(arrow_type):
        return pa.array(drawn, pa.string()).dictionary_encode()
    if pa.types.is_decimal(arrow_type):
        return pa.array([None if value is None else decimal.Decimal(value) for value in drawn], arrow_type)
    return pa.array(drawn, arrow_type)


MOSTLY = st.sampled_from([True] * 9 + [False])
COLUMN_LISTS = st.sampled_from(["x", "n", "s", "cat", "g", "splice_type", "w", "6mer_*", "x,n", "nope", "x,x", "", "*"])
FILTERS = st.sampled_from(
    [
        "x > 0",
        "(x > 0) & (n < 2)",
        "s == 'a'",
        "s in ['a', 'b']",
        "~(flag == True)",
        "x > 'a'",
        "n in [1, 'a']",
        "nope > 1",
        "x >",
        "x > 99999999999999999999999",
        "splice_type != 'neither'",
        "(x > 0) | (s == 'b')",
    ]
)
PARAMS = st.sampled_from(
    [
        "max_depth=2",
        "eta=0.3",
        "eta=abc",
        "nthread=1",
        "objective=reg:squarederror",
        "num_class=5",
        "seed=abc",
        "max_bin=2",
        "tree_method=approx",
    ]
)
SIZES = st.sampled_from(["1GB", "300MiB", "1MB", "abc", "0", "-1GB", "2GiB"])


@st.composite
def train_flags(draw: st.DrawFn) -> list[str]:
    flags = draw(
        st.sampled_from([["--preset", "splice-sites"]] * 3 + [[], ["--label", "splice_type"], ["--label", "x"], ["--label", "nope"]])
    )
    options: dict[str, st.SearchStrategy[list[str]]] = {
        "--rounds": st.sampled_from(["1", "2", "0"]).map(lambda v: ["--rounds", v]),
        "--features": COLUMN_LISTS.map(lambda v: ["--features", v]),
        "--drop": COLUMN_LISTS.map(lambda v: ["--drop", v]),
        "--categorical": COLUMN_LISTS.map(lambda v: ["--categorical", v]),
        "--weight": COLUMN_LISTS.map(lambda v: ["--weight", v]),
        "--filter": FILTERS.map(lambda v: ["--filter", v]),
        "--valid-fraction": st.sampled_from(["0.5", "0.2", "0", "1", "1.5"]).map(lambda v: ["--valid-fraction", v]),
        "--group-by": COLUMN_LISTS.map(lambda v: ["--group-by", v]),
        "--early-stopping": st.sampled_from(["1", "0"]).map(lambda v: ["--early-stopping", v]),
        "--max-rows": st.sampled_from(["1", "5", "0"]).map(lambda v: ["--max-rows", v]),
        "--batch-rows": st.sampled_from(["1", "3", "0"]).map(lambda v: ["--batch-rows", v]),
        "--page-rows": st.sampled_from(["1", "4"]).map(lambda v: ["--page-rows", v]),
        "--cache": st.sampled_from(["memory", "disk", "auto"]).map(lambda v: ["--cache", v]),
        "--memory-budget": SIZES.map(lambda v: ["--memory-budget", v]),
        "--param": PARAMS.map(lambda v: ["--param", v]),
        "--hash-kmers": st.sampled_from(["4", "0"]).map(lambda v: ["--hash-kmers", v]),
        "--algorithm": st.sampled_from(["xgboost", "sgd_logistic", "naive_bayes"]).map(lambda v: ["--algorithm", v]),
        "--label-map": st.sampled_from(["donor=1,acceptor=2,neither=0", "donor=1", "a=x"]).map(lambda v: ["--label-map", v]),
        "--max-categories": st.sampled_from(["1", "2"]).map(lambda v: ["--max-categories", v]),
        "--sketch-rows": st.sampled_from(["1", "3"]).map(lambda v: ["--sketch-rows", v]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=5)):
        flags += draw(options[name])
    return ["--rounds", "1", *flags] if "--rounds" not in flags else flags


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(["train", "train", "train", "predict", "evaluate", "prune", "pack"]))
    if command == "train":
        return command, draw(train_flags())
    if command == "predict":
        keep = draw(st.lists(COLUMN_LISTS.map(lambda v: ["--keep", v]), max_size=1))
        filters = draw(st.lists(FILTERS.map(lambda v: ["--filter", v]), max_size=1))
        return command, [flag for pair in keep + filters for flag in pair]
    if command == "evaluate":
        label = draw(st.sampled_from([[], ["--label", "x"], ["--label", "nope"], ["--label-map", "donor=1,acceptor=2,neither=0"]]))
        return command, [*label, *draw(st.sampled_from([[], ["--weight", "w"], ["--max-rows", "3"]]))]
    if command == "prune":
        return command, draw(
            st.sampled_from(
                [[], ["--label", ""], ["--label", "x"], ["--format", "wide"], ["--corr-threshold", "0.5"], ["--memory-budget", "1GB"]]
            )
        )
    return command, draw(st.sampled_from([[], ["--block", "^x$"], ["--block", "("], ["--row-group-rows", "2"]]))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model on features x and n, labels the three splice classes."""
    folder = tmp_path_factory.mktemp("fuzz_model")
    rng = np.random.default_rng(0)
    write_shard(folder / "data" / "a.parquet", {"x": rng.normal(size=60), "n": rng.integers(0, 3, 60), "splice_type": list(LABELS) * 20})
    extmem.train(folder / "data", preset="splice-sites", out=folder / "model", rounds=2)
    return folder / "model"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _case_folder(workspace: Path) -> Path:
    index = len(list(workspace.iterdir()))
    folder = workspace / f"case{index}"
    folder.mkdir()
    return folder


def _arguments(command: str, flags: list[str], data: Path, model: Path, work: Path) -> list[str]:
    cache = ["--cache-dir", str(work / "cache")]
    return {
        "train": ["train", str(data), "--out", str(work / "out"), *cache],
        "predict": ["predict", str(model), str(data), "--out", str(work / "out")],
        "evaluate": ["evaluate", str(model), str(data), "--out", str(work / "out")],
        "prune": ["prune", str(data), str(work / "out")],
        "pack": ["pack", str(data), str(work / "out")],
    }[command] + flags


def _leftovers(work: Path) -> list[str]:
    """Partial and hidden files anywhere under ``work`` but the data, and cache folders."""
    found = [str(path) for path in work.rglob(".*") if "data" not in path.relative_to(work).parts]
    return found + [str(path) for path in cache_dirs(work / "cache")]


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED == 0,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shards=datasets(), case=commands())
def test_any_input_succeeds_or_is_one_clear_line(
    shards: list[tuple[dict[str, pa.Array], int | None]],
    case: tuple[str, list[str]],
    model: Path,
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    restore_signals: None,
) -> None:
    work = _case_folder(workspace)
    (work / "cache").mkdir()
    (work / "data").mkdir()
    for index, (table, row_group_rows) in enumerate(shards):
        shard = pa.table(table) if table else pa.table({"x": pa.array([], pa.float64())})
        pq.write_table(shard, work / "data" / f"batch_{index:05d}.parquet", row_group_size=row_group_rows)
    command, flags = case
    argv = [*_arguments(command, flags, work / "data", model, work), "--no-progress"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would reach the user's terminal: none may escape
            status = main(argv)
    except SystemExit as exit_:  # the parser's own errors (a malformed flag value)
        status = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err, f"{argv}\n{err}"
    assert status in (0, 2), f"{argv}\n{err}"
    if status == 2:
        assert len(errors) == 1, f"{argv}\n{err}"
        assert not (work / "out").exists(), f"{argv}: output left after an error"
    assert _leftovers(work) == [], argv
