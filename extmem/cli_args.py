"""The ``extmem`` command's arguments: types that validate flag values and the parser of every command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._version import __version__
from .budget import CACHE_KINDS, parse_size
from .categories import DEFAULT_MAX_CATEGORIES
from .dataset import DEFAULT_BATCH_ROWS, DEFAULT_PAGE_ROWS, KMER_PATTERN
from .incremental import DEFAULT_EPOCHS, INCREMENTAL_MODELS
from .iterator import DEFAULT_SKETCH_ROWS
from .sink import DEFAULT_ROW_GROUP_ROWS


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        msg = f"--param expects key=value, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    for convert in (int, float):
        try:
            return key, convert(raw)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def _label_map(text: str) -> dict[str, int]:
    mapping: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            msg = f"--label-map expects name=id pairs like neither=0,donor=1,acceptor=2; got {item!r}"
            raise argparse.ArgumentTypeError(msg)
        mapping[name.strip()] = int(value)
    return mapping


def _checked(convert: Callable[[str], Any], valid: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` converting a flag value and refusing it unless ``valid``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            msg = f"expected {expected}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_fraction = _checked(float, lambda value: 0 < value < 1, "a fraction between 0 and 1")
_positive = _checked(int, lambda value: value > 0, "a positive integer")
_size = _checked(parse_size, lambda value: value > 0, "a size such as 2GB, 1.5GiB or 800MB")
_MEMORY_BUDGET_HELP = (
    "keep the run's memory under this size, e.g. 2GB: batch and page sizes (and --cache auto) are chosen to fit, "
    "and the plan is printed first (default: the process's data limit, prlimit --data, if any)"
)


def _add_row_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--strict-categories", action="store_true", help="a category unseen in training is an error (default: missing)")
    group.add_argument("--filter", help="row filter, e.g. \"(chrom == 'chr1') & (position > 1000)\"")
    group.add_argument("--max-rows", type=_positive, help="read at most this many rows")
    group.add_argument(
        "--batch-rows",
        type=_positive,
        default=DEFAULT_BATCH_ROWS,
        help=f"rows decoded per parquet batch (default {DEFAULT_BATCH_ROWS}; under a memory budget, the most)",
    )
    group.add_argument("--memory-budget", type=_size, metavar="SIZE", help=_MEMORY_BUDGET_HELP)


def _add_dataset_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--label", default="splice_type", help="label column (default: splice_type)")
    group.add_argument("--label-map", type=_label_map, help="string labels to class ids, e.g. neither=0,donor=1,acceptor=2 (the default)")
    group.add_argument("--weight", help="optional row-weight column")
    group.add_argument("--keep", help="feature columns to use (comma-separated names or globs; default: every numeric column)")
    group.add_argument("--drop", help="columns to leave out of the features (comma-separated names or globs)")
    group.add_argument("--categorical", help="string columns to use as categorical features, e.g. gene_type,chrom,strand")
    group.add_argument(
        "--max-categories",
        type=_positive,
        default=DEFAULT_MAX_CATEGORIES,
        help=f"most values a --categorical column may hold (default {DEFAULT_MAX_CATEGORIES})",
    )
    _add_row_flags(group)
    group.add_argument(
        "--page-rows",
        type=_positive,
        default=DEFAULT_PAGE_ROWS,
        help=f"rows per XGBoost page (default {DEFAULT_PAGE_ROWS}; under a memory budget, the most)",
    )
    group.add_argument(
        "--cache",
        choices=CACHE_KINDS,
        default="auto",
        help="where the quantized matrix lives: memory (fastest training), disk (external memory), or auto: memory when it fits "
        "the budget (or the available RAM) with room to spare (default auto)",
    )
    group.add_argument(
        "--prefetch",
        type=_checked(int, lambda value: value >= 0, "a non-negative integer"),
        default=1,
        help="pages read ahead in a background thread while XGBoost consumes the current one (default 1; 0: off)",
    )
    group.add_argument(
        "--sketch-rows",
        type=_positive,
        default=DEFAULT_SKETCH_ROWS,
        help=f"above this many rows, quantile cuts come from a uniform sample of row groups of this size (default {DEFAULT_SKETCH_ROWS})",
    )
    group.add_argument("--cache-dir", help="folder for the private cache folder (default: the system temp folder)")
    kmers = parser.add_argument_group("k-mer features")
    kmers.add_argument(
        "--hash-kmers", type=_positive, metavar="N", help="fold the {k}mer_* columns (or --kmers-from counts) into N hashed features"
    )
    kmers.add_argument("--kmers-from", metavar="COLUMN", help="count k-mers from this sequence column instead of reading k-mer columns")
    kmers.add_argument("--k", type=int, help="k-mer length for --kmers-from (1-12)")
    kmers.add_argument(
        "--signed-hash", action="store_true", help="multiply hashed counts by the hash's sign (collisions cancel on average)"
    )


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=("xgboost", *INCREMENTAL_MODELS),
        default="xgboost",
        help="xgboost (default; external-memory trees), or a scikit-learn partial_fit model trained incrementally over the same "
        "stream: sgd_logistic, sgd_hinge, passive_aggressive or naive_bayes (writes model.npz)",
    )
    parser.add_argument("--rounds", type=_positive, default=100, help="boosting rounds (default 100)")
    parser.add_argument(
        "--epochs", type=_positive, help=f"incremental models: passes over the data (default {DEFAULT_EPOCHS}; naive_bayes: 1, exact)"
    )
    parser.add_argument(
        "--class-weight",
        choices=("balanced", "none"),
        default="balanced",
        help="incremental models: weight each class by rows / (classes x class rows), or not (default balanced)",
    )
    parser.add_argument("--seed", type=int, default=0, help="incremental models: seed of the shuffled page and row order (default 0)")
    parser.add_argument(
        "--param",
        type=_param,
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="model parameters: XGBoost's, e.g. --param max_depth=8 eta=0.05, or the scikit-learn estimator's, e.g. alpha=0.01",
    )
    parser.add_argument("--valid", help="validation dataset (folder, glob or file)")
    parser.add_argument(
        "--valid-fraction", type=_fraction, help="split off this fraction of the rows (or of the --group-by groups) for validation"
    )
    parser.add_argument("--group-by", help="with --valid-fraction: keep each value of this column (e.g. gene_id) on one side")
    parser.add_argument(
        "--early-stopping",
        type=_positive,
        help="stop after this many rounds (epochs for --model sgd_*, ...) without improvement of the first eval metric on the "
        "validation data, keeping the best",
    )
    parser.add_argument("--checkpoint-every", type=_positive, help="save a resumable checkpoint in --out every this many rounds")
    parser.add_argument(
        "--resume", metavar="MODEL_DIR", help="continue the run checkpointed in MODEL_DIR (data and options come from the checkpoint)"
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS|local:N",
        help="train on a Dask cluster (pip install 'extmem[dask]'): a scheduler address, or local:N for N local worker processes; "
        "each worker streams its share of the shards through its own disk cache",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_model_and_data(parser: argparse.ArgumentParser) -> None:
    """Arguments of the commands that score a dataset with a model (predict, evaluate)."""
    parser.add_argument("model", help="model folder written by 'extmem train' (or a model file)")
    parser.add_argument("data", help="dataset: folder of shards, glob, or file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_rewrite_flags(parser: argparse.ArgumentParser, row_group_flag: str) -> None:
    """Flags of the commands that rewrite shards (pack, prune)."""
    parser.add_argument(
        "--batch-rows", type=_positive, default=DEFAULT_BATCH_ROWS, help=f"rows decoded per batch (default {DEFAULT_BATCH_ROWS})"
    )
    parser.add_argument(
        row_group_flag, type=_positive, default=DEFAULT_ROW_GROUP_ROWS, help=f"rows per output row group (default {DEFAULT_ROW_GROUP_ROWS})"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="extmem", description="Train XGBoost on parquet datasets larger than RAM.")
    parser.add_argument("--version", action="version", version=f"extmem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    synth_parser = commands.add_parser("synth", help="write a synthetic splice-site dataset")
    synth_parser.add_argument("out_dir")
    synth_parser.add_argument("--rows", type=_positive, required=True)
    synth_parser.add_argument("--shards", type=_positive, default=4)
    synth_parser.add_argument("--k", type=int, default=6, help="k-mer length (default 6)")
    synth_parser.add_argument("--seed", type=int, default=0)
    synth_parser.add_argument("--seq-len", type=int, default=101, help="bases per window (default 101)")
    synth_parser.add_argument("--row-group-rows", type=_positive, default=4096)

    train_parser = commands.add_parser("train", help="train a model through external memory")
    train_parser.add_argument("data", nargs="?", help="dataset: folder of shards, glob, or file")
    train_parser.add_argument("--out", help="model folder (model.ubj or model.npz, report.json, checkpoint.ubj)")
    _add_train_flags(train_parser)
    _add_dataset_flags(train_parser)

    predict_parser = commands.add_parser("predict", help="score a dataset with a trained model, streaming, into a parquet file")
    _add_model_and_data(predict_parser)
    predict_parser.add_argument("--out", required=True, help="output parquet file (prob_<class> columns, predicted)")
    predict_parser.add_argument("--keep", help="input columns to copy into the output, e.g. gene_id,position")
    _add_row_flags(predict_parser.add_argument_group("dataset"))

    evaluate_parser = commands.add_parser("evaluate", help="streaming metrics and confusion matrix of a model on a labelled dataset")
    _add_model_and_data(evaluate_parser)
    evaluate_parser.add_argument("--label", help="label column (default: the model's)")
    evaluate_parser.add_argument("--weight", help="optional row-weight column")
    evaluate_parser.add_argument("--out", help="also write the metrics as JSON here")
    evaluate_parser.add_argument("--plot", help="write precision-recall curves as a PNG here (needs matplotlib)")
    _add_row_flags(evaluate_parser.add_argument_group("dataset"))

    pack_parser = commands.add_parser("pack", help="rewrite a dataset with its count columns in the packed sparse layout")
    pack_parser.add_argument("src", help="dataset: folder of shards, glob, or file")
    pack_parser.add_argument("dst", help="new folder for the packed shards (must not exist or be empty)")
    pack_parser.add_argument(
        "--block", default=KMER_PATTERN, help=f"regular expression of the count columns to pack (default {KMER_PATTERN!r})"
    )
    _add_rewrite_flags(pack_parser, "--row-group-rows")

    prune_parser = commands.add_parser("prune", help="drop constant, duplicate and correlated feature columns, streaming")
    prune_parser.add_argument("src", help="dataset: folder of shards, glob, or file")
    prune_parser.add_argument("dst", help="output folder (new, empty, or a previous prune result)")
    prune_parser.add_argument("--label", default="splice_type", help="label column, kept as is ('' for none)")
    prune_parser.add_argument(
        "--corr-threshold", type=float, default=0.99, help="drop a column when |r| >= this with a kept column (default 0.99)"
    )
    prune_parser.add_argument(
        "--sample-rows-per-shard", type=_positive, default=25_000, help="rows sampled uniformly from each shard for correlations"
    )
    prune_parser.add_argument(
        "--max-sample-rows",
        type=_positive,
        default=50_000,
        help="cap on all sampled rows, so memory does not grow with the shard count (default 50,000)",
    )
    prune_parser.add_argument(
        "--max-corr-cols", type=_positive, help="test only the N highest-variance columns for correlation (default: all)"
    )
    prune_parser.add_argument(
        "--min-variance", type=float, default=0.0, help="also drop columns whose variance is at most this (default 0: constants only)"
    )
    prune_parser.add_argument("--seed", type=int, default=0, help="seed of the row sample")
    prune_parser.add_argument("--layout", choices=("packed", "wide"), default="packed", help="output layout (default packed)")
    prune_parser.add_argument("--memory-budget", type=_size, metavar="SIZE", help=_MEMORY_BUDGET_HELP)
    _add_rewrite_flags(prune_parser, "--row-group-size")

    demo_parser = commands.add_parser("demo", help="generate a demo dataset and train on it")
    demo_parser.add_argument("--dir", help="where to put data/ and model/ (default: a new temp folder)")
    demo_parser.add_argument("--rows", type=_positive, default=50_000)
    demo_parser.add_argument("--shards", type=_positive, default=4)
    demo_parser.add_argument("--rounds", type=_positive, default=40)
    demo_parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser
