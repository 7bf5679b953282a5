"""Select: a dataset's schema -> its :class:`Selection` (feature layout, dropped columns, filter, columns to read).

:func:`select` is a pure function of the scanned schema, the dataset's options and the
dictionaries of its string columns; :func:`select_dataset` runs the steps before it (discover,
scan, dictionaries) and logs what was left out. Given a model's layout, it checks the dataset
against that layout instead of choosing features.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa

from extmem._layout import KMER_COLUMN, FeatureLayout, reads_as_number
from extmem.errors import LabelError, SchemaError
from extmem.read._dataset import Dataset
from extmem.read._dictionaries import collect_values, few_valued_columns
from extmem.read._discover import discover_shards, partition_values
from extmem.read._filters import RowFilter, parse_filter, quoted
from extmem.read._labels import label_map_of
from extmem.read._scan import NUMERIC, OTHER, STRING, Schema, scan

logger = logging.getLogger("extmem")

MAX_STRING_CLASSES = 1024
"""Most distinct values a string label column may hold when its classes come from the data."""


@dataclass(frozen=True)
class Notice:
    """Something selection left out that the user should hear about; ``options`` are the options it names."""

    message: str
    options: tuple[str, ...] = ()


Carry = Sequence[str] | Mapping[str, str]
"""Columns passed through unchanged, optionally each with the option that asked for it (for messages; default 'keep')."""


@dataclass(frozen=True)
class Selection:
    """What to read of a dataset: its schema, feature layout and filter, the other columns a pass reads, and what was left out."""

    dataset: Dataset
    schema: Schema
    layout: FeatureLayout
    row_filter: RowFilter | None
    carry: tuple[str, ...]
    extras: tuple[str, ...]
    """Non-feature columns each pass reads: label, weight, group, filter and carried columns."""
    scan_schema: pa.Schema
    """The union types of every column read (features first), for statistics pruning and missing columns."""
    dropped: Mapping[str, str] = field(default_factory=dict)
    notices: tuple[Notice, ...] = ()

    @property
    def carried_schema(self) -> pa.Schema:
        """Schema of :attr:`RawBatch.carried`: the ``carry`` columns with their union types."""
        return pa.schema([self.scan_schema.field(name) for name in self.carry])

    @property
    def rows(self) -> int:
        """Rows the selection can yield at most: the shards' rows, capped by ``max_rows``."""
        rows = self.schema.rows
        return min(rows, self.dataset.max_rows) if self.dataset.max_rows is not None else rows

    @property
    def expected_rows(self) -> int:
        """Rows the selection is expected to yield: :attr:`rows`, times its side's share of a holdout split (a filter may leave fewer)."""
        holdout = self.dataset.holdout
        if holdout is None:
            return self.rows
        return round(self.rows * (holdout.fraction if holdout.side == "valid" else 1 - holdout.fraction))


def _fail(message: str, *options: str, error: type[Exception] = SchemaError) -> Exception:
    return error(message, options=options)


def _require_column(schema: Schema, name: str, option: str, *, role: str | None = None) -> None:
    """Refuse a column that ``option`` names unless every shard holds it (``role``: who names it, when not the user's option)."""
    error = LabelError if option == "label" else SchemaError
    what, options = (role, ()) if role is not None else (f"'{option}' column", (option,))
    if name not in schema.columns:
        raise _fail(
            f"The {what} {name!r} is in none of the {len(schema.shards)} shards (first: {schema.shards[0]!r}).", *options, error=error
        )
    missing = schema.missing_from(name)
    if missing:
        more = f" and {len(missing) - 1} more." if len(missing) > 1 else "."
        raise _fail(f"The {what} {name!r} is missing (or null in every row) from the shard {missing[0]!r}{more}", *options, error=error)


