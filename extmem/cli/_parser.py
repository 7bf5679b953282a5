"""The ``extmem`` command's flags: every command's parser, with help, defaults and examples.

Built from plain constants only (``extmem._defaults``), so ``extmem --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from extmem._defaults import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_CORR_THRESHOLD,
    DEFAULT_EXPLAIN_TOP,
    DEFAULT_MAX_SAMPLE_ROWS,
    DEFAULT_ROUNDS,
    DEFAULT_ROW_GROUP_ROWS,
    DEFAULT_SAMPLE_ROWS_PER_SHARD,
    DEFAULT_SYNTH_K,
    DEFAULT_SYNTH_ROW_GROUP_ROWS,
    DEFAULT_SYNTH_SEQ_LEN,
    DEFAULT_SYNTH_SHARDS,
)
from extmem._presets import SPLICE_SITES
from extmem._version import __version__
from extmem.cli import _types as types
from extmem.cli._flags import (
    DATA_HELP,
    MODEL_HELP,
    TRAIN_EXAMPLES,
    budget_flag,
    common_flags,
    dataset_flags,
    param_flag,
    row_flags,
    train_flags,
)


def _add(commands: Any, name: str, help_text: str, examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".", epilog=examples, formatter_class=types.HelpFormatter
    )
    return parser


def _destination(parser: argparse.ArgumentParser, dest: str, metavar: str, help_text: str) -> None:
    """A command's output folder: a positional argument, or ``--out`` as the other commands spell their outputs."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(dest, metavar=metavar, nargs="?", help=help_text)
    where.add_argument("--out", dest=dest + _FLAG_SPELLING, metavar=metavar, help=f"the same as {metavar}")


