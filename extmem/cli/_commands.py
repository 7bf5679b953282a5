"""One function per command: flags -> library options -> one library call -> a summary on stdout."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from extmem._presets import preset_named
from extmem.cli._summary import cv_summary, evaluation_text, explanation_text, memory_text, train_summary
from extmem.errors import OptionError


def _progress(args: argparse.Namespace) -> bool | None:
    """Progress bars: off with --no-progress, else when stderr is a terminal."""
    return False if args.no_progress else None


def _kmer_encoding(args: argparse.Namespace) -> Any:
    if args.kmers_from is None and args.hash_kmers is None:
        if args.k is not None or args.signed_hash:
            msg = "--k and --signed-hash need --kmers-from or --hash-kmers."
            raise OptionError(msg)
        return None
    if args.kmers_from is None and args.k is not None:
        msg = "--k needs --kmers-from (folded k-mer columns keep their own k)."
        raise OptionError(msg)
    from extmem._layout import KmerEncoding

    return KmerEncoding(width=args.hash_kmers, k=args.k, sequence_column=args.kmers_from, signed=args.signed_hash)


def _row_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"filter": args.filter, "max_rows": args.max_rows, "batch_rows": args.batch_rows, "strict_categories": args.strict_categories}


def _dataset_options(args: argparse.Namespace) -> dict[str, Any]:
    preset = preset_named(args.preset).options(args.label)
    return {
        "label": args.label or preset["label"],
        "label_map": args.label_map or preset["label_map"],
        "zero_is_missing": preset["zero_is_missing"],
        "kmers": _kmer_encoding(args),
        "weight": args.weight,
        "qid": args.qid,
        "features": args.features,
        "drop": args.drop,
        "categorical": args.categorical,
        "max_categories": args.max_categories,
        **_row_options(args),
    }


_XGBOOST_ONLY_FLAGS = ("rounds", "checkpoint_every", "cache", "prefetch", "sketch_rows", "scheduler", "encoded_cache")
_SINGLE_MACHINE_FLAGS = ("checkpoint_every", "cache", "prefetch", "encoded_cache")
_INCREMENTAL_ONLY_FLAGS = ("epochs", "class_weight", "seed")


def _given(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """The flags among ``names`` the command line sets, to any value, as typed (``--early-stopping``)."""
    return [f"--{name.replace('_', '-')}" for name in names if name in args.given]


def _check_train_flags(args: argparse.Namespace) -> None:
    misplaced = _given(args, _XGBOOST_ONLY_FLAGS if args.algorithm != "xgboost" else _INCREMENTAL_ONLY_FLAGS)
    if misplaced:
        which = "--algorithm xgboost" if args.algorithm != "xgboost" else "the incremental algorithms (--algorithm sgd_logistic, ...)"
        msg = f"{misplaced[0]} applies to {which} only; this run trains --algorithm {args.algorithm}."
        raise OptionError(msg)
    single_machine = _given(args, _SINGLE_MACHINE_FLAGS) if args.scheduler is not None else []
    if single_machine:
        msg = f"{single_machine[0]} does not apply to distributed training (--scheduler)."
        raise OptionError(msg)


def _params(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``--param`` pairs as a dict; a key given more than once becomes a list (``eval_metric``)."""
    params: dict[str, Any] = {}
    for key, value in pairs:
        if key in params:
            previous = params[key]
            params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            params[key] = value
    return params


def _train(args: argparse.Namespace) -> None:
    _check_train_flags(args)
    shared = {
        "out": args.out,
        "overwrite": args.overwrite,
        "params": _params(args.param),
        "valid": args.valid,
        "valid_fraction": args.valid_fraction,
        "group_by": args.group_by,
        "cache_dir": args.cache_dir,
        "page_rows": args.page_rows,
        "memory_budget": args.memory_budget,
        "early_stopping_rounds": args.early_stopping,
        **_dataset_options(args),
    }
    if args.scheduler is not None:
        from extmem.run._distributed import train_distributed

        report = train_distributed(args.scheduler, args.data, rounds=args.rounds, sketch_rows=args.sketch_rows, **shared).report
    elif args.algorithm != "xgboost":
        from extmem.run._incremental import train_incremental

        report = train_incremental(
            args.data,
            algorithm=args.algorithm,
            epochs=args.epochs,
            class_weight=args.class_weight,
            seed=args.seed,
            progress=_progress(args),
            **shared,
        ).report
    else:
        from extmem.run._xgboost import train

        report = train(
            args.data,
            rounds=args.rounds,
            checkpoint_every=args.checkpoint_every,
            sketch_rows=args.sketch_rows,
            cache=args.cache,
            prefetch=args.prefetch,
            encoded_cache=args.encoded_cache,
            progress=_progress(args),
            **shared,
        ).report
    print(train_summary(report, args.out))


def _cv(args: argparse.Namespace) -> None:
    if args.encoded_cache is not None:
        raise OptionError("--encoded-cache does not apply to cross-validation: each fold reads other rows.")
    from extmem.run._cv import MATRIX_OPTIONS, cross_validate

    result = cross_validate(
        args.data,
        folds=args.folds,
        group_by=args.group_by,
        seed=args.seed,
        rounds=args.rounds,
        params=_params(args.param),
        early_stopping_rounds=args.early_stopping,
        out=args.out,
        overwrite=args.overwrite,
        progress=_progress(args),
        **{name: getattr(args, name) for name in MATRIX_OPTIONS},
        **_dataset_options(args),
    )
    print(cv_summary(result, args.out))