def _check_columns(schema: Schema, dataset: Dataset, row_filter: RowFilter | None, carry: Mapping[str, str]) -> None:
    label, weight = dataset.label, dataset.weight
    if label is not None:
        _require_column(schema, label, "label")
        column = schema.columns[label]
        if column.kind not in (NUMERIC, STRING):
            msg = f"The label column {label!r} has type {column.arrow_type} (in {column.first_shard!r}); expected strings or numbers."
            raise _fail(msg, "label", error=LabelError)
    if weight is not None:
        _require_column(schema, weight, "weight")
        if schema.columns[weight].kind != NUMERIC:
            raise _fail(f"The 'weight' column {weight!r} must be numeric; it is {schema.columns[weight].arrow_type}.", "weight")
    if dataset.qid is not None:
        _require_column(schema, dataset.qid, "qid")
        column = schema.columns[dataset.qid]
        if not (pa.types.is_integer(column.arrow_type) or column.kind == STRING):
            raise _fail(f"The 'qid' column {dataset.qid!r} must hold integers or text (query ids); it is {column.arrow_type}.", "qid")
    if row_filter is not None:
        unknown = sorted(row_filter.columns - set(schema.columns))
        if unknown:
            raise _fail(f"The 'filter' {quoted(row_filter.text)} names the column {unknown[0]!r}, which is in no shard.", "filter")
    holdout = dataset.holdout
    if holdout is not None and holdout.group_by is not None:
        _require_column(schema, holdout.group_by, "group_by")  # a split needs every row's group
        _check_group_column(schema, holdout.group_by)
    for name, option in carry.items():
        if name not in schema.columns:
            raise _fail(
                f"The '{option}' column {name!r} is in none of the {len(schema.shards)} shards (first: {schema.shards[0]!r}).", option
            )
        if option == "group_by":
            _check_group_column(schema, name)


def _carried(schema: Schema, carry: Carry) -> dict[str, str]:
    """``carry`` as column → option, each column once; a name that is no column but a pattern (``gene_*``) gives the columns it matches."""
    carried: dict[str, str] = {}
    for name, option in (carry if isinstance(carry, Mapping) else dict.fromkeys(carry, "keep")).items():
        for column in _matching(schema, (name,), option) if _is_pattern(schema, name) else [name]:
            carried.setdefault(column, option)
    return carried


def _check_group_column(schema: Schema, name: str) -> None:
    if schema.columns[name].kind not in (NUMERIC, STRING):
        raise _fail(f"The 'group_by' column {name!r} is {schema.columns[name].arrow_type}; groups must be strings or numbers.", "group_by")


def _extras(dataset: Dataset, row_filter: RowFilter | None, carry: Carry) -> tuple[str, ...]:
    filter_columns = sorted(row_filter.columns) if row_filter else []
    group_by = dataset.holdout.group_by if dataset.holdout is not None else None
    names: list[str] = []
    for name in (dataset.label, dataset.weight, dataset.qid, group_by, *filter_columns, *carry):
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)


def _is_pattern(schema: Schema, name: str) -> bool:
    """Whether ``name`` is a pattern of column names (``gene_*``) rather than a column (names match exactly first)."""
    return name not in schema.columns and glob.has_magic(name)


def _matching(schema: Schema, patterns: tuple[str, ...], option: str) -> list[str]:
    selected: list[str] = []
    for pattern in patterns:
        matches = [pattern] if pattern in schema.columns else [name for name in schema.columns if fnmatch.fnmatchcase(name, pattern)]
        if not matches:
            raise _fail(f"The '{option}' entry {pattern!r} matches no column of the dataset.", option)
        selected.extend(m for m in matches if m not in selected)
    return selected


def _reject_non_numeric(schema: Schema, names: Sequence[str]) -> None:
    for name in names:
        column = schema.columns.get(name)
        if column is not None and column.kind != NUMERIC:
            advice = (
                "leave it out of the 'features', or make it a 'categorical' feature"
                if column.kind == STRING
                else "leave it out of the 'features'"
            )
            msg = f"The column {name!r} is {column.arrow_type} (in {column.first_shard!r}) and cannot be a numeric feature; {advice}."
            raise _fail(msg, "features", "categorical")


PANDAS_INDEX = re.compile(r"__index_level_\d+__")
"""The row index pandas writes as a column: row numbers, never a feature unless named."""


