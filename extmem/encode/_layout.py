"""`FeatureLayout`: the fixed feature order and encoding, recorded with every model."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extmem.encode._kmers import KmerEncoding
from extmem.read._categories import feature_types

LAYOUT_VERSION = 1
LAYOUT_ATTRIBUTE = "extmem_layout"
"""Booster attribute holding the layout as JSON."""


@dataclass(frozen=True)
class FeatureLayout:
    """Feature columns in matrix order; ``zero_is_missing`` marks count columns stored sparsely.

    In a count column a zero (or null) is left out of the CSR block, so XGBoost sees it as
    missing. In every other column zeros are stored as values and only nulls are missing.
    With ``kmers``, the last features are k-mer features built by that encoding (hashed or
    counted from sequences), not read from columns of those names.
    """

    names: tuple[str, ...]
    zero_is_missing: tuple[bool, ...]
    label: str | None = None
    label_map: Mapping[str, int] | None = None
    kmers: KmerEncoding | None = None
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @property
    def feature_types(self) -> list[str] | None:
        """XGBoost's ``feature_types``: ``c`` for categorical features, ``q`` otherwise (None without categories)."""
        return feature_types(self.names, self.categories)

    @property
    def kmer_offset(self) -> int:
        """Position of the first k-mer feature (the number of features without ``kmers``)."""
        if self.kmers is None:
            return len(self.names)
        return len(self.names) - self.kmers.feature_count

    @classmethod
    def with_kmers(
        cls,
        names: Sequence[str],
        zero_is_missing: Sequence[bool],
        encoding: KmerEncoding,
        label: str | None,
        label_map: Mapping[str, int] | None,
        categories: Mapping[str, tuple[str, ...]],
    ) -> FeatureLayout:
        """``names`` followed by the k-mer features of ``encoding`` (all sparse counts)."""
        kmer_names = encoding.feature_names()
        return cls((*names, *kmer_names), (*zero_is_missing, *([True] * len(kmer_names))), label, label_map, encoding, categories)

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        zero_is_missing_pattern: str | None,
        label: str | None = None,
        label_map: Mapping[str, int] | None = None,
        always_sparse: Collection[str] = (),
        categories: Mapping[str, tuple[str, ...]] | None = None,
    ) -> FeatureLayout:
        """Mark the columns that match ``zero_is_missing_pattern`` (or are in ``always_sparse``) as sparse counts.

        Categorical columns (keys of ``categories``) are never sparse: code 0 is a category.
        """
        pattern = re.compile(zero_is_missing_pattern) if zero_is_missing_pattern is not None else None
        categories = categories or {}
        sparse = tuple(
            name not in categories and (name in always_sparse or (pattern is not None and bool(pattern.search(name)))) for name in names
        )
        return cls(tuple(names), sparse, label, label_map, None, dict(categories))

    @property
    def sparse_mask(self) -> np.ndarray:
        """Boolean array, True where zeros mean 'absent'."""
        return np.array(self.zero_is_missing, dtype=bool)

    @property
    def classes(self) -> list[str] | None:
        """Class names in class-id order, when labels are strings."""
        if self.label_map is None:
            return None
        return [name for name, _ in sorted(self.label_map.items(), key=lambda item: item[1])]

    def class_names(self, num_class: int) -> list[str]:
        """Class names in class-id order: the label map's, or the ids as text for numeric labels."""
        return self.classes if self.classes is not None else [str(k) for k in range(max(num_class, 2))]

    def to_json(self) -> str:
        """Serialise for storage in a model attribute."""
        return json.dumps(
            {
                "version": LAYOUT_VERSION,
                "features": list(self.names),
                "zero_is_missing": [name for name, sparse in zip(self.names, self.zero_is_missing) if sparse],
                "label": self.label,
                "label_map": dict(self.label_map) if self.label_map is not None else None,
                "kmers": self.kmers.to_dict() if self.kmers is not None else None,
                "categories": {name: list(values) for name, values in self.categories.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureLayout:
        """Inverse of :meth:`to_json`."""
        data: dict[str, Any] = json.loads(text)
        sparse = set(data["zero_is_missing"])
        names = tuple(data["features"])
        kmers = KmerEncoding(**data["kmers"]) if data.get("kmers") else None
        categories = {name: tuple(values) for name, values in data.get("categories", {}).items()}
        return cls(names, tuple(name in sparse for name in names), data.get("label"), data.get("label_map"), kmers, categories)
