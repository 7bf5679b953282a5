"""String columns as categorical features: one dictionary per column for the whole dataset.

XGBoost splits on categories by integer code, and in external memory every batch must use the
same codes. The dictionary of each column is therefore collected from every shard first (only
that column is read), sorted, and stored with the model; a batch's strings become their index
in it. A value the dictionary lacks (a category unseen in training) becomes missing, or an
error with ``strict``; a null is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extmem.errors import SchemaError, read_failure
from extmem.read._scan import STRING, UnionSchema

SUGGEST_CATEGORIES_BELOW = 64


def _as_strings(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    return values


def categorical_dictionaries(schema: UnionSchema, columns: Sequence[str], max_categories: int) -> dict[str, tuple[str, ...]]:
    """The dictionary of each ``--categorical`` column (which must be a string column of some shard)."""
    for name in columns:
        column = schema.columns.get(name)
        if column is None:
            msg = f"The 'categorical' column {name!r} is in none of the {len(schema.shards)} shards (first: {schema.shards[0]!r})."
            raise SchemaError(msg, options=("categorical",))
        if column.kind != STRING:
            msg = f"The 'categorical' column {name!r} is {column.arrow_type} (in {column.first_shard!r}); categorical columns hold strings."
            raise SchemaError(msg, options=("categorical",))
    return collect_categories(schema.shards, columns, max_categories) if columns else {}


def collect_categories(shards: Sequence[str], columns: Sequence[str], max_categories: int) -> dict[str, tuple[str, ...]]:
    """The sorted distinct non-null values of each column over every shard that holds it."""
    seen: dict[str, set[str]] = {name: set() for name in columns}
    for shard in shards:
        try:
            with pq.ParquetFile(shard) as file:
                present = [name for name in columns if name in file.schema_arrow.names]
                for batch in file.iter_batches(batch_size=65536, columns=present) if present else ():
                    for name in present:
                        seen[name].update(pc.unique(_as_strings(batch.column(name)).drop_null()).to_pylist())
                        if len(seen[name]) > max_categories:
                            msg = (
                                f"The 'categorical' column {name!r} has more than {max_categories:,} distinct values "
                                f"(reached in {shard!r}); raise 'max_categories' or leave the column out."
                            )
                            raise SchemaError(msg, options=("categorical", "max_categories"))
        except (pa.ArrowException, OSError) as exc:
            raise read_failure(shard, exc) from None
    return {name: tuple(sorted(values)) for name, values in seen.items()}


def encode_categories(values: pa.Array, dictionary: Sequence[str], *, strict: bool, column: str, where: str) -> pa.Array:
    """Codes of ``values`` in ``dictionary`` as float32; nulls and unseen values are null (or an error if ``strict``)."""
    values = _as_strings(values)
    codes = pc.index_in(values, value_set=pa.array(list(dictionary), type=values.type))
    if strict and codes.null_count > values.null_count:
        unseen = pc.filter(values, pc.and_(pc.is_null(codes), pc.is_valid(values)))
        msg = f"The categorical column {column!r} has value(s) {pc.unique(unseen).to_pylist()[:5]} in {where} that training never saw ('strict_categories')."
        raise SchemaError(msg, options=("strict_categories",))
    return codes.cast(pa.float32())


def small_string_columns(schema: UnionSchema, names: Sequence[str]) -> list[str]:
    """String columns among ``names`` with fewer than ``SUGGEST_CATEGORIES_BELOW`` values in the first row group of the first shard."""
    try:
        with pq.ParquetFile(schema.shards[0]) as file:
            present = [name for name in names if name in file.schema_arrow.names and schema.columns[name].kind == STRING]
            if not present or file.num_row_groups == 0:
                return []
            table = file.read_row_group(0, columns=present)
    except (pa.ArrowException, OSError):
        return []
    return [name for name in present if len(pc.unique(table.column(name))) < SUGGEST_CATEGORIES_BELOW]


def feature_types(names: Sequence[str], categories: Mapping[str, Sequence[str]]) -> list[str] | None:
    """XGBoost's ``feature_types`` (``c`` for categorical, ``q`` otherwise), or None without categories."""
    if not categories:
        return None
    return ["c" if name in categories else "q" for name in names]