def _choose_features(
    schema: Schema, dataset: Dataset, label_map: dict[str, int] | None, dictionaries: Mapping[str, tuple[str, ...]]
) -> tuple[FeatureLayout, dict[str, str], list[Notice]]:
    special = {dataset.label, dataset.weight, dataset.qid, dataset.holdout.group_by if dataset.holdout else None}
    special.add(dataset.kmers.sequence_column if dataset.kmers else None)  # its k-mers are features, not its text
    named = {*dataset.features, *dataset.categorical}  # a group column named outright is a feature too
    candidates = [name for name in schema.columns if name not in special or name in named]
    if dataset.features:
        features = [name for name in _matching(schema, dataset.features, "features") if name not in special or name in named]
        _reject_non_numeric(schema, features)
    else:
        features = [name for name in candidates if schema.columns[name].kind == NUMERIC and not PANDAS_INDEX.match(name)]
    dropped_names = set(_matching(schema, dataset.drop, "drop"))
    dropped: dict[str, str] = {}
    for name in candidates:
        if name in dropped_names:
            dropped[name] = "in 'drop'"
        elif PANDAS_INDEX.match(name) and name not in features:
            dropped[name] = "a pandas index (name it in 'features' to use it)"
        elif name not in features and name not in dataset.categorical:
            dropped[name] = "not numeric" if schema.columns[name].kind != NUMERIC else "not among the 'features'"
    categories = {name: dictionaries[name] for name in dataset.categorical}
    features = [name for name in features if name not in dropped_names and name not in categories] + list(categories)
    notices = []
    non_numeric = [name for name, reason in dropped.items() if reason == "not numeric"]
    if non_numeric:
        few = few_valued_columns(schema, non_numeric)
        hint = f"; few distinct values in the first row group, so usable as 'categorical': {', '.join(few)}" if few else ""
        notices.append(
            Notice(
                f"extmem: not using {len(non_numeric)} non-numeric column(s) as features: {', '.join(non_numeric)}{hint}", ("categorical",)
            )
        )
    encoding = dataset.kmers
    if encoding is not None:
        counted = [name for name in features if KMER_COLUMN.match(name)]
        if encoding.sequence_column is None and not counted:
            msg = f"Folding k-mer columns into hashed features ('width') found no k-mer count columns ('6mer_ACGTAC', ...) in {schema.shards[0]!r} or the other shards."
            raise _fail(msg, "width")
        for name in counted:
            dropped[name] = (
                "k-mer column, hashed" if encoding.sequence_column is None else f"k-mer column, counted from {encoding.sequence_column!r}"
            )
        features = [name for name in features if not KMER_COLUMN.match(name)]
    if not features and encoding is None:
        msg = (
            f"No feature columns are left in {schema.shards[0]!r} and the other shards: every column is the label, non-numeric, or dropped."
        )
        raise _fail(msg, "features", "drop")
    packed = {name for name in features if schema.columns[name].packed}
    layout = FeatureLayout.build(
        features,
        dataset.zero_is_missing,
        label=dataset.label,
        label_map=label_map,
        always_sparse=packed,
        categories=categories,
        kmers=encoding,
        qid=dataset.qid,
    )
    return layout, dropped, [*notices, *_missing_features(schema, layout)]


def _check_sequence_column(schema: Schema, sequence_column: str | None, *, from_model: bool) -> None:
    """The column k-mers are counted from must hold strings in every shard (named by the user, or by the model's layout)."""
    if sequence_column is None:
        return
    role = "model's sequence column" if from_model else None
    _require_column(schema, sequence_column, "sequence_column", role=role)
    column = schema.columns[sequence_column]
    if column.kind != STRING:
        given = " (the model counts k-mers from it)" if from_model else " ('sequence_column')"
        msg = f"The sequence column {sequence_column!r}{given} is {column.arrow_type} (in {column.first_shard!r}); it must hold sequences as strings."
        raise _fail(msg, *(() if from_model else ("sequence_column",)))


def _check_layout(schema: Schema, dataset: Dataset, layout: FeatureLayout, label_map: dict[str, int] | None) -> FeatureLayout:
    """The model's ``layout`` for reading ``dataset``: its features must be numeric where present; labels map as the model's did."""
    if layout.kmers is None and not any(name in schema.columns for name in layout.names):
        msg = (
            f"None of the model's {len(layout.names)} feature columns (first: {layout.names[0]!r}) is in "
            f"{schema.shards[0]!r} or the other shards; is this the right dataset?"
        )
        raise SchemaError(msg)
    for name in layout.names[: layout.kmer_offset]:
        column = schema.columns.get(name)
        if column is None:
            continue
        if name in layout.categories:  # strings or numbers, matched as text: numbers never match categories of words
            categories = layout.categories[name]
            words = column.kind == NUMERIC and categories and not any(reads_as_number(category) for category in categories)
            if column.kind == OTHER or words:
                raise SchemaError(
                    f"The column {name!r} is {column.arrow_type} in {column.first_shard!r}, but the model reads it as "
                    f"a categorical feature of {'strings such as ' + repr(categories[0]) if words else 'strings or numbers'}."
                )
        elif column.kind != NUMERIC:
            raise SchemaError(f"The column {name!r} is {column.arrow_type} in {column.first_shard!r}, but the model reads it as numbers.")
    return FeatureLayout(layout.names, layout.zero_is_missing, dataset.label, label_map, layout.kmers, layout.categories, layout.qid)


