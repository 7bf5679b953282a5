"""Categorical features: a batch's strings -> their codes in the column's dictionary (collected by the read step)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from extmem.errors import SchemaError
from extmem.read._dictionaries import as_strings


def encode_categories(values: pa.Array, dictionary: Sequence[str], *, strict: bool, column: str, where: str) -> pa.Array:
    """Codes of ``values`` in ``dictionary`` as float32; nulls and unseen values are null (or an error if ``strict``)."""
    values = as_strings(values)
    codes = pc.index_in(values, value_set=pa.array(list(dictionary), type=values.type))
    if strict and codes.null_count > values.null_count:
        unseen = pc.filter(values, pc.and_(pc.is_null(codes), pc.is_valid(values)))
        msg = f"The categorical column {column!r} has value(s) {pc.unique(unseen).to_pylist()[:5]} in {where} that training never saw ('strict_categories')."
        raise SchemaError(msg, options=("strict_categories",))
    return codes.cast(pa.float32())
