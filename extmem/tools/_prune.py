"""`extmem prune`: drop constant, duplicate and highly correlated feature columns, with bounded memory.

Pass 1 streams every shard once and keeps, per column, exact statistics over all rows (merged
batch by batch with Chan's formulas), an order-sensitive 64-bit fingerprint of its values (equal
fingerprints = duplicate columns), and a uniform row sample from each shard as sparse rows.
Correlations are computed from the sample's sparse Gram matrix, so the whole k-mer block takes
part. Pass 2 rewrites each shard without the dropped columns (packed by default), into a staging
folder that replaces DST only when complete, with ``_manifest.json``.

Statistics are taken on the values XGBoost trains on: float32, with absent or null counts as 0
and nulls of other columns as missing.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from extmem._atomic import write_json
from extmem._contracts import DataProfile
from extmem._defaults import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_CORR_THRESHOLD,
    DEFAULT_MAX_SAMPLE_ROWS,
    DEFAULT_ROW_GROUP_ROWS,
    DEFAULT_SAMPLE_ROWS_PER_SHARD,
)
from extmem._destinations import MANIFEST_FILE, check_output_folder, publish_folder, staging_folder
from extmem._measure import MemoryMonitor
from extmem._presets import KMER_PATTERN
from extmem._progress import ProgressBar
from extmem._version import __version__
from extmem.encode._blocks import Encoder
from extmem.encode._probe import plan_pass
from extmem.errors import OptionError, SchemaError, check_positive_int
from extmem.read._costs import sink_bytes
from extmem.read._dataset import Dataset, column_names
from extmem.read._discover import check_not_replacing_input, partition_path
from extmem.read._holdout import splitmix64, text_hash
from extmem.read._reader import read_batches
from extmem.read._selection import select_dataset
from extmem.read._storage import absolute
from extmem.tools._pack import folder_columns, output_name, rewrite_shard, scanned_shards

_GRAM_BLOCK = 512
_SAMPLE_BYTES_PER_VALUE = 24
"""Sampled rows are kept as float64 CSR (12 bytes a value), then stacked into one matrix (twice that at the peak)."""
_CORRELATION_BYTES_PER_CELL = 12
"""The float32 p x p correlation matrix and the float64 covariance blocks that fill it."""
_COLUMN_BLOCK = 256


@dataclass(frozen=True)
class PruneOptions:
    """Thresholds of ``extmem prune``; validated on creation."""

    corr_threshold: float = DEFAULT_CORR_THRESHOLD
    sample_rows_per_shard: int = DEFAULT_SAMPLE_ROWS_PER_SHARD
    max_sample_rows: int = DEFAULT_MAX_SAMPLE_ROWS
    max_corr_cols: int | None = None
    min_variance: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.corr_threshold <= 1:
            msg = f"The 'corr_threshold' option must be in (0, 1]. Got {self.corr_threshold!r} instead."
            raise OptionError(msg, options=("corr_threshold",))
        for name in ("sample_rows_per_shard", "max_sample_rows"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.max_corr_cols, "max_corr_cols", allow_none=True)
        if self.min_variance < 0:
            msg = f"The 'min_variance' option must be >= 0. Got {self.min_variance!r} instead."
            raise OptionError(msg, options=("min_variance",))


@dataclass
class ColumnStats:
    """Per-column statistics over every row seen, mergeable batch by batch."""

    n_columns: int
    rows: int = 0
    present: np.ndarray = field(init=False)
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    minimum: np.ndarray = field(init=False)
    maximum: np.ndarray = field(init=False)
    nonzero: np.ndarray = field(init=False)
    fingerprint: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        p = self.n_columns
        self.present, self.nonzero = np.zeros(p, dtype=np.int64), np.zeros(p, dtype=np.int64)
        self.mean, self.m2 = np.zeros(p), np.zeros(p)
        self.minimum, self.maximum = np.full(p, np.inf), np.full(p, -np.inf)
        self.fingerprint = np.zeros(p, dtype=np.uint64)

    def update(self, values: np.ndarray) -> None:
        """Add a batch: ``values`` is (rows, columns) float32 with NaN for missing.

        Works on blocks of columns so that float64 temporaries stay a few MB whatever the width.
        """
        row_keys = splitmix64(np.arange(self.rows, self.rows + values.shape[0], dtype=np.uint64))
        for start in range(0, self.n_columns, _COLUMN_BLOCK):
            block = slice(start, start + _COLUMN_BLOCK)
            self._update_block(values[:, block], block, row_keys)
        self.rows += values.shape[0]

    def _update_block(self, values: np.ndarray, block: slice, row_keys: np.ndarray) -> None:
        missing = np.isnan(values)
        count = (~missing).sum(axis=0)
        wide = values.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            batch_mean = np.where(count > 0, np.nansum(wide, axis=0) / np.maximum(count, 1), 0.0)
            batch_m2 = np.nansum((wide - batch_mean) ** 2, axis=0)
        present = self.present[block]
        total = present + count
        delta = batch_mean - self.mean[block]
        safe_total = np.maximum(total, 1)
        self.mean[block] += delta * count / safe_total
        self.m2[block] += batch_m2 + delta**2 * present * count / safe_total
        self.present[block] = total
        self.minimum[block] = np.fmin(self.minimum[block], np.where(missing, np.inf, wide).min(axis=0))
        self.maximum[block] = np.fmax(self.maximum[block], np.where(missing, -np.inf, wide).max(axis=0))
        self.nonzero[block] += ((values != 0) & ~missing).sum(axis=0)
        bits = np.where(missing, np.float32(np.nan), values).view(np.uint32).astype(np.uint64)
        with np.errstate(over="ignore"):
            self.fingerprint[block] += splitmix64(bits ^ row_keys[:, None]).sum(axis=0, dtype=np.uint64)

    @property
    def variance(self) -> np.ndarray:
        """Population variance over present values (0 where none)."""
        return np.where(self.present > 0, self.m2 / np.maximum(self.present, 1), 0.0)


def _constant_reasons(stats: ColumnStats, names: tuple[str, ...], options: PruneOptions) -> dict[str, dict[str, Any]]:
    """Columns in which XGBoost would see a single value (or nothing) in every row, or too little variance."""
    dropped: dict[str, dict[str, Any]] = {}
    variance = stats.variance
    for j, name in enumerate(names):
        if stats.present[j] == 0:
            dropped[name] = {"reason": "constant", "statistic": {"present": 0}}
        elif stats.present[j] == stats.rows and stats.minimum[j] == stats.maximum[j]:
            dropped[name] = {"reason": "constant", "statistic": {"value": float(stats.minimum[j])}}
        elif options.min_variance > 0 and variance[j] <= options.min_variance and stats.present[j] == stats.rows:
            dropped[name] = {"reason": "low variance", "statistic": {"variance": float(variance[j])}}
    return dropped


def _duplicate_reasons(stats: ColumnStats, names: tuple[str, ...], skip: set[str]) -> dict[str, dict[str, Any]]:
    """Columns whose values equal an earlier column's in every row (same fingerprint, count and mean)."""
    first: dict[tuple[int, int, float], str] = {}
    dropped: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        if name in skip:
            continue
        key = (int(stats.fingerprint[j]), int(stats.present[j]), float(stats.mean[j]))
        if key in first:
            dropped[name] = {"reason": "duplicate", "statistic": {"of": first[key]}}
        else:
            first[key] = name
    return dropped


