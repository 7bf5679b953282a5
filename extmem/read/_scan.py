"""Scan: shards' footers -> one :class:`Schema` (the union of their columns, row groups, packed blocks).

A wide shard's parsed footer takes several times its serialized size (about 200 MiB for 50 row
groups of 4,100 columns), so the largest one is part of every memory plan
(:attr:`Schema.footer_bytes`). Footers are read by a few threads (parsing releases the GIL; a
store's footer is mostly waiting on requests), each freed as soon as its columns are taken, with
at most ``FOOTER_ROOM`` of parsed footers at once, estimated from their serialized sizes before
parsing: a footer larger than that is parsed alone.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import pyarrow as pa

from extmem._allocators import release_freed_memory
from extmem._contracts import PackedBlock, RowGroupRef
from extmem._signals import raise_if_stopped
from extmem._units import MiB
from extmem.errors import SchemaError, read_failure
from extmem.read._costs import FOOTER_BYTES_PER_SERIALIZED_BYTE
from extmem.read._storage import footer_length, open_parquet, open_source

SCAN_THREADS = 4
"""Footers read at once (64 local shards of 4,122 columns, 2 cores: 2.8 s on one thread, 2.1 s on four)."""
FOOTER_ROOM = 64 * MiB
"""Parsed footers held at once by the scan's threads, each estimated from its serialized size."""

NUMERIC = "numeric"
STRING = "string"
OTHER = "other"


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
class Schema:
    """Columns of all shards in first-seen order, with a type that fits every shard, and each shard's row groups."""

    shards: tuple[str, ...]
    columns: dict[str, Column]
    shard_row_groups: dict[str, tuple[int, ...]]
    packed_blocks: dict[str, PackedBlock]
    """The packed block of each packed shard (absent for wide shards)."""
    footer_bytes: int = 0
    """The largest serialized footer among the shards."""
    partitions: dict[str, dict[str, int | str | None]] = field(default_factory=dict)
    """Each partitioned shard's column values from its ``key=value`` folders (integers where every value of the key is one)."""

    @property
    def shard_rows(self) -> tuple[int, ...]:
        """Rows of each shard, from the footers."""
        return tuple(sum(self.shard_row_groups[shard]) for shard in self.shards)

    @property
    def rows(self) -> int:
        """Rows of all shards, from the footers."""
        return sum(self.shard_rows)

    def row_groups(self) -> list[RowGroupRef]:
        """Every row group, in read order."""
        return [RowGroupRef(shard, index, rows) for shard in self.shards for index, rows in enumerate(self.shard_row_groups[shard])]

    def missing_from(self, name: str) -> list[str]:
        """Shards that do not hold column ``name``."""
        mask = self.columns[name].shards_mask
        return [shard for index, shard in enumerate(self.shards) if not mask >> index & 1]


def _packed_fields(schema: pa.Schema, block: PackedBlock, shard: str) -> list[pa.Field]:
    """The shard's columns with its packed block's two list columns replaced by float32 columns of the block's names."""
    for name, numeric in (
        (block.indices, pa.types.is_integer),
        (block.values, lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)),
    ):
        index = schema.get_field_index(name)
        kind = schema.field(name).type if index >= 0 else None
        if kind is None or not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not numeric(kind.value_type):
            msg = f"The packed shard {shard!r} lacks its numeric list column {name!r} (found {kind})."
            raise SchemaError(msg)
    clash = sorted(set(block.columns) & set(schema.names))
    if clash:
        msg = f"The packed shard {shard!r} holds the column {clash[0]!r} both in its packed block and as a column of its own."
        raise SchemaError(msg)
    fields = [f for f in schema if f.name not in (block.indices, block.values)]
    return fields + list(_float32_fields(block.columns))


@functools.lru_cache(maxsize=4)
def _float32_fields(names: tuple[str, ...]) -> tuple[pa.Field, ...]:
    """float32 fields of ``names``: made once for the shards that share a packed block (thousands of fields each)."""
    return tuple(pa.field(name, pa.float32()) for name in names)


_Footer = tuple[list[pa.Field], tuple[int, ...], PackedBlock | None, int]


class _Room:
    """Bytes shared by threads: :meth:`taken` waits until ``amount`` is free (at most the whole room, so it always can)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._changed = threading.Condition()

    @contextmanager
    def taken(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.size)
        with self._changed:
            self._changed.wait_for(lambda: self._free >= amount)
            self._free -= amount
        try:
            yield
        finally:
            with self._changed:
                self._free += amount
                self._changed.notify_all()


def _read_footer(shard: str, room: _Room) -> _Footer:
    """The shard's columns as extmem sees them, row group sizes, packed block and serialized footer size.

    The footer is parsed once its estimated size fits ``room``, and freed before the room is given back.
    """
    try:
        with open_source(shard) as source:
            serialized = footer_length(source)
            with room.taken(FOOTER_BYTES_PER_SERIALIZED_BYTE * serialized):
                try:
                    schema, row_groups, key_values = _parse_footer(shard, source)
                finally:
                    release_freed_memory()
    except (pa.ArrowException, OSError) as exc:
        raise read_failure(shard, exc) from None
    block = PackedBlock.from_metadata(key_values, shard)
    fields = list(schema) if block is None else _packed_fields(schema, block, shard)
    return fields, row_groups, block, serialized


def _parse_footer(shard: str, source: pa.NativeFile) -> tuple[pa.Schema, tuple[int, ...], dict[bytes, bytes] | None]:
    """The arrow schema, row group sizes and key-value metadata of the footer (parsed here, freed on return).

    Through ``ParquetFile`` rather than ``FileMetaData.schema``, which holds the parsed footer in a
    reference cycle that only a garbage collection frees.
    """
    with open_parquet(shard, source=source) as file:
        metadata = file.metadata
        return file.schema_arrow, tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)), metadata.metadata


def _footers(shards: list[str]) -> Iterator[_Footer]:
    """Each shard's footer, in order, read ahead by up to ``SCAN_THREADS`` threads within ``FOOTER_ROOM``."""
    room = _Room(FOOTER_ROOM)
    with ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="extmem-scan") as pool:
        pending: deque[Future[_Footer]] = deque()
        waiting = iter(shards)
        try:
            for shard in waiting:
                pending.append(pool.submit(_read_footer, shard, room))
                if len(pending) == 2 * SCAN_THREADS:
                    break
            while pending:
                footer = pending.popleft().result()
                shard = next(waiting, None)
                if shard is not None:
                    pending.append(pool.submit(_read_footer, shard, room))
                yield footer
        finally:
            for future in pending:
                future.cancel()


