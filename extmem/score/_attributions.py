"""Reductions of feature contributions that keep memory independent of the row count.

Exact per-feature sums over every row, each row's top features, a uniform row sample, and the
k-mer features' ranking with its dinucleotide motifs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from extmem._layout import KMER_COLUMN
from extmem.errors import OptionError

TOP_TYPE = pa.list_(pa.struct([pa.field("feature", pa.string()), pa.field("contribution", pa.float32())]))
DINUCLEOTIDES = tuple(a + b for a in "ACGT" for b in "ACGT")


class AttributionSums:
    """Per output and feature: sums of |φ| and φ and counts of rows with φ > 0 and φ < 0, exact (float64) over every row added."""

    def __init__(self, outputs: int, features: int) -> None:
        self.rows = 0
        self.absolute = np.zeros((outputs, features))
        self.signed = np.zeros((outputs, features + 1))
        self.positive = np.zeros((outputs, features), dtype=np.int64)
        self.negative = np.zeros((outputs, features), dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        """Add a batch's contributions, (rows, outputs, features + 1) with the bias last."""
        self.rows += values.shape[0]
        for output in range(values.shape[1]):
            phi = values[:, output, :-1]
            self.absolute[output] += np.abs(phi).sum(axis=0, dtype=np.float64)
            self.signed[output] += values[:, output].sum(axis=0, dtype=np.float64)
            self.positive[output] += np.count_nonzero(phi > 0, axis=0)
            self.negative[output] += np.count_nonzero(phi < 0, axis=0)

    @property
    def mean_absolute(self) -> np.ndarray:
        return self.absolute / max(self.rows, 1)

    @property
    def mean(self) -> np.ndarray:
        """Mean contribution per output and feature, (outputs, features)."""
        return self.signed[:, :-1] / max(self.rows, 1)

    @property
    def mean_bias(self) -> np.ndarray:
        return self.signed[:, -1] / max(self.rows, 1)

    def table(self, outputs: Sequence[str], names: Sequence[str], own: dict[str, np.ndarray]) -> pa.Table:
        """One row per output and feature, by output then rank of mean |SHAP|; ``own``: the model's importance measures."""
        shape = (len(outputs), len(names))
        order = np.argsort(-self.absolute, axis=1, kind="stable")
        rows = max(self.rows, 1)

        def ranked(values: np.ndarray) -> np.ndarray:
            return np.take_along_axis(np.broadcast_to(values, shape), order, axis=1).ravel()

        columns = {
            "output": np.repeat(np.asarray(outputs, dtype=object), shape[1]),
            "rank": np.tile(np.arange(1, shape[1] + 1), shape[0]),
            "feature": np.asarray(names, dtype=object)[order].ravel(),
            "mean_abs_shap": ranked(self.mean_absolute),
            "mean_shap": ranked(self.mean),
            "positive_share": ranked(self.positive / rows),
            "negative_share": ranked(self.negative / rows),
            "nonzero_rows": ranked(self.positive + self.negative),
        }
        columns.update({name: ranked(values) for name, values in own.items()})
        return pa.table(columns)


class InteractionSums:
    """Sums over rows of |φ_ij| and φ_ij for the pairs of ``chosen`` features, per output (diagonal: main effects)."""

    def __init__(self, outputs: int, chosen: Sequence[int]) -> None:
        self.rows = 0
        self.chosen = np.asarray(chosen)
        self.absolute = np.zeros((outputs, len(chosen), len(chosen)))
        self.signed = np.zeros((outputs, len(chosen), len(chosen)))

    def add(self, values: np.ndarray) -> None:
        """Add a batch's interaction values, (rows, outputs, features + 1, features + 1)."""
        self.rows += values.shape[0]
        pairs = values[:, :, self.chosen][:, :, :, self.chosen]
        self.absolute += np.abs(pairs).sum(axis=0, dtype=np.float64)
        self.signed += pairs.sum(axis=0, dtype=np.float64)

    def table(self, outputs: Sequence[str], names: Sequence[str]) -> pa.Table:
        """One row per output and ordered pair of the chosen features: mean |interaction| and mean interaction."""
        chosen = [names[i] for i in self.chosen]
        count = len(chosen)
        rows = max(self.rows, 1)
        return pa.table(
            {
                "output": np.repeat(np.asarray(outputs, dtype=object), count * count),
                "feature": np.tile(np.repeat(np.asarray(chosen, dtype=object), count), len(outputs)),
                "other": np.tile(np.asarray(chosen, dtype=object), len(outputs) * count),
                "mean_abs_shap": (self.absolute / rows).ravel(),
                "mean_shap": (self.signed / rows).ravel(),
            }
        )


