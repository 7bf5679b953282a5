"""`extmem` command line: parses flags, calls the library, prints a summary. No behaviour of its own."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xgboost as xgb

from ._version import __version__
from .categories import DEFAULT_MAX_CATEGORIES
from .dataset import DEFAULT_BATCH_ROWS, DEFAULT_PAGE_ROWS, KMER_PATTERN
from .errors import ExtmemError, OptionError
from .iterator import DEFAULT_SKETCH_ROWS
from .kmers import KmerEncoding
from .sink import DEFAULT_ROW_GROUP_ROWS
from .synth import SynthOptions, synth


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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1:
        msg = f"expected a fraction between 0 and 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_row_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--strict-categories", action="store_true", help="a category unseen in training is an error (default: missing)")
    group.add_argument("--filter", help="row filter, e.g. \"(chrom == 'chr1') & (position > 1000)\"")
    group.add_argument("--max-rows", type=_positive, help="read at most this many rows")
    group.add_argument(
        "--batch-rows", type=_positive, default=DEFAULT_BATCH_ROWS, help=f"rows decoded per parquet batch (default {DEFAULT_BATCH_ROWS})"
    )


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
        help=f"rows per XGBoost external-memory page (default {DEFAULT_PAGE_ROWS})",
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
    parser.add_argument("--rounds", type=_positive, default=100, help="boosting rounds (default 100)")
    parser.add_argument(
        "--param",
        type=_param,
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="XGBoost parameters, e.g. --param max_depth=8 eta=0.05",
    )
    parser.add_argument("--valid", help="validation dataset (folder, glob or file)")
    parser.add_argument(
        "--valid-fraction", type=_fraction, help="split off this fraction of the rows (or of the --group-by groups) for validation"
    )
    parser.add_argument("--group-by", help="with --valid-fraction: keep each value of this column (e.g. gene_id) on one side")
    parser.add_argument(
        "--early-stopping",
        type=_positive,
        help="stop after this many rounds without improvement of the first eval metric on the validation data",
    )
    parser.add_argument("--checkpoint-every", type=_positive, help="save a resumable checkpoint in --out every this many rounds")
    parser.add_argument(
        "--resume", metavar="MODEL_DIR", help="continue the run checkpointed in MODEL_DIR (data and options come from the checkpoint)"
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
    train_parser.add_argument("--out", help="model folder (model.ubj, report.json, checkpoint.ubj)")
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
    _add_rewrite_flags(prune_parser, "--row-group-size")

    demo_parser = commands.add_parser("demo", help="generate a demo dataset and train on it")
    demo_parser.add_argument("--dir", help="where to put data/ and model/ (default: a new temp folder)")
    demo_parser.add_argument("--rows", type=_positive, default=50_000)
    demo_parser.add_argument("--shards", type=_positive, default=4)
    demo_parser.add_argument("--rounds", type=_positive, default=40)
    demo_parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _kmer_encoding(args: argparse.Namespace) -> KmerEncoding | None:
    if args.kmers_from is None and args.hash_kmers is None:
        if args.k is not None or args.signed_hash:
            msg = "--k and --signed-hash need --kmers-from or --hash-kmers."
            raise OptionError(msg)
        return None
    if args.kmers_from is None and args.k is not None:
        msg = "--k needs --kmers-from (folded k-mer columns keep their own k)."
        raise OptionError(msg)
    return KmerEncoding(width=args.hash_kmers, k=args.k, sequence_column=args.kmers_from, signed=args.signed_hash)


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kmers": _kmer_encoding(args),
        "label": args.label,
        "label_map": args.label_map,
        "weight": args.weight,
        "keep": args.keep,
        "drop": args.drop,
        "categorical": args.categorical,
        "max_categories": args.max_categories,
        **_row_options(args),
    }


def _memory(report: dict[str, Any]) -> str:
    mib = 2**20
    return f"peak RSS {report['peak_rss_bytes'] / mib:,.0f} MiB (anonymous {report['peak_anon_bytes'] / mib:,.0f} MiB)"


def _summary(report: dict[str, Any], out: str) -> str:
    resumed = f", resumed from round {report['resumed_from_round']}" if report.get("resumed_from_round") is not None else ""
    lines = [
        f"trained {report['rounds']} rounds on {report['rows']:,} rows x {report['features']:,} features in {report['seconds']:.1f} s{resumed}",
        f"{_memory(report)}; cache {report['cache_bytes'] / 2**20:,.0f} MiB, removed",
    ]
    for data_name, metrics in report["metrics"].items():
        overall = {name: value for name, value in metrics.items() if not name.startswith(("roc_auc_", "pr_auc_"))}
        lines.append(f"{data_name}: " + ", ".join(f"{name} {value:.4f}" for name, value in overall.items()))
        per_class = [
            f"{name} {metrics[f'roc_auc_{name}']:.4f}/{metrics[f'pr_auc_{name}']:.4f}"
            for name in report["classes"] or []
            if f"roc_auc_{name}" in metrics
        ]
        if per_class:
            lines.append(f"{data_name} ROC-AUC/PR-AUC: " + ", ".join(per_class))
    lines.append(f"model: {Path(out) / 'model.ubj'}; report: {Path(out) / 'report.json'}")
    return "\n".join(lines)


def _evaluation_text(result: dict[str, Any]) -> str:
    shown = {k: v for k, v in result.items() if isinstance(v, float) and k != "seconds"}
    lines = [f"{result['rows']:,} rows: " + ", ".join(f"{name} {value:.4f}" for name, value in shown.items())]
    per_class = result.get("per_class", {})
    if per_class:
        columns = [c for c in ("precision", "recall", "f1", "roc_auc", "pr_auc", "support") if c in next(iter(per_class.values()))]
        width = max(len(name) for name in per_class) + 2
        lines.append("class".ljust(width) + "".join(c.rjust(11) for c in columns))
        for name, scores in per_class.items():
            cells = "".join(
                ("-" if scores[c] is None else f"{scores[c]:.0f}" if c == "support" else f"{scores[c]:.4f}").rjust(11) for c in columns
            )
            lines.append(name.ljust(width) + cells)
        confusion = result["confusion_matrix"]
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        lines.append("".ljust(width) + "".join(name.rjust(11) for name in confusion["classes"]))
        for name, row in zip(confusion["classes"], confusion["counts"]):
            lines.append(name.ljust(width) + "".join(f"{count:.0f}".rjust(11) for count in row))
    lines.append(f"{_memory(result)}; {result['seconds']:.1f} s")
    return "\n".join(lines)


def _run_train(args: argparse.Namespace) -> None:
    from .train import resume, train

    if args.resume is not None:
        if args.data is not None:
            msg = "--resume takes the dataset and options from the checkpoint; do not pass DATA."
            raise OptionError(msg)
        result = resume(args.resume, cache_dir=args.cache_dir, progress=not args.no_progress)
        print(_summary(result.report, args.resume))
        return
    if args.data is None or args.out is None:
        msg = "train needs DATA and --out (or --resume MODEL_DIR)."
        raise OptionError(msg)
    result = train(
        args.data,
        out=args.out,
        rounds=args.rounds,
        params=dict(args.param),
        valid=args.valid,
        valid_fraction=args.valid_fraction,
        group_by=args.group_by,
        early_stopping_rounds=args.early_stopping,
        checkpoint_every=args.checkpoint_every,
        cache_dir=args.cache_dir,
        page_rows=args.page_rows,
        sketch_rows=args.sketch_rows,
        progress=not args.no_progress,
        **_dataset_options(args),
    )
    print(_summary(result.report, args.out))


def _row_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"filter": args.filter, "max_rows": args.max_rows, "batch_rows": args.batch_rows, "strict_categories": args.strict_categories}


def _run_predict(args: argparse.Namespace) -> None:
    from .predict import predict

    report = predict(args.model, args.data, args.out, keep=args.keep, progress=not args.no_progress, **_row_options(args))
    print(
        f"wrote {report['rows']:,} rows ({', '.join(report['columns'])}) to {report['out']} in {report['seconds']:.1f} s; {_memory(report)}"
    )


def _run_evaluate(args: argparse.Namespace) -> None:
    from .predict import evaluate
    from .sink import write_json

    result = evaluate(
        args.model, args.data, label=args.label, weight=args.weight, plot=args.plot, progress=not args.no_progress, **_row_options(args)
    )
    print(_evaluation_text(result))
    if args.out is not None:
        write_json(args.out, result)


def _run_pack(args: argparse.Namespace) -> None:
    from .pack import pack

    report = pack(
        args.src,
        args.dst,
        block_pattern=args.block,
        batch_rows=args.batch_rows,
        row_group_rows=args.row_group_rows,
        progress=not args.no_progress,
    )
    print(
        f"packed {report['shards']} shard(s), {report['rows']:,} rows, into {args.dst} in {report['seconds']:.1f} s: "
        f"{report['input_bytes'] / 2**20:,.1f} MiB -> {report['output_bytes'] / 2**20:,.1f} MiB; {_memory(report)}"
    )


def _run_prune(args: argparse.Namespace) -> None:
    from .prune import PruneOptions, prune

    options = PruneOptions(
        corr_threshold=args.corr_threshold,
        sample_rows_per_shard=args.sample_rows_per_shard,
        max_sample_rows=args.max_sample_rows,
        max_corr_cols=args.max_corr_cols,
        min_variance=args.min_variance,
        seed=args.seed,
    )
    manifest = prune(
        args.src,
        args.dst,
        label=args.label or None,
        options=options,
        layout=args.layout,
        batch_rows=args.batch_rows,
        row_group_rows=args.row_group_size,
        progress=not args.no_progress,
    )
    counts = ", ".join(f"{count} {reason}" for reason, count in manifest["dropped_counts"].items() if count)
    print(
        f"kept {len(manifest['kept']):,} of {len(manifest['kept']) + len(manifest['dropped']):,} feature columns"
        f" (dropped {counts or 'none'}); {manifest['rows_out']:,} rows written {manifest['layout']} to {args.dst} in {manifest['seconds']:.1f} s;"
        f" {_memory(manifest)}"
    )


def _run_synth(args: argparse.Namespace) -> None:
    options = SynthOptions(
        rows=args.rows, shards=args.shards, k=args.k, seed=args.seed, seq_len=args.seq_len, row_group_rows=args.row_group_rows
    )
    paths = synth(args.out_dir, options)
    print(f"wrote {len(paths)} shard(s), {args.rows:,} rows, to {args.out_dir}")


def _run_demo(args: argparse.Namespace) -> None:
    from .train import train

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="extmem-demo-"))
    data, valid, model = root / "data", root / "valid", root / "model"
    print(f"generating {args.rows:,} training rows in {data} and {args.rows // 5:,} validation rows in {valid}")
    synth(data, SynthOptions(rows=args.rows, shards=args.shards, seed=0))
    synth(valid, SynthOptions(rows=max(args.rows // 5, 1), shards=1, seed=1))
    result = train(data, out=model, valid=valid, rounds=args.rounds, early_stopping_rounds=10, progress=not args.no_progress)
    print(_summary(result.report, str(model)))


_OUT_OF_MEMORY = (
    "out of memory. Lower --batch-rows (parquet decoding) or --page-rows (pages handed to XGBoost), "
    "or pack the data first (extmem pack), which decodes in a fraction of the memory."
)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``extmem`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file-size limit becomes an error (EFBIG) instead of a kill
    commands = {
        "train": _run_train,
        "predict": _run_predict,
        "evaluate": _run_evaluate,
        "pack": _run_pack,
        "prune": _run_prune,
        "synth": _run_synth,
        "demo": _run_demo,
    }
    try:
        commands[args.command](args)
    except ExtmemError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"extmem: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"extmem: error: {_OUT_OF_MEMORY}", file=sys.stderr)
        return 2
    except xgb.core.XGBoostError as exc:
        if args.debug:
            traceback.print_exc()
        reason = next((line for line in str(exc).splitlines() if line.strip()), "unknown error")
        print(f"extmem: error: {_OUT_OF_MEMORY if 'bad_alloc' in reason else 'XGBoost failed: ' + reason}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment, not extmem: a full disk, a file-size limit, permissions
        if args.debug:
            traceback.print_exc()
        where = f": {exc.filename}" if exc.filename else ""
        print(f"extmem: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("extmem: interrupted; nothing was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