def _unify(column: Column, arrow_type: pa.DataType, shard: str) -> Column:
    """``column`` once ``shard`` holds it as ``arrow_type``: numeric types promote to float64, strings are large strings."""
    kind = type_kind(arrow_type)
    if kind != column.kind or (kind == OTHER and arrow_type != column.arrow_type):
        msg = (
            f"Column {column.name!r} is {column.arrow_type} in {column.first_shard!r} "
            f"but {arrow_type} in {shard!r}; drop it or fix the shards."
        )
        raise SchemaError(msg)
    if kind == NUMERIC and arrow_type != column.arrow_type:
        return replace(column, arrow_type=pa.float64())
    return column


def _typed_partitions(partitions: dict[str, dict[str, str | None]]) -> tuple[dict[str, dict[str, int | str | None]], dict[str, pa.Field]]:
    """Partition values typed as pyarrow's and Spark's hive partitioning reads them: a key whose values are all integers is
    int64, any other large strings; and the field of each key."""
    keys = list(dict.fromkeys(key for values in partitions.values() for key in values))
    numeric = {key: all(_is_int(v[key]) for v in partitions.values() if v.get(key) is not None) for key in keys}
    typed = {
        shard: {key: int(value) if numeric[key] and value is not None else value for key, value in values.items()}
        for shard, values in partitions.items()
    }
    return typed, {key: pa.field(key, pa.int64() if numeric[key] else pa.large_string()) for key in keys}


def _is_int(text: str | None) -> bool:
    """Whether a folder's value reads as an int64 (larger integers stay text)."""
    try:
        return -(2**63) <= int(text or "") < 2**63
    except ValueError:
        return False


def scan(shards: list[str], partitions: dict[str, dict[str, str | None]] | None = None) -> Schema:
    """Read every shard's footer (a few at once, see :func:`_footers`) and merge the schemas in shard order; numeric types promote to float64.

    A column of arrow's null type holds no value: a shard storing it so does not hold it (a column
    null in every shard stays of the null type, not numeric). ``partitions`` (see
    :func:`extmem.read._discover.partition_values`) adds each partitioned shard's folder values as columns.

    Thousands of columns per shard: a column whose type is the one it had in the last shard
    holding it costs two dictionary updates, nothing more.
    """
    columns: dict[str, Column] = {}
    last_types: dict[str, pa.DataType] = {}
    masks: dict[str, int] = {}
    null_masks: dict[str, int] = {}
    packed_columns: set[str] = set()
    shard_row_groups: dict[str, tuple[int, ...]] = {}
    packed_blocks: dict[str, PackedBlock] = {}
    footer_bytes = 0
    typed, partition_fields = _typed_partitions(partitions or {})
    for index, (shard, (fields, row_groups, block, footer)) in enumerate(zip(shards, _footers(shards), strict=True)):
        raise_if_stopped()
        shard_bit = 1 << index
        footer_bytes = max(footer_bytes, footer)
        names = [f.name for f in fields]
        if len(set(names)) != len(names):
            duplicate = next(n for n in names if names.count(n) > 1)
            msg = f"The shard {shard!r} has the column {duplicate!r} more than once."
            raise SchemaError(msg)
        clash = [key for key in typed.get(shard, {}) if key in names]
        if clash:
            msg = f"The shard {shard!r} holds the column {clash[0]!r}, which its folder name ({clash[0]}=...) gives too; rename one."
            raise SchemaError(msg)
        fields = fields + [partition_fields[key] for key in typed.get(shard, {})]
        shard_row_groups[shard] = row_groups
        if block is not None:
            packed_blocks[shard] = block
            packed_columns.update(block.columns)
        for arrow_field in fields:
            name, arrow_type = arrow_field.name, arrow_field.type
            if pa.types.is_null(arrow_type):  # all null here (pandas writes an all-None column so): absent from this shard
                columns.setdefault(name, Column(name, OTHER, arrow_type, shard, 0))
                null_masks[name] = null_masks.get(name, 0) | shard_bit
                continue
            last = last_types.get(name)
            if last is None:
                kind = type_kind(arrow_type)
                columns[name] = Column(name, kind, pa.large_string() if kind == STRING else arrow_type, shard, 0)
            elif arrow_type != last:
                columns[name] = _unify(columns[name], arrow_type, shard)
            last_types[name] = arrow_type
            masks[name] = masks.get(name, 0) | shard_bit
    merged = {
        name: replace(column, shards_mask=masks.get(name) or null_masks[name], packed=name in packed_columns)
        for name, column in columns.items()
    }
    return Schema(tuple(shards), merged, shard_row_groups, packed_blocks, footer_bytes, typed)