_FLAG_SPELLING = "_given_as_out"


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
    _destination(synth, "out_dir", "OUT_DIR", "new folder for the shards")
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
    common_flags(synth, overwrite="OUT_DIR")

    train = _add(commands, "train", "train a model through external memory", TRAIN_EXAMPLES)
    train.add_argument("data", metavar="DATA", help=DATA_HELP)
    train.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder: model.ubj (or model.npz) and report.json")
    train_flags(train)
    dataset_flags(train)
    common_flags(train, overwrite="MODEL_DIR")

    cv = _add(
        commands,
        "cv",
        "cross-validate: k folds of the rows (or of --group-by groups), each trained through external memory",
        "examples:\n  extmem cv shards/ --folds 5 --group-by gene_id --rounds 200 --out cv.json",
    )
    cv.add_argument("data", metavar="DATA", help=DATA_HELP)
    cv.add_argument("--folds", type=types.checked(int, lambda k: 2 <= k <= 100, "an integer from 2 to 100"), default=5, help="folds")
    cv.add_argument("--group-by", metavar="COLUMN", help="keep each value of this column (e.g. gene_id) in one fold")
    cv.add_argument("--seed", type=int, default=0, help="seed of the fold each row (or group) falls in")
    cv.add_argument("--rounds", type=types.positive, default=DEFAULT_ROUNDS, help="boosting rounds")
    param_flag(cv, "an XGBoost parameter, as for train")
    cv.add_argument("--early-stopping", type=types.positive, metavar="N", help="stop each fold after N rounds without improvement")
    cv.add_argument("--out", metavar="FILE", help="also write the results as JSON here")
    dataset_flags(cv)
    common_flags(cv, overwrite="FILE")

    resume = _add(commands, "resume", "continue a checkpointed training run", "example:\n  extmem resume model/")
    resume.add_argument(
        "model_dir", metavar="MODEL_DIR", help="model folder holding the checkpoint of a run trained with --checkpoint-every"
    )
    resume.add_argument("--cache-dir", metavar="DIR", help="folder for the private cache folders (default: the system temp folder)")
    common_flags(resume, overwrite=None)

    predict = _add(
        commands,
        "predict",
        "score a dataset with a trained model, streaming, into a parquet (or CSV) file",
        "example:\n  extmem predict model/ new_shards/ --out preds.parquet --keep gene_id,position",
    )
    predict.add_argument("model", metavar="MODEL_DIR", help=MODEL_HELP)
    predict.add_argument("data", metavar="DATA", help=DATA_HELP)
    predict.add_argument(
        "--out", required=True, metavar="FILE", help="output file, parquet (or CSV if it ends in .csv): prob_<class> columns and predicted"
    )
    predict.add_argument(
        "--keep", metavar="COLUMNS", help="input columns to copy into the output (names or patterns), e.g. gene_id,position or 'gene_*'"
    )
    rows = predict.add_argument_group("dataset")
    row_flags(rows)
    budget_flag(rows, "batch sizes")
    common_flags(predict, overwrite="FILE")

    evaluate = _add(
        commands,
        "evaluate",
        "streaming metrics and confusion matrix of a model on a labelled dataset",
        "example:\n  extmem evaluate model/ test_shards/ --out metrics.json --plot pr.png",
    )
    evaluate.add_argument("model", metavar="MODEL_DIR", help=MODEL_HELP)
    evaluate.add_argument("data", metavar="DATA", help=DATA_HELP)
    evaluate.add_argument("--label", help="label column (default: the model's)")
    evaluate.add_argument(
        "--label-map", type=types.label_map, metavar="NAME=ID,...", help="string labels to the model's class ids (default: the model's)"
    )
    evaluate.add_argument("--weight", metavar="COLUMN", help="row-weight column")
    evaluate.add_argument("--qid", metavar="COLUMN", help="a ranking model's query-id column (default: the model's)")
    evaluate.add_argument("--out", metavar="FILE", help="also write the metrics as JSON here")
    evaluate.add_argument("--plot", metavar="FILE", help="write precision-recall curves as a PNG here (pip install 'extmem[plot]')")
    rows = evaluate.add_argument_group("dataset")
    row_flags(rows)
    budget_flag(rows, "batch sizes")
    common_flags(evaluate, overwrite="the --out and --plot files")

    explain = _add(
        commands,
        "explain",
        "per-row feature contributions (exact TreeSHAP) and importance tables of a model on a dataset, streamed",
        "examples:\n  extmem explain model/ shards/ --out why/ --keep gene_id,position --top 10\n"
        "  extmem explain model/ shards/ --out why/ --group-by gene_type --plot --memory-budget 1GiB",
    )
    explain.add_argument("model", metavar="MODEL_DIR", help=MODEL_HELP)
    explain.add_argument("data", metavar="DATA", help=DATA_HELP)
    explain.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="new folder: contributions.parquet, importance.parquet/.json, kmers.parquet (and importance_groups.parquet, plots)",
    )
    explain.add_argument(
        "--keep", metavar="COLUMNS", help="input columns to copy into contributions.parquet (names or patterns), e.g. gene_id,position"
    )
    explain.add_argument(
        "--top", type=types.positive, default=DEFAULT_EXPLAIN_TOP, metavar="K", help="features per row and class, by |contribution|"
    )
    explain.add_argument(
        "--full",
        metavar="FEATURES",
        help="instead of the top K: every contribution of these features (names or globs), e.g. donor_score,6mer_GT*",
    )
    explain.add_argument("--group-by", metavar="COLUMN", help="also the importance table per value of this column, e.g. gene_type")
    explain.add_argument(
        "--interactions",
        metavar="FEATURES",
        help="also interactions.parquet: mean SHAP interaction of every pair of these features (tree models of up to ~500 features)",
    )
    explain.add_argument("--plot", action="store_true", help="also importance.png and summary.png (pip install 'extmem[plot]')")
    rows = explain.add_argument_group("dataset")
    row_flags(rows)
    budget_flag(rows, "batch sizes")
    common_flags(explain, overwrite="DIR")

    pack = _add(
        commands,
        "pack",
        "rewrite a dataset with its count columns in the packed sparse layout",
        "example:\n  extmem pack shards/ packed/",
    )
    pack.add_argument("src", metavar="SRC", help=DATA_HELP)
    _destination(pack, "dst", "DST", "new folder for the packed shards")
    pack.add_argument(
        "--block", default=SPLICE_SITES.zero_is_missing, metavar="REGEX", help="regular expression of the count columns to pack"
    )
    pack.add_argument("--batch-rows", type=types.positive, default=DEFAULT_BATCH_ROWS, metavar="N", help="rows decoded per batch")
    pack.add_argument(
        "--row-group-rows", type=types.positive, default=DEFAULT_ROW_GROUP_ROWS, metavar="N", help="rows per output row group"
    )
    common_flags(pack, overwrite="DST")

    prune = _add(
        commands,
        "prune",
        "drop constant, duplicate and correlated feature columns, streaming, into a new (packed) dataset",
        "examples:\n  extmem prune shards/ pruned/\n  extmem prune shards/ pruned/ --corr-threshold 0.95 --format wide\n  extmem prune shards/ pruned/ --keep weight,position",
    )
    prune.add_argument("src", metavar="SRC", help=DATA_HELP)
    _destination(prune, "dst", "DST", "new folder for the pruned shards and _manifest.json")
    prune.add_argument("--label", default=SPLICE_SITES.label, help="label column, kept as it is ('' for none)")
    prune.add_argument(
        "--keep",
        metavar="COLUMNS",
        help="numeric columns kept as they are, never pruned: weights, query ids, coordinates (comma-separated names or globs)",
    )
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
    budget_flag(prune, "batch sizes")
    common_flags(prune, overwrite="DST")

    demo = _add(commands, "demo", "generate a demo dataset and train on it", "example:\n  extmem demo --rows 20000")
    demo.add_argument(
        "--dir", metavar="DIR", help="keep data/, valid/ and model/ in DIR (default: a temp folder, removed but for the model)"
    )
    demo.add_argument("--rows", type=types.positive, default=50_000, help="training rows (validation: a fifth of that)")
    demo.add_argument("--shards", type=types.positive, default=DEFAULT_SYNTH_SHARDS, help="training shards")
    demo.add_argument("--rounds", type=types.positive, default=40, help="boosting rounds (early stopping after 10 without improvement)")
    common_flags(demo, overwrite=None)
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
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the command's own parser, which knows its flags
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(extras)}")
    for name in [name for name in vars(args) if name.endswith(_FLAG_SPELLING)]:
        given = vars(args).pop(name)
        if given is not None:
            setattr(args, name.removesuffix(_FLAG_SPELLING), given)
    args.given = _given_options(parser, commands, argv)
    return args


def _given_options(parser: argparse.ArgumentParser, commands: argparse._SubParsersAction, argv: Sequence[str] | None) -> frozenset[str]:
    """The options the command line sets itself, whatever their values (a default typed out counts).

    Parses ``argv`` again with ``parser`` once its commands' defaults are suppressed: the parser is spent afterwards.
    """
    for command in {id(p): p for p in commands.choices.values()}.values():
        for action in command._actions:
            action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return frozenset(vars(given))