def _missing_features(schema: Schema, layout: FeatureLayout) -> list[Notice]:
    """Notices naming the feature columns some or all shards lack (count columns aside, which are often absent): missing there."""
    every = (1 << len(schema.shards)) - 1
    kept = [name for name, counts in zip(layout.names[: layout.kmer_offset], layout.zero_is_missing, strict=False) if not counts]
    absent = [name for name in kept if name not in schema.columns]
    partial = [name for name in kept if name in schema.columns and schema.columns[name].shards_mask != every]
    notices = []
    for names, where in (
        (absent, f"none of the {len(schema.shards)} shard(s) (first: {schema.shards[0]!r}), so missing in every row"),
        (partial, f"only some of the {len(schema.shards)} shards, so missing in the others' rows"),
    ):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            notices.append(Notice(f"extmem: {len(names)} feature column(s) are in {where}: {shown}"))
    return notices


def _scan_schema(schema: Schema, layout: FeatureLayout, extras: Sequence[str]) -> pa.Schema:
    columns = schema.columns
    features = set(layout.names)
    unique = list(dict.fromkeys([*layout.names, *(name for name in extras if name in columns or name in features)]))
    return pa.schema([(name, columns[name].arrow_type if name in columns else pa.float32()) for name in unique])


def select(
    dataset: Dataset,
    schema: Schema,
    dictionaries: Mapping[str, tuple[str, ...]],
    *,
    layout: FeatureLayout | None = None,
    carry: Carry = (),
) -> Selection:
    """The selection of ``dataset`` given its scanned ``schema`` and the ``dictionaries`` of its string columns (pure)."""
    row_filter = parse_filter(dataset.filter) if dataset.filter else None
    carry = _carried(schema, carry)
    _check_columns(schema, dataset, row_filter, carry)
    extras = _extras(dataset, row_filter, carry)
    for name in extras:
        column = schema.columns.get(name)
        if column is not None and column.packed:
            raise SchemaError(f"The column {name!r} is stored in a packed block (first: {column.first_shard!r}); it can only be a feature.")
    label_map = label_map_of(schema, dataset, dictionaries, layout)
    kmers = layout.kmers if layout is not None else dataset.kmers
    _check_sequence_column(schema, kmers.sequence_column if kmers is not None else None, from_model=layout is not None)
    if layout is None:
        chosen, dropped, notices = _choose_features(schema, dataset, label_map, dictionaries)
    else:
        chosen, dropped, notices = _check_layout(schema, dataset, layout, label_map), {}, _missing_features(schema, layout)
    return Selection(
        dataset, schema, chosen, row_filter, tuple(carry), extras, _scan_schema(schema, chosen, extras), dropped, tuple(notices)
    )


def _dictionary_limits(schema: Schema, dataset: Dataset, layout: FeatureLayout | None) -> dict[str, tuple[int, str]]:
    """The string columns whose values must be collected first: categorical features, and string labels without a label map."""
    limits: dict[str, tuple[int, str]] = {}
    if layout is None:
        for name in dataset.categorical:
            _require_column_somewhere(schema, name, "categorical")
            limits[name] = (dataset.max_categories, "categorical")
    label = dataset.label
    needs_classes = layout is None
    if (
        label is not None
        and dataset.label_map is None
        and needs_classes
        and label in schema.columns
        and schema.columns[label].kind == STRING
    ):
        limits[label] = (MAX_STRING_CLASSES, "label")
    return limits


def _require_column_somewhere(schema: Schema, name: str, option: str) -> None:
    column = schema.columns.get(name)
    if column is None:
        raise _fail(f"The '{option}' column {name!r} is in none of the {len(schema.shards)} shards (first: {schema.shards[0]!r}).", option)
    if column.kind == OTHER:
        raise _fail(
            f"The '{option}' column {name!r} is {column.arrow_type} (in {column.first_shard!r}); categorical columns hold strings or numbers.",
            option,
        )


def select_dataset(dataset: Dataset, *, layout: FeatureLayout | None = None, carry: Carry = (), announce: bool = True) -> Selection:
    """Discover and scan ``dataset``'s shards, collect the dictionaries it needs, and select (see :func:`select`).

    With ``layout`` (a model's), the dataset is read with exactly those features; columns it
    lacks are missing values. ``carry`` names columns passed through unchanged (ids for
    predictions), or maps each to the option that named it. ``announce`` logs the notices (columns left out of the features).
    """
    shards = discover_shards(dataset.paths)
    schema = scan(shards, partition_values(dataset.paths, shards))
    if any(_is_pattern(schema, name) for name in dataset.categorical):
        dataset = replace(dataset, categorical=tuple(_matching(schema, dataset.categorical, "categorical")))  # patterns: 'gene_*'
    if dataset.label is not None:
        _require_column(schema, dataset.label, "label")
    dictionaries = collect_values(schema, _dictionary_limits(schema, dataset, layout))
    selection = select(dataset, schema, dictionaries, layout=layout, carry=carry)
    if announce:
        for notice in selection.notices:
            logger.info(notice.message, extra={"options": notice.options})
    return selection
