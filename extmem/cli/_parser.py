"""The ``extmem`` command's flags: every command's parser, with help, defaults and examples.

Built from plain constants only (``extmem._defaults``), so ``extmem --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from extmem._defaults import (
    CACHE_KINDS,
    DEFAULT_BATCH_ROWS,
    DEFAULT_CORR_THRESHOLD,
    DEFAULT_EPOCHS,
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_MAX_SAMPLE_ROWS,
    DEFAULT_PREFETCH,
    DEFAULT_ROUNDS,
    DEFAULT_ROW_GROUP_ROWS,
    DEFAULT_SAMPLE_ROWS_PER_SHARD,
    DEFAULT_SKETCH_ROWS,
    DEFAULT_SYNTH_K,
    DEFAULT_SYNTH_ROW_GROUP_ROWS,
    DEFAULT_SYNTH_SEQ_LEN,
    DEFAULT_SYNTH_SHARDS,
    INCREMENTAL_MODELS,
    MAX_K,
)
from extmem._presets import PRESETS, SPLICE_SITES
from extmem._version import __version__
from extmem.cli import _types as types

DATA_HELP = "dataset: a folder of *.parquet shards, a glob such as 'data/batch_*.parquet', or one file"


def _budget_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    parser.add_argument(
        "--memory-budget",
        type=types.size,
        metavar="SIZE",
        help=f"keep the run's memory under SIZE (2GiB, 1.5GB, 800MiB; GiB/MiB or G/M are powers of 1024, GB/MB of 1000): {what} "
        "are chosen to fit and the plan is printed first (default: the process's data limit, prlimit --data, if any)",
    )


def _common_flags(parser: argparse.ArgumentParser, *, overwrite: str | None) -> None:
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true", help=f"replace {overwrite} if it exists (only what extmem wrote)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (shown when stderr is a terminal)")


def _row_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--filter", metavar="EXPR", help="row filter, e.g. \"(chrom == 'chr1') & (position > 1000)\"")
    group.add_argument("--max-rows", type=types.positive, metavar="N", help="read at most N rows (in shard order)")
    group.add_argument(
        "--batch-rows",
        type=types.positive,
        default=DEFAULT_BATCH_ROWS,
        metavar="N",
        help="rows decoded per parquet batch (under a budget: the most)",
    )
    group.add_argument("--strict-categories", action="store_true", help="a category unseen in training is an error (default: missing)")


def _dataset_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=SPLICE_SITES.name,
        help="defaults for the label, its classes and the count columns: "
        + "; ".join(f"{name}: {preset.description}" for name, preset in sorted(PRESETS.items())),
    )
    group.add_argument("--label", help="label column (default: the preset's)")
    group.add_argument(
        "--label-map", type=types.label_map, metavar="NAME=ID,...", help="string labels to class ids (default: the preset's)"
    )
    group.add_argument("--weight", metavar="COLUMN", help="row-weight column")
    group.add_argument(
        "--features", metavar="COLUMNS", help="feature columns: comma-separated names or globs (default: every numeric column)"
    )
    group.add_argument("--drop", metavar="COLUMNS", help="columns to leave out of the features: comma-separated names or globs")
    group.add_argument(
        "--categorical", metavar="COLUMNS", help="string columns to use as categorical features, e.g. gene_type,chrom,strand"
    )
    group.add_argument(
        "--max-categories",
        type=types.positive,
        default=DEFAULT_MAX_CATEGORIES,
        metavar="N",
        help="most values a --categorical column may hold",
    )
    _row_flags(group)
    group.add_argument(
        "--page-rows",
        type=types.positive,
        default=None,
        metavar="N",
        help="rows per XGBoost page (under a budget: the most) (default: planned: the largest that fit a budget, else about 8 pages)",
    )
    group.add_argument(
        "--cache",
        choices=CACHE_KINDS,
        default="auto",
        help="where the quantized matrix lives: memory (fastest training), disk (external memory), or auto: memory when it "
        "fits the budget (or the available RAM) with room to spare",
    )
    group.add_argument(
        "--prefetch",
        type=types.non_negative,
        default=DEFAULT_PREFETCH,
        metavar="N",
        help="pages read ahead in a background thread (0: off)",
    )
    group.add_argument(
        "--sketch-rows",
        type=types.positive,
        metavar="N",
        help="above N rows, quantile cuts come from a uniform sample of about N rows "
        "(default: from all rows when their sketch fits the memory plan, else the largest sample that fits; "
        f"{DEFAULT_SKETCH_ROWS:,} with --scheduler)",
    )
    group.add_argument("--cache-dir", metavar="DIR", help="folder for the private cache folders (default: the system temp folder)")
    _budget_flag(group, "batch and page sizes and --cache auto")
    kmers = parser.add_argument_group("k-mer features")
    kmers.add_argument(
        "--hash-kmers", type=types.positive, metavar="N", help="fold the {k}mer_* columns (or --kmers-from counts) into N hashed features"
    )
    kmers.add_argument("--kmers-from", metavar="COLUMN", help="count k-mers from this sequence column instead of reading k-mer columns")
    kmers.add_argument(
        "--k", type=types.checked(int, lambda k: 1 <= k <= MAX_K, f"an integer from 1 to {MAX_K}"), help="k-mer length for --kmers-from"
    )
    kmers.add_argument(
        "--signed-hash", action="store_true", help="multiply hashed counts by the hash's sign (collisions cancel on average)"
    )


def _train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--algorithm",
        choices=("xgboost", *INCREMENTAL_MODELS),
        default="xgboost",
        help="xgboost (external-memory trees, model.ubj), or a scikit-learn partial_fit model trained incrementally over the "
        "same stream (model.npz)",
    )
    parser.add_argument("--rounds", type=types.positive, default=DEFAULT_ROUNDS, help="boosting rounds")
    parser.add_argument(
        "--epochs", type=types.positive, help=f"incremental models: passes over the data (default {DEFAULT_EPOCHS}; naive_bayes: 1, exact)"
    )
    parser.add_argument(
        "--class-weight",
        choices=("balanced", "none"),
        default="balanced",
        help="incremental models: weight classes by rows / (classes x class rows)",
    )
    parser.add_argument("--seed", type=int, default=0, help="incremental models: seed of the shuffled page and row order")
    parser.add_argument(
        "--param",
        type=types.param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model parameter, repeated for more: XGBoost's (--param max_depth=8 --param eta=0.05) or the scikit-learn "
        "estimator's (--param alpha=0.01)",
    )
    parser.add_argument("--valid", metavar="DATA", help="validation dataset (folder, glob or file)")
    parser.add_argument(
        "--valid-fraction",
        type=types.fraction,
        metavar="F",
        help="split off this fraction of the rows (or of the --group-by groups) for validation",
    )
    parser.add_argument(
        "--group-by", metavar="COLUMN", help="with --valid-fraction: keep each value of this column (e.g. gene_id) on one side"
    )
    parser.add_argument(
        "--early-stopping",
        type=types.positive,
        metavar="N",
        help="stop after N rounds (epochs) without improvement of the first eval metric on the validation data, keeping the best",
    )
    parser.add_argument("--checkpoint-every", type=types.positive, metavar="K", help="save a resumable checkpoint in --out every K rounds")
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS|local:N",
        help="train on a Dask cluster (pip install 'extmem[dask]'): a scheduler address, or local:N for N local worker processes",
    )


_TRAIN_EXAMPLES = """examples:
  extmem train shards/ --out model/
  extmem train shards/ --out model/ --rounds 500 --valid-fraction 0.1 --group-by gene_id --early-stopping 20
  extmem train shards/ --out model/ --param max_depth=8 --param eta=0.05 --memory-budget 2GiB
  extmem train shards/ --out linear/ --algorithm sgd_logistic --epochs 5
  extmem train shards/ --out model/ --scheduler local:4"""


def _add(commands: Any, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".", epilog=examples, formatter_class=types.HelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``extmem`` command and all its sub-commands."""
    parser = types.SuggestingParser(
        prog="extmem",
        description="Train XGBoost on parquet datasets larger than RAM, with bounded and measured memory.",
        epilog="run 'extmem COMMAND --help' for a command's flags and examples",
        formatter_class=types.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"extmem {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=types.SuggestingParser)

    synth = _add(commands, "synth", "write a synthetic splice-site dataset", "example:\n  extmem synth data/ --rows 100000 --shards 8")
    synth.add_argument("out_dir", metavar="OUT_DIR", help="new folder for the shards")
    synth.add_argument("--rows", type=types.positive, required=True, help="rows in all")
    synth.add_argument("--shards", type=types.positive, default=DEFAULT_SYNTH_SHARDS, help="number of shards")
    synth.add_argument(
        "--k",
        type=types.checked(int, lambda k: 1 <= k <= 8, "an integer from 1 to 8"),
        default=DEFAULT_SYNTH_K,
        help="k-mer length (4**k k-mer columns)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--seq-len", type=types.positive, default=DEFAULT_SYNTH_SEQ_LEN, help="bases per window")
    synth.add_argument("--row-group-rows", type=types.positive, default=DEFAULT_SYNTH_ROW_GROUP_ROWS, help="rows per parquet row group")
    _common_flags(synth, overwrite="OUT_DIR")

    train = _add(commands, "train", "train a model through external memory", _TRAIN_EXAMPLES)
    train.add_argument("data", metavar="DATA", help=DATA_HELP)
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder: model.ubj (or model.npz) and report.json")
    _train_flags(train)
    _dataset_flags(train)
    _common_flags(train, overwrite="MODEL_DIR")

    resume = _add(commands, "resume", "continue a checkpointed training run", "example:\n  extmem resume model/")
    resume.add_argument(
        "model_dir", metavar="MODEL_DIR", help="model folder holding the checkpoint of a run trained with --checkpoint-every"
    )
    resume.add_argument("--cache-dir", metavar="DIR", help="folder for the private cache folders (default: the system temp folder)")
    _common_flags(resume, overwrite=None)

    predict = _add(
        commands,
        "predict",
        "score a dataset with a trained model, streaming, into a parquet file",
        "example:\n  extmem predict model/ new_shards/ --out preds.parquet --keep gene_id,position",
    )
    predict.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'extmem train' (or a model file)")
    predict.add_argument("data", metavar="DATA", help=DATA_HELP)
    predict.add_argument("--out", required=True, metavar="FILE", help="output parquet file: prob_<class> columns and predicted")
    predict.add_argument("--keep", metavar="COLUMNS", help="input columns to copy into the output, e.g. gene_id,position")
    rows = predict.add_argument_group("dataset")
    _row_flags(rows)
    _budget_flag(rows, "batch sizes")
    _common_flags(predict, overwrite="FILE")

    evaluate = _add(
        commands,
        "evaluate",
        "streaming metrics and confusion matrix of a model on a labelled dataset",
        "example:\n  extmem evaluate model/ test_shards/ --out metrics.json --plot pr.png",
    )
    evaluate.add_argument("model", metavar="MODEL_DIR", help="model folder written by 'extmem train' (or a model file)")
    evaluate.add_argument("data", metavar="DATA", help=DATA_HELP)
    evaluate.add_argument("--label", help="label column (default: the model's)")
    evaluate.add_argument(
        "--label-map", type=types.label_map, metavar="NAME=ID,...", help="string labels to the model's class ids (default: the model's)"
    )
    evaluate.add_argument("--weight", metavar="COLUMN", help="row-weight column")
    evaluate.add_argument("--out", metavar="FILE", help="also write the metrics as JSON here")
    evaluate.add_argument("--plot", metavar="FILE", help="write precision-recall curves as a PNG here (pip install 'extmem[plot]')")
    rows = evaluate.add_argument_group("dataset")
    _row_flags(rows)
    _budget_flag(rows, "batch sizes")
    _common_flags(evaluate, overwrite="the --out and --plot files")

    pack = _add(
        commands,
        "pack",
        "rewrite a dataset with its count columns in the packed sparse layout",
        "example:\n  extmem pack shards/ packed/",
    )
    pack.add_argument("src", metavar="SRC", help=DATA_HELP)
    pack.add_argument("dst", metavar="DST", help="new folder for the packed shards")
    pack.add_argument(
        "--block", default=SPLICE_SITES.zero_is_missing, metavar="REGEX", help="regular expression of the count columns to pack"
    )
    pack.add_argument("--batch-rows", type=types.positive, default=DEFAULT_BATCH_ROWS, metavar="N", help="rows decoded per batch")
    pack.add_argument(
        "--row-group-rows", type=types.positive, default=DEFAULT_ROW_GROUP_ROWS, metavar="N", help="rows per output row group"
    )
    _common_flags(pack, overwrite="DST")

    prune = _add(
        commands,
        "prune",
        "drop constant, duplicate and correlated feature columns, streaming, into a new (packed) dataset",
        "examples:\n  extmem prune shards/ pruned/\n  extmem prune shards/ pruned/ --corr-threshold 0.95 --format wide",
    )
    prune.add_argument("src", metavar="SRC", help=DATA_HELP)
    prune.add_argument("dst", metavar="DST", help="new folder for the pruned shards and _manifest.json")
    prune.add_argument("--label", default=SPLICE_SITES.label, help="label column, kept as it is ('' for none)")
    prune.add_argument(
        "--corr-threshold",
        type=types.checked(float, lambda r: 0 < r <= 1, "a number in (0, 1]"),
        default=DEFAULT_CORR_THRESHOLD,
        help="drop a column when |r| >= this with a kept column",
    )
    prune.add_argument(
        "--sample-rows-per-shard",
        type=types.positive,
        default=DEFAULT_SAMPLE_ROWS_PER_SHARD,
        metavar="N",
        help="rows sampled uniformly from each shard for correlations",
    )
    prune.add_argument(
        "--max-sample-rows",
        type=types.positive,
        default=DEFAULT_MAX_SAMPLE_ROWS,
        metavar="N",
        help="cap on all sampled rows, so memory does not grow with the shard count",
    )
    prune.add_argument(
        "--max-corr-cols", type=types.positive, metavar="N", help="test only the N highest-variance columns for correlation (default: all)"
    )
    prune.add_argument(
        "--min-variance",
        type=types.checked(float, lambda v: v >= 0, "a number >= 0"),
        default=0.0,
        help="also drop columns whose variance is at most this (0: constants only)",
    )
    prune.add_argument("--seed", type=int, default=0, help="seed of the row sample")
    prune.add_argument("--format", choices=("packed", "wide"), default="packed", help="output format of the count columns")
    prune.add_argument(
        "--batch-rows",
        type=types.positive,
        default=DEFAULT_BATCH_ROWS,
        metavar="N",
        help="rows decoded per batch (under a budget: the most)",
    )
    prune.add_argument(
        "--row-group-rows", type=types.positive, default=DEFAULT_ROW_GROUP_ROWS, metavar="N", help="rows per output row group"
    )
    _budget_flag(prune, "batch sizes")
    _common_flags(prune, overwrite="DST")

    demo = _add(commands, "demo", "generate a demo dataset and train on it", "example:\n  extmem demo --rows 20000")
    demo.add_argument(
        "--dir", metavar="DIR", help="keep data/, valid/ and model/ in DIR (default: a temp folder, removed but for the model)"
    )
    demo.add_argument("--rows", type=types.positive, default=50_000, help="training rows (validation: a fifth of that)")
    demo.add_argument("--shards", type=types.positive, default=DEFAULT_SYNTH_SHARDS, help="training shards")
    demo.add_argument("--rounds", type=types.positive, default=40, help="boosting rounds (early stopping after 10 without improvement)")
    _common_flags(demo, overwrite=None)
    return parser


def flag_of(option: str) -> str:
    """The command-line flag of a library option (``valid_fraction`` -> ``--valid-fraction``)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


_FLAGS = {
    "params": "--param",
    "early_stopping_rounds": "--early-stopping",
    "checkpoint_every": "--checkpoint-every",
    "model": "--algorithm",
    "output_format": "--format",
    "width": "--hash-kmers",
    "sequence_column": "--kmers-from",
    "block_pattern": "--block",
    "out_dir": "OUT_DIR",
    "dst": "DST",
}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line (exits with status 2 and a usage message on a usage error)."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's own parser, which knows its flags
        commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    return args