def _correlation_reasons(
    sample: sp.csr_matrix, names: tuple[str, ...], candidates: list[int], stats: ColumnStats, options: PruneOptions
) -> dict[str, dict[str, Any]]:
    """Greedy pruning in column order: a column goes when |r| >= threshold with a column already kept."""
    if options.max_corr_cols is not None and len(candidates) > options.max_corr_cols:
        by_variance = sorted(candidates, key=lambda j: -stats.variance[j])[: options.max_corr_cols]
        candidates = sorted(by_variance)
    selected = sample if len(candidates) == sample.shape[1] else sample[:, candidates]
    matrix = sp.csc_matrix(selected, dtype=np.float64)
    del selected
    rows = matrix.shape[0]
    if rows < 2 or not candidates:
        return {}
    columns_of_entries = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))
    missing = np.isnan(matrix.data)
    if missing.any():  # nulls of non-count columns: the column's mean, so they add nothing to its covariances
        matrix.data[missing] = stats.mean[np.asarray(candidates)][columns_of_entries[missing]]
    means = np.bincount(columns_of_entries, weights=matrix.data, minlength=matrix.shape[1]) / rows
    squares = np.bincount(columns_of_entries, weights=matrix.data**2, minlength=matrix.shape[1]) / rows
    del columns_of_entries
    std = np.sqrt(np.clip(squares - means**2, 0, None))
    safe_std = np.where(std > 0, std, 1.0)
    # The one dense p x p array, float32, filled block by block from float64 covariances.
    correlation = np.empty((len(candidates), len(candidates)), dtype=np.float32)
    transposed = matrix.T  # a CSR view of the CSC matrix: no copy
    for start in range(0, len(candidates), _GRAM_BLOCK):
        block = slice(start, start + _GRAM_BLOCK)
        covariance = (transposed @ matrix[:, block]).toarray() / rows - np.outer(means, means[block])
        correlation[:, block] = covariance / np.outer(safe_std, safe_std[block])
    del transposed, matrix
    varying = std > 1e-12 * np.maximum(1.0, np.abs(means))
    kept = np.zeros(len(candidates), dtype=bool)
    dropped: dict[str, dict[str, Any]] = {}
    for j in range(len(candidates)):
        if not varying[j]:
            continue
        against = np.abs(np.where(kept, correlation[j], 0.0))
        best = int(np.argmax(against)) if kept.any() else -1
        if best >= 0 and against[best] >= options.corr_threshold:
            r = float(correlation[j, best])
            dropped[names[candidates[j]]] = {"reason": "correlated", "statistic": {"with": names[candidates[best]], "r": round(r, 6)}}
        else:
            kept[j] = True
    return dropped


