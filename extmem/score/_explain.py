"""Explain: a trained model + a dataset -> each row's top feature contributions and exact importance tables, streamed.

Contributions are XGBoost's exact TreeSHAP values (``pred_contribs``; coefficient × (value − mean)
for linear incremental models), computed batch by batch in the model's own feature representation.
At 4,122 features and 3 classes a row's contributions take 48 KB, so none are kept: each batch's
are reduced to every row's top-K features (written in input order) and added into per-feature
sums (exact over all rows), then dropped. Memory is the batch's, planned with the contribution
matrix counted, whatever the number of rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extmem._atomic import write_atomically, write_json
from extmem._contracts import DataProfile, RawBatch
from extmem._defaults import DEFAULT_EXPLAIN_TOP
from extmem._destinations import check_output_folder, publish_folder, staging_folder
from extmem._layout import FeatureLayout
from extmem._measure import MemoryMonitor
from extmem._progress import ProgressBar
from extmem._sink import TableSink
from extmem.encode._blocks import Encoder
from extmem.encode._probe import plan_pass
from extmem.errors import OptionError, is_integer
from extmem.read._costs import sink_bytes
from extmem.read._dataset import DatasetLike, as_dataset, column_names, no_rows_error, takes_dataset_options
from extmem.read._reader import read_batches
from extmem.score._attributions import (
    TOP_TYPE,
    AttributionSums,
    GroupedSums,
    InteractionSums,
    RowSample,
    kmer_view,
    top_contributions,
)
from extmem.score._evaluate import pyplot
from extmem.score._explain_plots import IMPORTANCE_PLOT, SUMMARY_PLOT, plot_explanations
from extmem.score._model import ModelLike, as_model
from extmem.score._predict import check_no_clash, prediction_array, prediction_field
from extmem.score._scorer import Scorer

CONTRIBUTIONS_FILE = "contributions.parquet"
IMPORTANCE_FILE = "importance.parquet"
GROUP_IMPORTANCE_FILE = "importance_groups.parquet"
SUMMARY_FILE = "importance.json"
KMERS_FILE = "kmers.parquet"
INTERACTIONS_FILE = "interactions.parquet"
EXPLAIN_FILES = (
    CONTRIBUTIONS_FILE,
    IMPORTANCE_FILE,
    GROUP_IMPORTANCE_FILE,
    SUMMARY_FILE,
    KMERS_FILE,
    INTERACTIONS_FILE,
    IMPORTANCE_PLOT,
    SUMMARY_PLOT,
)

CONTRIBUTION_COPIES = 2
"""XGBoost's buffer of a batch's contributions and the numpy array it is copied into."""
REDUCTION_BYTES_PER_VALUE = 24
"""Temporaries per contribution of one output while a batch is reduced (|φ|, argpartition's int64 positions, masks; a linear
model's dense centred features)."""
SAMPLE_ROWS = 1000
"""Rows kept (a uniform sample of the stream) for the summary plot."""
MAX_GROUPS = 100
"""Distinct values of a ``group_by`` column: the plan holds a table of sums for each."""
SUMMARY_TOP = 5
SUM_BYTES_PER_FEATURE = 40
"""An :class:`AttributionSums` per output and feature: four 8-byte sums and a temporary."""
SAMPLE_BYTES_PER_VALUE = 12
MAX_INTERACTION_ROW_BYTES = 4 * 2**20
"""XGBoost computes every pair's interaction, (features + 1)² values per output and row: above this a row, interactions are refused."""


def _feature_positions(layout: FeatureLayout, chosen: Sequence[str], option: str) -> list[int]:
    """Positions of the ``chosen`` features (names, or globs such as ``6mer_AA*``) in the model's layout, in the order chosen;
    refused in one line when one matches none of the model's features."""
    positions: list[int] = []
    for pattern in chosen:
        found = (
            [layout.names.index(pattern)]
            if pattern in layout.names
            else [i for i, name in enumerate(layout.names) if fnmatchcase(name, pattern)]
        )
        if not found:
            msg = f"The {option!r} feature {pattern!r} matches none of the model's {len(layout.names):,} features (see Model.layout.names)."
            raise OptionError(msg, options=(option,))
        positions.extend(position for position in found if position not in positions)
    return positions


@dataclass(frozen=True)
class ContributionColumns:
    """What ``contributions.parquet`` holds per output: the ``top`` features of each row, or every contribution of the ``full`` features."""

    top: int
    full: tuple[str, ...]
    full_columns: tuple[int, ...]
    names: pa.Array
    """The model's feature names, as the top lists name them."""

    @classmethod
    def of(cls, layout: FeatureLayout, top: int, full: Sequence[str]) -> ContributionColumns:
        """The columns for ``layout``, refused in one line when ``top`` is not a positive integer or a ``full`` feature unknown."""
        if not is_integer(top) or top < 1:
            msg = f"The 'top' option must be a positive number of features. Got {top!r} instead."
            raise OptionError(msg, options=("top",))
        positions = tuple(_feature_positions(layout, full, "full"))
        return cls(top, tuple(layout.names[i] for i in positions), positions, pa.array(layout.names, type=pa.string()))

    def schema(self, trained: Scorer, carried: pa.Schema) -> pa.Schema:
        """The file's schema: the ``carried`` columns, the prediction, then per output its bias and contributions."""
        fields = [prediction_field(trained)]
        for output in trained.explained_outputs:
            fields.append(pa.field(f"bias_{output}", pa.float32()))
            if self.full:
                fields.extend(pa.field(f"shap_{output}_{feature}", pa.float32()) for feature in self.full)
            else:
                fields.append(pa.field(f"top_{output}", TOP_TYPE))
        check_no_clash(carried, [f.name for f in fields])
        return pa.schema([*carried, *fields])

    def row_bytes(self, outputs: int) -> int:
        """Bytes of a row of the file besides the carried columns: the prediction, and per output its bias and contributions."""
        name_bytes = self.names.nbytes / max(len(self.names), 1)  # a top entry's feature name, with its offset
        per_output = 4 * len(self.full) if self.full else 4 + self.top * (4 + name_bytes)
        return int(8 + outputs * (4 + per_output))

    def batch(
        self, trained: Scorer, batch: RawBatch, values: np.ndarray, raw: np.ndarray, schema: pa.Schema, keep: Sequence[str]
    ) -> pa.RecordBatch:
        """A batch's rows of the file, from its contributions ``values`` and raw predictions ``raw``."""
        arrays: list[pa.Array] = [batch.carried.column(name) for name in keep] if batch.carried is not None else []
        arrays.append(prediction_array(trained, raw))
        for output in range(values.shape[1]):
            arrays.append(pa.array(values[:, output, -1]))
            if self.full:
                arrays.extend(pa.array(values[:, output, column]) for column in self.full_columns)
            else:
                arrays.append(top_contributions(values[:, output, :-1], self.top, self.names))
        return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _interaction_row_bytes(outputs: int, features: int) -> int:
    return outputs * (features + 1) ** 2 * 4 * CONTRIBUTION_COPIES


def _interaction_features(trained: Scorer, chosen: Sequence[str]) -> list[int]:
    """Positions of the ``interactions`` features, refused when unknown or when a row's interactions would be too large."""
    if not chosen:
        return []
    positions = _feature_positions(trained.layout, chosen, "interactions")
    names = trained.layout.names
    size = _interaction_row_bytes(len(trained.explained_outputs), len(names))
    if size > MAX_INTERACTION_ROW_BYTES:
        msg = (
            f"SHAP interactions of a model with {len(names):,} features take {size / 2**20:,.0f} MiB a row (XGBoost computes every pair); "
            f"they are computed up to {MAX_INTERACTION_ROW_BYTES // 2**20} MiB a row (about {int((MAX_INTERACTION_ROW_BYTES / CONTRIBUTION_COPIES / 4 / len(trained.explained_outputs)) ** 0.5) - 1:,} features). "
            "Train a model on fewer features (--features, or extmem prune) to see its interactions."
        )
        raise OptionError(msg, options=("interactions",))
    if not trained.has_interactions:
        msg = f"SHAP interaction values need a tree model; this one is {trained.objective!r}, a model whose features do not interact."
        raise OptionError(msg, options=("interactions",))
    return positions


@takes_dataset_options()
def explain(
    model: ModelLike,
    data: DatasetLike,
    out: str | os.PathLike[str],
    *,
    keep: str | Sequence[str] | None = None,
    top: int = DEFAULT_EXPLAIN_TOP,
    full: str | Sequence[str] | None = None,
    group_by: str | None = None,
    interactions: str | Sequence[str] | None = None,
    plot: bool = False,
    memory_budget: int | str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Feature contributions of ``model`` on ``data``, streamed into the folder ``out``; mirrors ``extmem explain``.

    Writes ``contributions.parquet`` (per row, in input order: the ``keep`` columns, the predicted
    class, and per output its bias and the ``top`` features by |contribution|, or every
    contribution of the ``full`` features), ``importance.parquet`` and ``importance.json`` (per
    output and feature: mean |SHAP|, mean SHAP, positive and negative shares, non-zero rows, exact
    over all rows, beside the model's own importance), ``kmers.parquet`` (k-mer features ranked,
    with dinucleotide motifs in the JSON), ``importance_groups.parquet`` with ``group_by``,
    ``interactions.parquet`` with ``interactions`` (mean |SHAP interaction| of every pair of those
    features, tree models with few enough features), and with ``plot`` ``importance.png`` and
    ``summary.png`` (matplotlib: ``pip install 'extmem[plot]'``).
    ``options`` are :class:`Dataset` fields (``filter``, ``max_rows``, ``batch_rows``); batch rows are
    planned with the contributions counted, under ``memory_budget`` if given. The folder appears
    only when complete; an existing one is replaced only with ``overwrite`` and only if extmem wrote it.
    """
    target = check_output_folder(out, overwrite=overwrite, own_names=EXPLAIN_FILES, manifest=None)
    if plot:
        pyplot()
    trained = as_model(model)
    columns = ContributionColumns.of(trained.layout, top, column_names(full, "full"))
    outputs, names = trained.explained_outputs, trained.layout.names
    pairs = _interaction_features(trained, column_names(interactions, "interactions"))
    own = trained.own_importance()  # a model without contributions (naive Bayes) fails here, before any reading
    dataset = as_dataset(data, options)
    kept = column_names(keep, "keep")
    carry = dict.fromkeys(kept, "keep") | ({group_by: "group_by"} if group_by is not None and group_by not in kept else {})
    started = time.perf_counter()
    with MemoryMonitor() as monitor:
        selection = trained.select(dataset, carry)
        schema = columns.schema(trained, pa.schema([selection.carried_schema.field(name) for name in kept]))
        features = len(names)
        row_bytes = len(outputs) * (features + 1) * 4 * CONTRIBUTION_COPIES + (features + 1) * REDUCTION_BYTES_PER_VALUE
        row_bytes += _interaction_row_bytes(len(outputs), features) if pairs else 0

        def held(profile: DataProfile) -> int:
            tables = (1 + (MAX_GROUPS if group_by is not None else 0)) * len(outputs) * features * SUM_BYTES_PER_FEATURE
            sampled = SAMPLE_ROWS * max(profile.stored_values_per_row, 1) * SAMPLE_BYTES_PER_VALUE if plot else 0
            return int(
                tables + sampled + sink_bytes(profile.carried_bytes_per_row + columns.row_bytes(len(outputs)), profile.rows, len(schema))
            )

        plan = plan_pass(selection, memory_budget, extra_bytes=held, row_bytes=row_bytes)
        overall = AttributionSums(len(outputs), features)
        grouped = GroupedSums(group_by, len(outputs), features, MAX_GROUPS) if group_by is not None else None
        sample = RowSample(SAMPLE_ROWS)
        interacting = InteractionSums(len(outputs), pairs) if pairs else None
        encoder = Encoder(selection.layout, strict_categories=dataset.strict_categories)
        with staging_folder(target) as staging:
            with (
                TableSink(staging.path / CONTRIBUTIONS_FILE, schema) as sink,
                ProgressBar(selection.rows, "explaining", "rows", progress) as bar,
            ):
                for batch in read_batches(selection, plan.batch_rows, whole_rows=plan.page_rows):
                    X = encoder(batch).X
                    values = trained.contributions(X)
                    overall.add(values)
                    if grouped is not None and batch.carried is not None:
                        grouped.add(values, batch.carried.column(grouped.column))
                    if plot:
                        sample.add(X)
                    if interacting is not None:
                        interacting.add(trained.interactions(X))
                    sink.write(columns.batch(trained, batch, values, trained.raw_predict(X), schema, kept))
                    del values
                    bar.update(batch.rows)
            if overall.rows == 0:
                raise no_rows_error(dataset, "to explain")
            summary, files = _write_tables(staging.path, trained, own, overall, grouped, selection.carried_schema)
            if interacting is not None:
                _write_parquet(staging.path / INTERACTIONS_FILE, interacting.table(outputs, names))
                files.append(INTERACTIONS_FILE)
            if plot:
                files.extend(plot_explanations(staging.path, trained, overall, sample, plan.batch_rows))
            publish_folder(staging, target, replace=overwrite)
    return {
        "rows": overall.rows,
        "out": os.fspath(out),
        "files": sorted(files),
        **summary,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_bytes": monitor.peak_rss_bytes,
        "peak_anon_bytes": monitor.peak_anon_bytes,
        "memory_plan": plan.to_dict(),
    }


def _write_parquet(path: Path, table: pa.Table) -> None:
    write_atomically(path, lambda file: pq.write_table(table, file))


def _write_tables(
    folder: Path, trained: Scorer, own: dict[str, np.ndarray], overall: AttributionSums, grouped: GroupedSums | None, carried: pa.Schema
) -> tuple[dict[str, Any], list[str]]:
    """Write the importance tables (beside the model's ``own`` measures), the k-mer view and the JSON summary into ``folder``.

    Returns the summary and the files written.
    """
    outputs, names = trained.explained_outputs, trained.layout.names
    table = overall.table(outputs, names, own)
    _write_parquet(folder / IMPORTANCE_FILE, table)
    files = [CONTRIBUTIONS_FILE, IMPORTANCE_FILE, SUMMARY_FILE]
    kmer_table, motifs = kmer_view(outputs, names, overall)
    if kmer_table is not None:
        _write_parquet(folder / KMERS_FILE, kmer_table)
        files.append(KMERS_FILE)
    if grouped is not None:
        value_type = carried.field(grouped.column).type
        value_type = value_type.value_type if pa.types.is_dictionary(value_type) else value_type
        _write_parquet(folder / GROUP_IMPORTANCE_FILE, grouped.table(outputs, names, own, value_type))
        files.append(GROUP_IMPORTANCE_FILE)
    order = np.argsort(-overall.mean_absolute, axis=1, kind="stable")[:, :SUMMARY_TOP]
    summary = {
        "rows": overall.rows,
        "outputs": outputs,
        "mean_bias": dict(zip(outputs, overall.mean_bias.tolist())),
        "top_features": {
            output: [{"feature": names[i], "mean_abs_shap": float(overall.mean_absolute[k, i])} for i in order[k]]
            for k, output in enumerate(outputs)
        },
        "motifs": motifs,
        "group_by": grouped.column if grouped is not None else None,
        "groups": {str(key): part.rows for key, part in grouped.groups.items()} if grouped is not None else {},
    }
    write_json(folder / SUMMARY_FILE, {**summary, "importance": table.to_pylist()})
    return summary, files