def _resume(args: argparse.Namespace) -> None:
    from extmem.run._xgboost import resume

    result = resume(args.model_dir, cache_dir=args.cache_dir, progress=_progress(args))
    print(train_summary(result.report, args.model_dir))


def _predict(args: argparse.Namespace) -> None:
    from extmem.score._predict import predict

    report = predict(
        args.model,
        args.data,
        args.out,
        keep=args.keep,
        memory_budget=args.memory_budget,
        overwrite=args.overwrite,
        progress=_progress(args),
        **_row_options(args),
    )
    print(
        f"wrote {report['rows']:,} rows ({', '.join(report['columns'])}) to {report['out']} in {report['seconds']:.1f} s; {memory_text(report)}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from extmem.score._evaluate import evaluate

    result = evaluate(
        args.model,
        args.data,
        label=args.label,
        label_map=args.label_map,
        weight=args.weight,
        qid=args.qid,
        out=args.out,
        plot=args.plot,
        overwrite=args.overwrite,
        memory_budget=args.memory_budget,
        progress=_progress(args),
        **_row_options(args),
    )
    print(evaluation_text(result))


def _explain(args: argparse.Namespace) -> None:
    from extmem.score._explain import explain

    report = explain(
        args.model,
        args.data,
        args.out,
        keep=args.keep,
        top=args.top,
        full=args.full,
        group_by=args.group_by,
        interactions=args.interactions,
        plot=args.plot,
        memory_budget=args.memory_budget,
        overwrite=args.overwrite,
        progress=_progress(args),
        **_row_options(args),
    )
    print(explanation_text(report))


def _pack(args: argparse.Namespace) -> None:
    from extmem.tools._pack import pack

    report = pack(
        args.src,
        args.dst,
        block_pattern=args.block,
        batch_rows=args.batch_rows,
        row_group_rows=args.row_group_rows,
        overwrite=args.overwrite,
        progress=_progress(args),
    )
    print(
        f"packed {report['shards']} shard(s), {report['rows']:,} rows, into {args.dst} in {report['seconds']:.1f} s: "
        f"{report['input_bytes'] / 2**20:,.1f} MiB -> {report['output_bytes'] / 2**20:,.1f} MiB; {memory_text(report)}"
    )


def _prune(args: argparse.Namespace) -> None:
    from extmem.tools._prune import PruneOptions, prune

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
        keep=args.keep,
        options=options,
        output_format=args.format,
        batch_rows=args.batch_rows,
        memory_budget=args.memory_budget,
        row_group_rows=args.row_group_rows,
        overwrite=args.overwrite,
        progress=_progress(args),
    )
    counts = ", ".join(f"{count} {reason}" for reason, count in manifest["dropped_counts"].items() if count)
    print(
        f"kept {len(manifest['kept']):,} of {len(manifest['kept']) + len(manifest['dropped']):,} feature columns"
        f" (dropped {counts or 'none'}); {manifest['rows_out']:,} rows written {manifest['format']} to {args.dst} in {manifest['seconds']:.1f} s;"
        f" {memory_text(manifest)}"
    )


def _synth(args: argparse.Namespace) -> None:
    from extmem.tools._synth import SynthOptions, synth

    options = SynthOptions(
        rows=args.rows, shards=args.shards, k=args.k, seed=args.seed, seq_len=args.seq_len, row_group_rows=args.row_group_rows
    )
    paths = synth(args.out_dir, options, overwrite=args.overwrite, progress=_progress(args))
    print(f"wrote {len(paths)} shard(s), {args.rows:,} rows, to {args.out_dir}")


def _demo(args: argparse.Namespace) -> None:
    from extmem.run._xgboost import train
    from extmem.tools._synth import SynthOptions, synth

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="extmem-demo-"))
    data, valid, model = root / "data", root / "valid", root / "model"
    try:
        print(f"generating {args.rows:,} training rows in {data} and {args.rows // 5:,} validation rows in {valid}")
        synth(data, SynthOptions(rows=args.rows, shards=args.shards, seed=0), progress=_progress(args))
        synth(valid, SynthOptions(rows=max(args.rows // 5, 1), shards=1, seed=1), progress=_progress(args))
        result = train(
            data,
            out=model,
            valid=valid,
            rounds=args.rounds,
            early_stopping_rounds=10,
            progress=_progress(args),
            **preset_named("splice-sites").options(),
        )
        print(train_summary(result.report, str(model)))
    finally:
        if not args.dir:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(valid, ignore_errors=True)
            if not model.exists():
                shutil.rmtree(root, ignore_errors=True)
    if not args.dir:
        print(f"the demo data was removed; the model stays in {model} (pass --dir to keep everything)")


_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "train": _train,
    "cv": _cv,
    "resume": _resume,
    "predict": _predict,
    "evaluate": _evaluate,
    "explain": _explain,
    "pack": _pack,
    "prune": _prune,
    "synth": _synth,
    "demo": _demo,
}


def run_command(args: argparse.Namespace) -> None:
    """Run the command that ``args`` names."""
    _COMMANDS[args.command](args)
