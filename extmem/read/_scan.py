"""Find parquet shards and union their schemas (footers only, no data read)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from extmem._memory import release_freed_memory
from extmem.encode._packed import PackedBlock
from extmem.errors import InputPathError, SchemaError, read_failure

NUMERIC = "numeric"
STRING = "string"
OTHER = "other"


def _visible(name: str) -> bool:
    """Data files a folder or glob contributes: not hidden, not ``_metadata``-style, not an extmem partial file."""
    return not name.startswith((".", "_"))


def discover_shards(paths: Iterable[str]) -> list[str]:
    """Expand folders (their ``*.parquet`` files, sorted), globs and files into shard paths.

    Folders and globs skip hidden and ``_``-prefixed files, as pyarrow's datasets do (extmem's
    own partial files are hidden). Two paths to one file (a symbolic or hard link) are refused:
    the file would be read twice.
    """
    shards: list[str] = []
    for path in paths:
        if glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p) and _visible(os.path.basename(p)))
            if not matches:
                msg = f"No file matches the pattern {path!r}."
                raise InputPathError(msg)
            shards.extend(matches)
        elif os.path.isdir(path):
            matches = sorted(
                entry.path for entry in os.scandir(path) if entry.name.endswith(".parquet") and _visible(entry.name) and entry.is_file()
            )
            if not matches:
                msg = f"The folder {path!r} holds no .parquet files."
                raise InputPathError(msg)
            shards.extend(matches)
        elif os.path.isfile(path):
            shards.append(path)
        else:
            msg = f"The dataset path {path!r} does not exist."
            raise InputPathError(msg)
    seen: dict[tuple[int, int], str] = {}
    for shard in shards:
        status = os.stat(shard)
        first = seen.get((status.st_dev, status.st_ino))
        if first is not None:
            same = "listed more than once" if first == shard else f"the same file as {first!r} (a link)"
            msg = f"The shard {shard!r} is {same}; it would be read twice."
            raise InputPathError(msg)
        seen[(status.st_dev, status.st_ino)] = shard
    return shards


def type_kind(arrow_type: pa.DataType) -> str:
    """Classify an arrow type as numeric, string, or other."""
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
        or pa.types.is_decimal(arrow_type)
    ):
        return NUMERIC
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return STRING
    return OTHER


@dataclass(frozen=True)
class Column:
    """One column of the union schema; ``shards_mask`` has bit i set when shard i holds it."""

    name: str
    kind: str
    arrow_type: pa.DataType
    first_shard: str
    shards_mask: int
    packed: bool = False
    """True when some shard stores the column in its packed block (then zeros are missing everywhere)."""


@dataclass(frozen=True)
class UnionSchema:
    """Columns of all shards in first-seen order, with a type that fits every shard."""

    shards: tuple[str, ...]
    columns: dict[str, Column]
    shard_row_groups: dict[str, tuple[int, ...]]
    packed_blocks: dict[str, PackedBlock]
    """The packed block of each packed shard (absent for wide shards)."""

    @property
    def shard_rows(self) -> tuple[int, ...]:
        """Rows of each shard, from the footers."""
        return tuple(sum(self.shard_row_groups[shard]) for shard in self.shards)

    @property
    def rows(self) -> int:
        """Rows of all shards, from the footers."""
        return sum(self.shard_rows)

    def missing_from(self, name: str) -> list[str]:
        """Shards that do not hold column ``name``."""
        mask = self.columns[name].shards_mask
        return [shard for index, shard in enumerate(self.shards) if not mask >> index & 1]


def _read_schema(shard: str) -> tuple[list[pa.Field], tuple[int, ...], PackedBlock | None]:
    """The shard's columns as extmem sees them (a packed block as float32 columns), row group sizes, packed block."""
    try:
        metadata = pq.read_metadata(shard)
        schema = metadata.schema.to_arrow_schema()
        row_groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    except (pa.ArrowException, OSError) as exc:
        raise read_failure(shard, exc) from None
    block = PackedBlock.from_metadata(metadata.metadata, shard)
    if block is None:
        return list(schema), row_groups, None
    for name in (block.indices, block.values):
        if schema.get_field_index(name) < 0 or not pa.types.is_list(schema.field(name).type):
            msg = f"The packed shard {shard!r} lacks its list column {name!r}."
            raise SchemaError(msg)
    fields = [f for f in schema if f.name not in (block.indices, block.values)]
    return fields + [pa.field(name, pa.float32()) for name in block.columns], row_groups, block


def _unify(column: Column, arrow_type: pa.DataType, shard: str, shard_bit: int, packed: bool) -> Column:
    kind = type_kind(arrow_type)
    if kind != column.kind or (kind == OTHER and arrow_type != column.arrow_type):
        msg = (
            f"Column {column.name!r} is {column.arrow_type} in {column.first_shard!r} "
            f"but {arrow_type} in {shard!r}; drop it or fix the shards."
        )
        raise SchemaError(msg)
    unified = column.arrow_type
    if kind == NUMERIC and arrow_type != unified:
        unified = pa.float64()
    elif kind == STRING:
        unified = pa.large_string()
    return Column(column.name, kind, unified, column.first_shard, column.shards_mask | shard_bit, column.packed or packed)


def union_schema(shards: list[str]) -> UnionSchema:
    """Read every shard's footer and merge the schemas; numeric types promote to float64."""
    columns: dict[str, Column] = {}
    shard_row_groups: dict[str, tuple[int, ...]] = {}
    packed_blocks: dict[str, PackedBlock] = {}
    for index, shard in enumerate(shards):
        shard_bit = 1 << index
        fields, row_groups, block = _read_schema(shard)
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            msg = f"The shard {shard!r} has the column {duplicate!r} more than once."
            raise SchemaError(msg)
        shard_row_groups[shard] = row_groups
        if block is not None:
            packed_blocks[shard] = block
        packed_names = set(block.columns) if block is not None else set()
        for arrow_field in fields:
            packed = arrow_field.name in packed_names
            existing = columns.get(arrow_field.name)
            if existing is None:
                kind = type_kind(arrow_field.type)
                arrow_type = pa.large_string() if kind == STRING else arrow_field.type
                columns[arrow_field.name] = Column(arrow_field.name, kind, arrow_type, shard, shard_bit, packed)
            else:
                columns[arrow_field.name] = _unify(existing, arrow_field.type, shard, shard_bit, packed)
        release_freed_memory()
    return UnionSchema(tuple(shards), columns, shard_row_groups, packed_blocks)
