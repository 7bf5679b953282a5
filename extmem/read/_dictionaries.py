"""Dictionaries: the distinct values of string columns over the whole dataset (categorical features, string labels).

XGBoost splits on categories by integer code and learns classes by id, and in external memory
every batch must use the same codes. So before any batch is read, each such column's values
are collected from every shard (only that column is read) and sorted; a batch's strings then
become their index in the sorted dictionary, in every shard alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from extmem._allocators import release_freed_memory
from extmem.errors import SchemaError, read_failure
from extmem.read._scan import STRING, Schema
from extmem.read._storage import open_parquet

SUGGEST_CATEGORIES_BELOW = 64


def as_strings(values: pa.Array) -> pa.Array:
    """String values of a column (dictionary-decoded, string views and large strings cast to strings)."""
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.string())
    return values


def collect_values(schema: Schema, limits: dict[str, tuple[int, str]]) -> dict[str, tuple[str, ...]]:
    """The sorted distinct non-null values of each column in ``limits`` (name -> (most values, option)) over every shard.

    A column with more values than its limit is an error naming the option that set it.
    """
    seen: dict[str, set[str]] = {name: set() for name in limits}

    def add(name: str, values: pa.Array, shard: str) -> None:
        seen[name].update(pc.unique(as_strings(values).drop_null()).to_pylist())
        most, option = limits[name]
        if len(seen[name]) > most:
            hint = "raise 'max_categories' or leave the column out." if option == "categorical" else "is it the right label column?"
            msg = f"The '{option}' column {name!r} has more than {most:,} distinct values (reached in {shard!r}); {hint}"
            raise SchemaError(msg, options=(option, "max_categories"))

    for shard in schema.shards:
        folder_values = schema.partitions.get(shard, {})
        for name in (name for name in limits if name in folder_values):  # a partition column: its value is in the folder's name
            add(name, pa.array([folder_values[name]]), shard)
        present = [
            name for name in limits if schema.columns[name].shards_mask >> schema.shards.index(shard) & 1 and name not in folder_values
        ]
        if not present:
            continue
        try:
            with open_parquet(shard) as file:
                for batch in file.iter_batches(batch_size=65536, columns=present):
                    for name in present:
                        add(name, batch.column(name), shard)
        except (pa.ArrowException, OSError) as exc:
            raise read_failure(shard, exc) from None
        finally:
            release_freed_memory()
    return {name: tuple(sorted(values)) for name, values in seen.items()}


def few_valued_columns(schema: Schema, names: Sequence[str]) -> list[str]:
    """String columns among ``names`` with fewer than ``SUGGEST_CATEGORIES_BELOW`` values in the first row group of the first shard."""
    try:
        with open_parquet(schema.shards[0]) as file:
            shard_names = set(file.schema_arrow.names)
            present = [name for name in names if name in shard_names and schema.columns[name].kind == STRING]
            table = file.read_row_group(0, columns=present) if present and file.num_row_groups else None
    except (pa.ArrowException, OSError):
        return []
    finally:
        file = None
        release_freed_memory()
    folders = [name for name in names if name in schema.columns and schema.columns[name].kind == STRING and name not in present]
    folder_values = {name: {values.get(name) for values in schema.partitions.values()} for name in folders}
    few = [name for name, values in folder_values.items() if values != {None} and len(values) < SUGGEST_CATEGORIES_BELOW]
    if table is None:
        return few
    return [name for name in present if len(pc.unique(table.column(name))) < SUGGEST_CATEGORIES_BELOW] + few