def _sample_positions(rows: int, wanted: int, seed: int, shard: str) -> np.ndarray:
    """Sorted row positions drawn uniformly without replacement from a shard of ``rows`` rows."""
    rng = np.random.default_rng([seed, text_hash(partition_path(shard), seed)])  # like-named shards of partitions draw apart
    return np.sort(rng.choice(rows, size=min(rows, wanted), replace=False))


def prune(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    label: str | None = None,
    keep: str | Sequence[str] | None = None,
    block_pattern: str = KMER_PATTERN,
    options: PruneOptions | None = None,
    output_format: str = "packed",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Prune the numeric feature columns of ``src`` into the folder ``dst``; mirrors ``extmem prune``.

    Drops columns that are constant over the whole dataset, duplicates of an earlier column,
    and columns correlated at ``|r| >= corr_threshold`` (on a uniform sample of rows) with an
    earlier kept column. String columns, the label and the ``keep`` columns (names or globs: weights,
    query ids, coordinates a later run needs) are kept as they are; ``block_pattern``
    names the count columns (absent counts are zeros; they form the packed block). The output is
    written packed (``output_format="wide"`` keeps ordinary columns) and replaces ``dst`` only when
    complete; ``dst/_manifest.json`` lists kept and dropped columns with reasons. Under
    ``memory_budget`` (default: the process's data limit) ``batch_rows`` is the largest allowed.
    Returns the manifest.
    """
    options = options or PruneOptions()
    check_positive_int(row_group_rows, "row_group_rows")
    if output_format not in ("packed", "wide"):
        msg = f"The 'output_format' option must be 'packed' or 'wide'. Got {output_format!r} instead."
        raise OptionError(msg, options=("output_format",))
    target = check_output_folder(dst, overwrite=overwrite, option="dst")
    scanned = scanned_shards(src)
    shards = scanned.shards
    check_not_replacing_input(dst, shards)
    started = time.perf_counter()
    with MemoryMonitor() as monitor:
        dataset = Dataset(os.fspath(src), label=label, batch_rows=batch_rows, zero_is_missing=block_pattern)
        kept_as_is = column_names(keep, "keep")
        if kept_as_is:
            unmatched = [
                name
                for name in kept_as_is
                if name not in scanned.columns and not any(fnmatch.fnmatchcase(c, name) for c in scanned.columns)
            ]
            if unmatched:
                raise SchemaError(f"The 'keep' column {unmatched[0]!r} is in none of the shards of {os.fspath(src)!r}.", options=("keep",))
            dataset = replace(dataset, drop=kept_as_is)  # not features: never tested, so never dropped
        selection = select_dataset(dataset, announce=False)
        names = selection.layout.names
        stats = ColumnStats(len(names))
        per_shard = max(1, min(options.sample_rows_per_shard, options.max_sample_rows // len(shards)))
        sample_rows = min(selection.schema.rows, per_shard * len(shards))
        tested = min(len(names), options.max_corr_cols or len(names))

        shard_rows = dict(zip(selection.schema.shards, selection.schema.shard_rows))

        def sample_and_correlations(profile: DataProfile) -> int:  # and the rewrite's output row group (its rows about the input's)
            sample = sample_rows * profile.stored_values_per_row * _SAMPLE_BYTES_PER_VALUE + _CORRELATION_BYTES_PER_CELL * tested**2
            return int(sample + sink_bytes(profile.arrow_bytes_per_row, max(shard_rows.values()), len(scanned.columns), row_group_rows))

        plan = plan_pass(selection, memory_budget, dense=True, extra_bytes=sample_and_correlations)
        batch_rows = plan.batch_rows
        sampled: list[sp.csr_matrix] = []
        current, offset, positions = "", 0, np.zeros(0, dtype=np.int64)
        sparse_mask = selection.layout.sparse_mask
        encoder = Encoder(selection.layout)
        with ProgressBar(selection.schema.rows, "statistics", "rows", progress) as bar:
            for batch in read_batches(selection, batch_rows, whole_rows=plan.page_rows):
                if batch.shard != current:
                    current, offset = batch.shard, 0
                    positions = _sample_positions(shard_rows[current], per_shard, options.seed, current)
                values = encoder.dense(batch)
                counts = values[:, sparse_mask]
                counts[np.isnan(counts)] = 0
                values[:, sparse_mask] = counts
                stats.update(values)
                rows = values.shape[0]
                chosen = positions[(positions >= offset) & (positions < offset + rows)] - offset
                if chosen.size:
                    sampled.append(sp.csr_matrix(values[chosen]))
                offset += rows
                bar.update(rows)
        dropped = _constant_reasons(stats, names, options)
        dropped.update(_duplicate_reasons(stats, names, set(dropped)))
        candidates = [j for j, name in enumerate(names) if name not in dropped]
        sample = sp.vstack(sampled, format="csr") if sampled else sp.csr_matrix((0, len(names)), dtype=np.float32)
        del sampled
        dropped.update(_correlation_reasons(sample, names, candidates, stats, options))
        del sample
        dropped_counts = Counter(d["reason"] for d in dropped.values())
        if len(dropped) == len(names):
            reasons = ", ".join(f"{count} {reason}" for reason, count in dropped_counts.items())
            msg = f"Pruning {os.fspath(src)!r} would drop every one of its {len(names):,} feature columns ({reasons}): nothing would be left to train on."
            raise SchemaError(msg)
        rows_out = 0
        with staging_folder(target) as staging, ProgressBar(len(shards), "writing", "shards", progress) as bar:
            for shard in shards:
                rows_out += rewrite_shard(
                    shard,
                    staging.path / output_name(scanned, shard),
                    block_pattern=block_pattern,
                    drop=set(dropped),
                    packed_output=output_format == "packed",
                    batch_rows=batch_rows,
                    row_group_rows=row_group_rows,
                    folder_values=folder_columns(scanned, shard, drop=dropped),
                )
                bar.update(1)
            manifest = {
                "extmem_version": __version__,
                "source": [absolute(shard) for shard in shards],
                "command": "prune",
                "format": output_format,
                "parameters": {
                    **options.__dict__,
                    "label": label,
                    "keep": list(kept_as_is),
                    "batch_rows": batch_rows,
                    "row_group_rows": row_group_rows,
                },
                "rows_in": stats.rows,
                "rows_out": rows_out,
                "sample_rows": int(sum(min(rows, per_shard) for rows in shard_rows.values())),
                "kept": [name for name in names if name not in dropped],
                "dropped": dropped,
                "dropped_counts": {reason: dropped_counts[reason] for reason in ("constant", "low variance", "duplicate", "correlated")},
                "seconds": round(time.perf_counter() - started, 3),
                "memory_plan": plan.to_dict(),
                "files": [output_name(scanned, shard) for shard in shards],
            }
            if rows_out != stats.rows:
                msg = f"Wrote {rows_out} rows but read {stats.rows}; nothing was published."
                raise RuntimeError(msg)
            write_json(staging.path / MANIFEST_FILE, manifest)
            publish_folder(staging, target, replace=overwrite)
    manifest.update(peak_rss_bytes=monitor.peak_rss_bytes, peak_anon_bytes=monitor.peak_anon_bytes)
    return manifest
