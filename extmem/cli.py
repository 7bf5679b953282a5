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

from .cli_args import build_parser
from .cluster import train_distributed
from .errors import ExtmemError, OptionError
from .incremental import train_incremental
from .kmers import KmerEncoding
from .sink import BOOSTER_MODEL_FILE, INCREMENTAL_MODEL_FILE, REPORT_FILE
from .synth import SynthOptions, synth


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
    incremental = "epochs" in report
    done = f"{report['model']}: {report['epochs']} epochs" if incremental else f"{report['rounds']} rounds"
    if "workers" in report:
        done += f" on {len(report['workers'])} workers"
        storage = f"per worker; disk caches {report['cache_bytes'] / 2**20:,.0f} MiB in all, removed"
    elif incremental:
        storage = f"spool {report['cache_bytes'] / 2**20:,.0f} MiB, removed"
    elif report["memory_plan"]["train"]["cache"] == "disk":
        storage = f"disk cache {report['cache_bytes'] / 2**20:,.0f} MiB, removed"
    else:
        storage = "matrix held in memory"
    lines = [
        f"trained {done} on {report['rows']:,} rows x {report['features']:,} features in {report['seconds']:.1f} s{resumed}",
        f"{_memory(report)}; {storage}",
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
    model_file = INCREMENTAL_MODEL_FILE if incremental else BOOSTER_MODEL_FILE
    lines.append(f"model: {Path(out) / model_file}; report: {Path(out) / REPORT_FILE}")
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


_XGBOOST_ONLY_FLAGS = ("rounds", "checkpoint_every", "resume", "cache", "prefetch", "sketch_rows", "scheduler")
_SINGLE_MACHINE_FLAGS = ("checkpoint_every", "resume", "cache", "prefetch")
_INCREMENTAL_ONLY_FLAGS = ("epochs", "class_weight", "seed")


def _given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags among ``names`` set to something other than their default, as typed (``--early-stopping``)."""
    defaults = build_parser().parse_args(["train"])
    return [f"--{name.replace('_', '-')}" for name in names if getattr(args, name) != getattr(defaults, name)]


def _run_train(args: argparse.Namespace) -> None:
    from .train import resume, train

    misplaced = _given(args, _XGBOOST_ONLY_FLAGS if args.model != "xgboost" else _INCREMENTAL_ONLY_FLAGS)
    if misplaced:
        which = "--model xgboost" if args.model != "xgboost" else "the incremental models (--model sgd_logistic, ...)"
        msg = f"{misplaced[0]} applies to {which} only; this run trains --model {args.model}."
        raise OptionError(msg)
    single_machine = _given(args, _SINGLE_MACHINE_FLAGS) if args.scheduler is not None else []
    if single_machine:
        msg = f"{single_machine[0]} does not apply to distributed training (--scheduler)."
        raise OptionError(msg)
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
    shared = {
        "out": args.out,
        "params": dict(args.param),
        "valid": args.valid,
        "valid_fraction": args.valid_fraction,
        "group_by": args.group_by,
        "cache_dir": args.cache_dir,
        "page_rows": args.page_rows,
        "memory_budget": args.memory_budget,
        **_dataset_options(args),
    }
    progress = not args.no_progress
    if args.scheduler is not None:
        report = train_distributed(
            args.scheduler, args.data, rounds=args.rounds, early_stopping_rounds=args.early_stopping, sketch_rows=args.sketch_rows, **shared
        ).report
    elif args.model != "xgboost":
        report = train_incremental(
            args.data,
            model=args.model,
            epochs=args.epochs,
            class_weight=args.class_weight,
            seed=args.seed,
            early_stopping_rounds=args.early_stopping,
            progress=progress,
            **shared,
        ).report
    else:
        report = train(
            args.data,
            rounds=args.rounds,
            early_stopping_rounds=args.early_stopping,
            checkpoint_every=args.checkpoint_every,
            sketch_rows=args.sketch_rows,
            cache=args.cache,
            prefetch=args.prefetch,
            progress=progress,
            **shared,
        ).report
    print(_summary(report, args.out))


def _row_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"filter": args.filter, "max_rows": args.max_rows, "batch_rows": args.batch_rows, "strict_categories": args.strict_categories}


def _run_predict(args: argparse.Namespace) -> None:
    from .predict import predict

    report = predict(
        args.model,
        args.data,
        args.out,
        keep=args.keep,
        memory_budget=args.memory_budget,
        progress=not args.no_progress,
        **_row_options(args),
    )
    print(
        f"wrote {report['rows']:,} rows ({', '.join(report['columns'])}) to {report['out']} in {report['seconds']:.1f} s; {_memory(report)}"
    )


def _run_evaluate(args: argparse.Namespace) -> None:
    from .predict import evaluate
    from .sink import write_json

    result = evaluate(
        args.model,
        args.data,
        label=args.label,
        weight=args.weight,
        plot=args.plot,
        memory_budget=args.memory_budget,
        progress=not args.no_progress,
        **_row_options(args),
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
        memory_budget=args.memory_budget,
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