def top_contributions(phi: np.ndarray, k: int, names: pa.Array) -> pa.Array:
    """Each row's ``k`` largest non-zero |contributions| of ``phi`` (rows, features), largest first, as (feature, contribution) lists."""
    rows = phi.shape[0]
    used = np.flatnonzero((phi != 0).any(axis=0))  # TreeSHAP gives 0 to features no tree splits on: most of thousands
    magnitude = np.abs(phi[:, used])
    k = min(k, used.size)
    index = np.argpartition(magnitude, used.size - k, axis=1)[:, used.size - k :] if k < used.size else np.tile(np.arange(k), (rows, 1))
    order = np.argsort(-np.take_along_axis(magnitude, index, axis=1), axis=1, kind="stable")
    index = np.take_along_axis(index, order, axis=1)
    kept = np.take_along_axis(magnitude, index, axis=1) > 0
    counts = kept.sum(axis=1)
    flat = used[index[kept]]
    values = phi[np.repeat(np.arange(rows), counts), flat].astype(np.float32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    entries = pa.StructArray.from_arrays([names.take(pa.array(flat)), pa.array(values)], fields=list(TOP_TYPE.value_type))
    return pa.ListArray.from_arrays(offsets, entries, type=TOP_TYPE)


class RowSample:
    """A uniform sample of at most ``size`` rows of a stream of feature blocks: the rows with the smallest random keys."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.random = np.random.default_rng(seed)
        self.keys = np.empty(0)
        self.rows: sp.csr_matrix | np.ndarray | None = None

    def add(self, X: sp.csr_matrix | np.ndarray) -> None:
        keys = self.random.random(X.shape[0])
        if self.rows is not None and self.keys.size >= self.size:
            chosen = np.flatnonzero(keys < self.keys.max())
            keys, X = keys[chosen], X[chosen]
        stacked = X if self.rows is None else (sp.vstack([self.rows, X], format="csr") if sp.issparse(X) else np.vstack([self.rows, X]))
        keys = np.concatenate([self.keys, keys])
        if keys.size > self.size:
            kept = np.sort(np.argpartition(keys, self.size)[: self.size])
            keys, stacked = keys[kept], stacked[kept]
        self.keys, self.rows = keys, stacked


def _group_codes(column: pa.Array) -> tuple[list[Any], np.ndarray]:
    """The distinct values of ``column`` (nulls as None) and each row's position among them."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = column.dictionary_encode()
    keys = encoded.dictionary.to_pylist()
    codes = pc.fill_null(encoded.indices, len(keys)).to_numpy(zero_copy_only=False)
    return [*keys, None], codes


class GroupedSums:
    """:class:`AttributionSums` per value of the column ``column`` (at most ``limit`` values, refused beyond)."""

    def __init__(self, column: str, outputs: int, features: int, limit: int) -> None:
        self.column, self.outputs, self.features, self.limit = column, outputs, features, limit
        self.groups: dict[Any, AttributionSums] = {}

    def add(self, values: np.ndarray, column: pa.Array) -> None:
        """Add a batch's contributions, each row to the sums of its value of ``column``."""
        keys, codes = _group_codes(column)
        for code in np.unique(codes):
            if keys[code] not in self.groups and len(self.groups) >= self.limit:
                msg = (
                    f"The 'group_by' column {self.column!r} has more than {self.limit:,} distinct values; "
                    "group by a coarser column (e.g. gene_type, chrom)."
                )
                raise OptionError(msg, options=("group_by",))
            self.groups.setdefault(keys[code], AttributionSums(self.outputs, self.features)).add(values[codes == code])

    def table(self, outputs: Sequence[str], names: Sequence[str], own: dict[str, np.ndarray], value_type: pa.DataType) -> pa.Table:
        """The groups' :meth:`AttributionSums.table` one after the other, the group's value in the first column."""
        return pa.concat_tables(
            part.table(outputs, names, own).add_column(0, self.column, pa.array([key] * part.absolute.size, type=value_type))
            for key, part in self.groups.items()
        )


def kmer_view(
    outputs: Sequence[str], names: Sequence[str], sums: AttributionSums
) -> tuple[pa.Table | None, dict[str, list[dict[str, Any]]]]:
    """The k-mer features ranked per output, and per output the dinucleotides ranked by how much more of |SHAP| the k-mers holding them carry than their number would."""
    kmers = [(column, match.group(2)) for column, name in enumerate(names) if (match := KMER_COLUMN.match(name))]
    if not kmers:
        return None, {}
    columns = np.array([column for column, _ in kmers])
    sequences = [sequence for _, sequence in kmers]
    length = len(sequences[0])
    rows: dict[str, list[Any]] = {"output": [], "rank": [], "kmer": [], "feature": [], "mean_abs_shap": [], "mean_shap": []}
    motifs: dict[str, list[dict[str, Any]]] = {}
    for output, name in enumerate(outputs):
        magnitude, signed = sums.mean_absolute[output, columns], sums.mean[output, columns]
        order = np.argsort(-magnitude, kind="stable")
        rows["output"].extend([name] * len(order))
        rows["rank"].extend(range(1, len(order) + 1))
        rows["kmer"].extend(sequences[i] for i in order)
        rows["feature"].extend(names[columns[i]] for i in order)
        rows["mean_abs_shap"].extend(magnitude[order].tolist())
        rows["mean_shap"].extend(signed[order].tolist())
        total = magnitude.sum()
        ranked = []
        for motif in DINUCLEOTIDES:
            positions = np.array([[sequence[p : p + 2] == motif for p in range(length - 1)] for sequence in sequences])
            holding = positions.any(axis=1)
            if not holding.any() or total == 0:
                continue
            share, expected = magnitude[holding].sum() / total, holding.mean()
            by_position = [round(float(magnitude[at].sum() / total / at.mean()), 4) if at.any() else None for at in positions.T]
            ranked.append(
                {
                    "motif": motif,
                    "kmers": int(holding.sum()),
                    "abs_share": round(float(share), 6),
                    "expected_share": round(float(expected), 6),
                    "enrichment": round(float(share / expected), 4),
                    "mean_shap_sum": float(signed[holding].sum()),
                    "enrichment_by_position": by_position,
                }
            )
        motifs[name] = sorted(ranked, key=lambda entry: -entry["enrichment"])
    return pa.table(rows), motifs
