"""Source stage: parquet shards -> projected, filtered `SourceBatch`es, row group by row group."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from extmem._memory import release_freed_memory
from extmem.encode._features import FeatureColumns, FeaturePlan
from extmem.encode._kmers import KMER_COLUMN, KmerEncoding
from extmem.encode._layout import FeatureLayout
from extmem.errors import LabelError, SchemaError, read_failure
from extmem.read._categories import categorical_dictionaries, small_string_columns
from extmem.read._dataset import SPLICE_LABELS, Dataset
from extmem.read._filters import RowFilter, parse_filter
from extmem.read._holdout import holdout_mask
from extmem.read._scan import NUMERIC, STRING, UnionSchema, discover_shards, union_schema

logger = logging.getLogger("extmem")

_PARQUET = ds.ParquetFileFormat()
_LOCAL = pafs.LocalFileSystem()


@dataclass(frozen=True)
class SourceBatch:
    """Feature values, labels as class ids / floats, and where they came from."""

    features: FeatureColumns
    label: np.ndarray | None
    weight: np.ndarray | None
    shard: str
    row_group: int
    carried: pa.RecordBatch | None = None


@dataclass(frozen=True)
class RowGroupRef:
    """One row group of one shard, with its row count from the footer."""

    shard: str
    index: int
    rows: int


@dataclass
class SourceCounters:
    """What one pass over the source read."""

    rows: int = 0
    batches: int = 0
    row_groups_read: int = 0
    row_groups_skipped: int = 0


class Source:
    """Reads a :class:`Dataset` as a stream of :class:`SourceBatch`.

    Pass ``layout`` to read another dataset (validation, prediction) with exactly the
    feature columns of a trained model; columns it lacks become missing values. ``carry``
    names columns (ids, any type) passed through unchanged in :attr:`SourceBatch.carried`.
    ``announce`` logs the non-numeric columns left out of the features. ``batch_rows`` (from
    the dataset) is how many rows one read decodes; a memory plan may lower it.
    """

    def __init__(self, dataset: Dataset, layout: FeatureLayout | None = None, carry: Sequence[str] = (), *, announce: bool = True) -> None:
        self.dataset = dataset
        self.batch_rows = dataset.batch_rows
        self.schema: UnionSchema = union_schema(discover_shards(dataset.paths))
        self.row_filter: RowFilter | None = parse_filter(dataset.filter) if dataset.filter else None
        self.carry = tuple(carry)
        self._announce = announce
        self._check_special_columns()
        self.dropped: dict[str, str] = {}
        if layout is None:
            self._check_sequence_column(dataset.kmers)
        self.layout = self._check_layout(layout) if layout is not None else self._select_features()
        self.counters = SourceCounters()
        self._positions = {name: i for i, name in enumerate(self.layout.names)}
        self._scan_schema, self._extras = self._scan_plan()
        release_freed_memory()

    # -- planning -------------------------------------------------------------------------

    def _column_or_fail(self, name: str, role: str) -> None:
        """Refuse a column that the option ``role`` names unless every shard holds it."""
        if name not in self.schema.columns:
            msg = f"The '{role}' column {name!r} is in none of the {len(self.schema.shards)} shards (first: {self.schema.shards[0]!r})."
            raise (LabelError if role == "label" else SchemaError)(msg, options=(role,))
        missing = self.schema.missing_from(name)
        if missing:
            msg = f"The '{role}' column {name!r} is missing from the shard {missing[0]!r}" + (
                f" and {len(missing) - 1} more." if len(missing) > 1 else "."
            )
            raise (LabelError if role == "label" else SchemaError)(msg, options=(role,))

    def _check_special_columns(self) -> None:
        label = self.dataset.label
        if label is not None:
            self._column_or_fail(label, "label")
            column = self.schema.columns[label]
            if column.kind not in (NUMERIC, STRING):
                msg = f"The label column {label!r} has type {column.arrow_type} (in {column.first_shard!r}); expected strings or numbers."
                raise LabelError(msg)
        if self.dataset.weight is not None:
            self._column_or_fail(self.dataset.weight, "weight")
            if self.schema.columns[self.dataset.weight].kind != NUMERIC:
                msg = f"The weight column {self.dataset.weight!r} must be numeric."
                raise SchemaError(msg)
        if self.row_filter is not None:
            unknown = sorted(self.row_filter.columns - set(self.schema.columns))
            if unknown:
                msg = f"The 'filter' {self.row_filter.text!r} names the column {unknown[0]!r}, which is in no shard."
                raise SchemaError(msg, options=("filter",))
        holdout = self.dataset.holdout
        if holdout is not None and holdout.group_by is not None:
            self._column_or_fail(holdout.group_by, "group_by")
        for name in self.carry:
            if name not in self.schema.columns:
                msg = f"The 'keep' column {name!r} is in none of the {len(self.schema.shards)} shards (first: {self.schema.shards[0]!r})."
                raise SchemaError(msg, options=("keep",))
        for name in self._read_columns():
            column = self.schema.columns.get(name)
            if column is not None and column.packed:
                msg = f"The column {name!r} is stored in a packed block (first: {column.first_shard!r}); it can only be a feature."
                raise SchemaError(msg)

    def _read_columns(self) -> list[str]:
        """Non-feature columns each pass reads: label, weight, group, filter and carried columns."""
        filter_columns = sorted(self.row_filter.columns) if self.row_filter else []
        group_by = self.dataset.holdout.group_by if self.dataset.holdout is not None else None
        names: list[str] = []
        for name in (self.dataset.label, self.dataset.weight, group_by, *filter_columns, *self.carry):
            if name is not None and name not in names:
                names.append(name)
        return names

    @property
    def label_map(self) -> dict[str, int] | None:
        """The string -> class id map, or None for numeric labels."""
        label = self.dataset.label
        if label is None or self.schema.columns[label].kind != STRING:
            return None
        return dict(self.dataset.label_map or SPLICE_LABELS)

    def _matching(self, patterns: tuple[str, ...], option: str) -> list[str]:
        selected: list[str] = []
        for pattern in patterns:
            matches = [name for name in self.schema.columns if fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                msg = f"The '{option}' entry {pattern!r} matches no column of the dataset."
                raise SchemaError(msg, options=(option,))
            selected.extend(m for m in matches if m not in selected)
        return selected

    def _reject_non_numeric(self, names: list[str]) -> None:
        for name in names:
            column = self.schema.columns.get(name)
            if column is not None and column.kind != NUMERIC:
                msg = (
                    f"The column {name!r} is {column.arrow_type} (in {column.first_shard!r}) and cannot be a numeric feature; "
                    "leave it out of the 'features', or make it a 'categorical' feature."
                )
                raise SchemaError(msg, options=("features", "categorical"))

    def _select_features(self) -> FeatureLayout:
        special = {self.dataset.label, self.dataset.weight}
        candidates = [name for name in self.schema.columns if name not in special]
        if self.dataset.features:
            features = [name for name in self._matching(self.dataset.features, "features") if name not in special]
            self._reject_non_numeric(features)
        else:
            features = [name for name in candidates if self.schema.columns[name].kind == NUMERIC]
        dropped = set(self._matching(self.dataset.drop, "drop"))
        for name in candidates:
            if name in dropped:
                self.dropped[name] = "in 'drop'"
            elif name not in features:
                kind = self.schema.columns[name].kind
                self.dropped[name] = "not numeric" if kind != NUMERIC else "not among the 'features'"
        features = [name for name in features if name not in dropped]
        categories = categorical_dictionaries(self.schema, self.dataset.categorical, self.dataset.max_categories)
        for name in categories:
            self.dropped.pop(name, None)
        features = [name for name in features if name not in categories] + list(categories)
        non_numeric = [name for name, reason in self.dropped.items() if reason == "not numeric"]
        if non_numeric and self._announce:
            small = small_string_columns(self.schema, non_numeric)
            hint = f"; few distinct values in the first row group, so usable as 'categorical': {', '.join(small)}" if small else ""
            logger.info(
                "extmem: not using %d non-numeric column(s) as features: %s%s",
                len(non_numeric),
                ", ".join(non_numeric),
                hint,
                extra={"options": ("categorical",)},
            )
        encoding = self.dataset.kmers
        if encoding is not None:
            folded = [name for name in features if KMER_COLUMN.match(name)]
            if encoding.sequence_column is None and not folded:
                msg = f"Folding k-mer columns into hashed features ('width') found no k-mer count columns ('6mer_ACGTAC', ...) in {self.schema.shards[0]!r} or the other shards."
                raise SchemaError(msg, options=("width",))
            for name in folded:
                self.dropped[name] = (
                    "k-mer column, hashed"
                    if encoding.sequence_column is None
                    else f"k-mer column, counted from {encoding.sequence_column!r}"
                )
            features = [name for name in features if not KMER_COLUMN.match(name)]
        if not features and encoding is None:
            msg = f"No feature columns are left in {self.schema.shards[0]!r} and the other shards: every column is the label, non-numeric, or dropped."
            raise SchemaError(msg)
        packed = {name for name in features if self.schema.columns[name].packed}
        layout = FeatureLayout.from_names(
            features, self.dataset.zero_is_missing, self.dataset.label, self.label_map, always_sparse=packed, categories=categories
        )
        if encoding is None:
            return layout
        return FeatureLayout.with_kmers(layout.names, layout.zero_is_missing, encoding, layout.label, layout.label_map, categories)

    def _check_sequence_column(self, encoding: KmerEncoding | None) -> None:
        if encoding is None or encoding.sequence_column is None:
            return
        self._column_or_fail(encoding.sequence_column, "sequence_column")
        column = self.schema.columns[encoding.sequence_column]
        if column.kind != STRING:
            msg = f"The sequence column {encoding.sequence_column!r} ('sequence_column') is {column.arrow_type} (in {column.first_shard!r}); it must hold sequences as strings."
            raise SchemaError(msg, options=("sequence_column",))

    def _check_layout(self, layout: FeatureLayout) -> FeatureLayout:
        self._check_sequence_column(layout.kmers)
        if layout.kmers is None and not any(name in self.schema.columns for name in layout.names):
            msg = (
                f"None of the model's {len(layout.names)} feature columns (first: {layout.names[0]!r}) is in "
                f"{self.schema.shards[0]!r} or the other shards; is this the right dataset?"
            )
            raise SchemaError(msg)
        self._reject_non_numeric([name for name in layout.names[: layout.kmer_offset] if name not in layout.categories])
        label_map = (layout.label_map or self.label_map) if self.label_map is not None else None
        return FeatureLayout(layout.names, layout.zero_is_missing, self.dataset.label, label_map, layout.kmers, layout.categories)

    def _scan_plan(self) -> tuple[pa.Schema, list[str]]:
        """Schema of every column read (for statistics pruning) and the non-feature columns read."""
        extras = [name for name in self._read_columns() if name not in self._positions]
        columns = self.schema.columns
        scan_schema = pa.schema(
            [(name, columns[name].arrow_type if name in columns else pa.float32()) for name in [*self.layout.names, *extras]]
        )
        return scan_schema, extras

    @property
    def has_wide_shards(self) -> bool:
        """Whether some shard stores its features as ordinary (wide) columns, which decode slowly."""
        return len(self.schema.packed_blocks) < len(self.schema.shards)

    # -- reading --------------------------------------------------------------------------

    def row_groups(self) -> list[RowGroupRef]:
        """Row groups in read order; with ``max_rows`` and no filter, only those holding the first rows."""
        refs: list[RowGroupRef] = []
        limit = self.dataset.max_rows if self.row_filter is None else None
        total = 0
        for shard in self.schema.shards:
            for index, rows in enumerate(self.schema.shard_row_groups[shard]):
                if limit is not None and total >= limit:
                    return refs
                refs.append(RowGroupRef(shard, index, rows))
                total += rows
        return refs

    def sample_row_groups(self, target_rows: int, seed: int) -> list[RowGroupRef]:
        """Row groups drawn uniformly at random (without replacement) until they hold ``target_rows``."""
        candidates = self.row_groups()
        chosen: list[int] = []
        rows = 0
        for position in np.random.default_rng(seed).permutation(len(candidates)):
            if rows >= target_rows:
                break
            chosen.append(int(position))
            rows += candidates[position].rows
        return [candidates[i] for i in sorted(chosen)]

    def batches(self, row_groups: list[RowGroupRef] | None = None) -> Iterator[SourceBatch]:
        """One pass over the dataset (or only ``row_groups``), row group by row group, in shard order."""
        self.counters = SourceCounters()
        remaining = self.dataset.max_rows if row_groups is None else None
        selected: dict[str, set[int]] | None = None
        if row_groups is not None:
            selected = {}
            for ref in row_groups:
                selected.setdefault(ref.shard, set()).add(ref.index)
        for shard in self.schema.shards:
            if selected is not None and shard not in selected:
                continue
            for batch, row_group, plan in self._shard_batches(shard, None if selected is None else selected[shard], self.batch_rows):
                if remaining is not None:
                    if remaining <= 0:
                        return
                    batch = batch.slice(0, remaining)
                    remaining -= batch.num_rows
                if batch.num_rows == 0:
                    continue
                self.counters.rows += batch.num_rows
                self.counters.batches += 1
                yield self._split(batch, shard, row_group, plan)

    def probe(self, rows: int) -> tuple[int, SourceBatch] | None:
        """The first non-empty batch of at most ``rows`` rows, and the bytes pyarrow decoded for it; None if no row matches."""
        for shard in self.schema.shards:
            shard_batches = self._shard_batches(shard, None, rows)
            try:
                for batch, row_group, plan in shard_batches:
                    if batch.num_rows:
                        return batch.nbytes, self._split(batch, shard, row_group, plan)
            finally:
                shard_batches.close()
        return None

    def _row_groups_to_read(self, shard: str, file: pq.ParquetFile, selected: set[int] | None) -> list[int]:
        """Row groups of ``shard`` (or of ``selected``) that the filter may match, judged by their statistics."""
        groups = [i for i in range(file.num_row_groups) if selected is None or i in selected]
        if self.row_filter is None:
            return groups
        fragment = _PARQUET.make_fragment(os.path.abspath(shard), filesystem=_LOCAL)
        pieces = fragment.split_by_row_group(self.row_filter.expression, schema=self._scan_schema)
        matching = {piece.row_groups[0].id for piece in pieces}
        return [i for i in groups if i in matching]

    def _shard_plan(self, shard: str, file: pq.ParquetFile) -> tuple[FeaturePlan, list[str]]:
        """How this shard's columns become features, and every physical column a pass reads from it."""
        present = set(file.schema_arrow.names)
        plan = FeaturePlan.build(self.layout, present, self.schema.packed_blocks.get(shard), self.dataset.strict_categories)
        columns = plan.columns
        return plan, columns + [name for name in self._extras if name in present and name not in columns]

    def _shard_batches(self, shard: str, selected: set[int] | None, batch_rows: int) -> Iterator[tuple[pa.RecordBatch, int, FeaturePlan]]:
        """Batches of ``batch_rows`` rows, filtered, holding the present columns this pass needs."""
        row_group = -1
        try:
            with pq.ParquetFile(shard) as file:
                plan, columns = self._shard_plan(shard, file)
                row_groups = self._row_groups_to_read(shard, file, selected)
                self.counters.row_groups_skipped += (file.num_row_groups if selected is None else len(selected)) - len(row_groups)
                for row_group in row_groups:
                    self.counters.row_groups_read += 1
                    first_row = 0
                    for batch in file.iter_batches(batch_size=batch_rows, row_groups=[row_group], columns=columns, use_threads=True):
                        if self.dataset.holdout is not None:
                            rows = batch.num_rows
                            batch = batch.filter(pa.array(holdout_mask(self.dataset.holdout, batch, shard, row_group, first_row)))
                            first_row += rows
                        if self.row_filter is not None:
                            batch = self._with_columns(batch, self.row_filter.columns).filter(self.row_filter.expression)
                        yield batch, row_group, plan
            release_freed_memory()
        except (pa.ArrowException, OSError) as exc:
            raise read_failure(shard, exc, f"row group {row_group} of " if row_group >= 0 else "") from None

    def _with_columns(self, batch: pa.RecordBatch, names: Iterable[str]) -> pa.RecordBatch:
        """Add the columns in ``names`` that ``batch`` lacks, as nulls of their union type."""
        for name in names:
            if batch.schema.get_field_index(name) < 0:
                batch = batch.append_column(name, pa.nulls(batch.num_rows, self._scan_schema.field(name).type))
        return batch

    def _split(self, batch: pa.RecordBatch, shard: str, row_group: int, plan: FeaturePlan) -> SourceBatch:
        features = plan.features(batch, f"row group {row_group} of {shard!r}", self.layout.kmer_offset)
        label = weight = None
        if self.dataset.label is not None:
            label = self._labels(batch.column(self.dataset.label), shard, row_group)
        if self.dataset.weight is not None:
            weight = _finite(batch.column(self.dataset.weight), f"weight column {self.dataset.weight!r}", shard, row_group)
        carried = None
        if self.carry:
            batch = self._with_columns(batch, self.carry)
            arrays = [batch.column(name).cast(self._scan_schema.field(name).type) for name in self.carry]
            carried = pa.RecordBatch.from_arrays(arrays, schema=self.carried_schema)
        return SourceBatch(features, label, weight, shard, row_group, carried)

    @property
    def carried_schema(self) -> pa.Schema:
        """Schema of :attr:`SourceBatch.carried`: the ``carry`` columns with their union types."""
        return pa.schema([self._scan_schema.field(name) for name in self.carry])

    def _labels(self, values: pa.Array, shard: str, row_group: int) -> np.ndarray:
        label_map = self.layout.label_map
        if label_map is None:
            return _finite(values, f"label column {self.dataset.label!r}", shard, row_group)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        keys = list(label_map)
        codes = pc.index_in(values, value_set=pa.array(keys, type=values.type))
        if codes.null_count:
            if values.null_count:
                msg = (
                    f"The label column {self.dataset.label!r} has {values.null_count} null value(s) in row group {row_group} of {shard!r}."
                )
                raise LabelError(msg)
            unknown = pc.unique(pc.filter(values, pc.is_null(codes))).to_pylist()
            msg = (
                f"The label column {self.dataset.label!r} has value(s) {unknown[:5]} in row group {row_group} of {shard!r} "
                f"that the label map {label_map} does not cover; give a 'label_map' that does."
            )
            raise LabelError(msg, options=("label_map",))
        ids = np.array([label_map[key] for key in keys], dtype=np.float32)
        return ids[codes.to_numpy()]


def _finite(values: pa.Array, what: str, shard: str, row_group: int) -> np.ndarray:
    array = values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(array)
    if bad.any():
        msg = f"The {what} has {int(bad.sum())} null or non-finite value(s) in row group {row_group} of {shard!r}."
        raise LabelError(msg)
    return array.astype(np.float32)
