"""Flag groups the commands share: common, dataset, row, budget and training flags, with help and defaults.

Built from plain constants only (``extmem._defaults``), so ``extmem --help`` imports nothing heavy.
"""

from __future__ import annotations

import argparse

from extmem._defaults import (
    CACHE_KINDS,
    DEFAULT_BATCH_ROWS,
    DEFAULT_EPOCHS,
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_PREFETCH,
    DEFAULT_ROUNDS,
    DEFAULT_SKETCH_ROWS,
    INCREMENTAL_MODELS,
    MAX_K,
)
from extmem._presets import PRESETS, SPLICE_SITES
from extmem.cli import _types as types

DATA_HELP = "dataset: a folder of *.parquet shards, a glob such as 'data/batch_*.parquet', or one file; or a URI of any of these (s3://bucket/prefix/, gs://...)"
MODEL_HELP = "model folder written by 'extmem train' (or a model file), local or a URI (s3://bucket/models/run1)"


def budget_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    parser.add_argument(
        "--memory-budget",
        type=types.size,
        metavar="SIZE",
        help=f"keep the run's memory under SIZE (2GiB, 1.5GB, 800MiB; GiB/MiB or G/M are powers of 1024, GB/MB of 1000): {what} "
        "are chosen to fit and the plan is printed first (default: the process's data limit, prlimit --data, if any)",
    )


def common_flags(parser: argparse.ArgumentParser, *, overwrite: str | None) -> None:
    if overwrite is not None:
        parser.add_argument("--overwrite", action="store_true", help=f"replace {overwrite} if it exists (only what extmem wrote)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (shown when stderr is a terminal)")


def row_flags(group: argparse._ArgumentGroup) -> None:
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


def dataset_flags(parser: argparse.ArgumentParser) -> None:
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
        "--label-map",
        type=types.label_map,
        metavar="NAME=ID,...",
        help="labels to class ids: strings, or numbers such as 1=1,-1=0 (default: the preset's, for the preset's label)",
    )
    group.add_argument("--weight", metavar="COLUMN", help="row-weight column")
    group.add_argument(
        "--qid",
        metavar="COLUMN",
        help="query-id column (integers or text, each query's rows together in non-decreasing order): learn to rank, rank:ndcg unless given",
    )
    group.add_argument(
        "--features", metavar="COLUMNS", help="feature columns: comma-separated names or globs (default: every numeric column)"
    )
    group.add_argument("--drop", metavar="COLUMNS", help="columns to leave out of the features: comma-separated names or globs")
    group.add_argument(
        "--categorical",
        metavar="COLUMNS",
        help="string (or integer-code) columns to use as categorical features (names or patterns), e.g. gene_type,chrom,strand",
    )
    group.add_argument(
        "--max-categories",
        type=types.positive,
        default=DEFAULT_MAX_CATEGORIES,
        metavar="N",
        help="most values a --categorical column may hold",
    )
    row_flags(group)
    group.add_argument(
        "--page-rows",
        type=types.positive,
        default=None,
        metavar="N",
        help="rows per XGBoost page (under a budget: the most) (default: planned: the largest that fit a budget, else the largest built in under 256 MiB)",
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
        help="above N rows, quantile cuts come from a uniform sample of about N rows, N at least max_bin "
        "(default: from all rows when their sketch fits the memory plan, else the largest sample that fits; "
        f"{DEFAULT_SKETCH_ROWS:,} with --scheduler)",
    )
    group.add_argument("--cache-dir", metavar="DIR", help="folder for the private cache folders (default: the system temp folder)")
    group.add_argument(
        "--encoded-cache",
        metavar="DIR",
        help="keep the encoded rows of the first read in DIR: a later run on the same shards with the same options replays "
        "them instead of reading the parquet (extmem deletes only damaged entries)",
    )
    budget_flag(group, "batch and page sizes and --cache auto")
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


def param_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--param KEY=VALUE``, repeated: the model parameters (read by :func:`extmem.cli._commands._params`)."""
    parser.add_argument("--param", type=types.param, action="append", default=[], metavar="KEY=VALUE", help=help_text)


def train_flags(parser: argparse.ArgumentParser) -> None:
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
    param_flag(
        parser,
        "a model parameter, repeated for more: XGBoost's (--param max_depth=8 --param eta=0.05) or the scikit-learn "
        "estimator's (--param alpha=0.01); constraints by feature name as JSON: "
        "--param 'monotone_constraints={\"donor_score\": 1}'",
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


TRAIN_EXAMPLES = """examples:
  extmem train shards/ --out model/
  extmem train shards/ --out model/ --rounds 500 --valid-fraction 0.1 --group-by gene_id --early-stopping 20
  extmem train shards/ --out model/ --param max_depth=8 --param eta=0.05 --memory-budget 2GiB
  extmem train shards/ --out linear/ --algorithm sgd_logistic --epochs 5
  extmem train shards/ --out model/ --scheduler local:4"""
