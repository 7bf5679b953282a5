"""`FeatureLayout` and `KmerEncoding`: the feature order and encoding a model was trained on, stored with it.

Plain values, shared by every step: feature selection produces a layout, encoding follows it,
models record it (as JSON in the booster attribute ``extmem_layout``) so that scoring always
rebuilds the representation training saw.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extmem._defaults import MAX_EXACT_K, MAX_K
from extmem.errors import OptionError, SchemaError, is_integer

LAYOUT_VERSION = 1
LAYOUT_ATTRIBUTE = "extmem_layout"
"""Booster attribute holding the layout as JSON."""
HASHED_PREFIX = "kmer_hash_"
KMER_COLUMN = re.compile(r"^(\d+)mer_([ACGT]+)$")
"""A k-mer count column, such as ``6mer_ACGTAC``: its k and its k-mer."""


MAX_HASH_WIDTH = 1 << 24
"""The widest hashed k-mer space: XGBoost keeps state per feature and histogram bin (about 1 kB per bin while it grows
a tree), so 2M features already need about 4 GiB for 20k rows; 16.7M is 4**12, every 12-mer without a collision."""


@dataclass(frozen=True)
class KmerEncoding:
    """How k-mer features are built; recorded with the model.

    ``sequence_column`` set: count k-mers of length ``k`` from that string column. Otherwise:
    fold the dataset's ``{k}mer_*`` count columns. ``width`` hashes into that many features
    (required when folding); without it, counts keep one feature per k-mer (4**k of them).
    ``signed`` multiplies each count by the sign of its hash; ``seed`` seeds the hash. ``width``
    is at most ``MAX_HASH_WIDTH``.
    """

    width: int | None = None
    k: int | None = None
    sequence_column: str | None = None
    signed: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.width is not None and (not is_integer(self.width) or self.width <= 0):
            msg = f"The 'width' of hashed k-mers must be a positive integer. Got {self.width!r} instead."
            raise OptionError(msg, options=("width",))
        if self.width is not None and self.width > MAX_HASH_WIDTH:
            msg = (
                f"Hashed k-mer features ('width') are at most {MAX_HASH_WIDTH:,} (XGBoost keeps state per feature: "
                f"2,000,000 features already take about 4 GiB). Got {self.width:,}."
            )
            raise OptionError(msg, options=("width",))
        if not isinstance(self.signed, bool) or not is_integer(self.seed):
            msg = f"The k-mer hash needs a boolean 'signed' and an integer 'seed'. Got {self.signed!r} and {self.seed!r} instead."
            raise OptionError(msg, options=("signed", "seed"))
        for name in ("width", "k", "seed"):  # numpy integers become Python's: the encoding is stored as JSON with the model
            if is_integer(getattr(self, name)):
                object.__setattr__(self, name, int(getattr(self, name)))
        if self.sequence_column is None:
            if self.width is None:
                msg = "Folding k-mer columns needs a hash 'width'."
                raise OptionError(msg, options=("width",))
            return
        if not isinstance(self.sequence_column, str):
            msg = f"The 'sequence_column' must be a column name. Got {self.sequence_column!r} instead."
            raise OptionError(msg, options=("sequence_column",))
        if self.k is None:
            msg = f"Counting k-mers from the sequence column {self.sequence_column!r} needs 'k', the k-mer length (1 to {MAX_K})."
            raise OptionError(msg, options=("k", "sequence_column"))
        if not is_integer(self.k) or not 1 <= self.k <= MAX_K:
            msg = f"The 'k' option must be an integer from 1 to {MAX_K}. Got {self.k!r} instead."
            raise OptionError(msg, options=("k",))
        if self.width is None and self.k > MAX_EXACT_K:
            msg = f"Exact k-mer counts for k={self.k} would be {4**self.k:,} features; use k <= {MAX_EXACT_K} or a hash 'width'."
            raise OptionError(msg, options=("width",))

    @property
    def feature_count(self) -> int:
        """Number of k-mer features: the hash width, or 4**k."""
        return self.width if self.width is not None else 4 ** int(self.k or 0)

    def feature_names(self) -> list[str]:
        """Names of the k-mer features, in order."""
        if self.width is not None:
            return [f"{HASHED_PREFIX}{i}" for i in range(self.width)]
        return [f"{self.k}mer_{''.join(kmer)}" for kmer in itertools.product("ACGT", repeat=int(self.k or 0))]

    def to_dict(self) -> dict[str, object]:
        return {"width": self.width, "k": self.k, "sequence_column": self.sequence_column, "signed": self.signed, "seed": self.seed}


_XGBOOST_NAME_CHARACTERS = str.maketrans({"[": "(", "]": ")", "<": "‹"})


def reads_as_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number (``-1``, ``2.5``)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def numeric_keys(label_map: Mapping[str, int]) -> list[float] | None:
    """The label map's keys as numbers when every one reads as a finite number (a map of numeric labels), else None."""
    return [float(key) for key in label_map] if all(reads_as_number(key) for key in label_map) else None


@dataclass(frozen=True)
class FeatureLayout:
    """Feature columns in matrix order; ``zero_is_missing`` marks count columns stored sparsely.

    In a count column a zero (or null) is left out of the CSR block, so XGBoost sees it as
    missing. In every other column zeros are stored as values and only nulls are missing.
    With ``kmers``, the last features are k-mer features built by that encoding (hashed or
    counted from sequences), not read from columns of those names. ``categories`` holds the
    dictionary of each categorical feature; ``label_map`` the class of each string label;
    ``qid`` the query-id column a ranking model was trained with.
    """

    names: tuple[str, ...]
    zero_is_missing: tuple[bool, ...]
    label: str | None = None
    label_map: Mapping[str, int] | None = None
    kmers: KmerEncoding | None = None
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    qid: str | None = None

    @property
    def xgboost_names(self) -> list[str]:
        """The feature names as XGBoost takes them: ``[``, ``]`` and ``<`` (refused there) become ``(``, ``)`` and ``‹``, kept distinct."""
        names: list[str] = []
        taken: set[str] = set()
        for name in self.names:
            xgboost_name = name.translate(_XGBOOST_NAME_CHARACTERS)
            while xgboost_name in taken:
                xgboost_name = f"{xgboost_name}'"  # two names of one translation: the later one is marked
            names.append(xgboost_name)
            taken.add(xgboost_name)
        return names

    @property
    def feature_types(self) -> list[str] | None:
        """XGBoost's ``feature_types``: ``c`` for categorical features, ``q`` otherwise (None without categories)."""
        if not self.categories:
            return None
        return ["c" if name in self.categories else "q" for name in self.names]

    @property
    def kmer_offset(self) -> int:
        """Position of the first k-mer feature (the number of features without ``kmers``)."""
        return len(self.names) - (self.kmers.feature_count if self.kmers is not None else 0)

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        zero_is_missing_pattern: str | None,
        *,
        label: str | None = None,
        label_map: Mapping[str, int] | None = None,
        always_sparse: Collection[str] = (),
        categories: Mapping[str, tuple[str, ...]] | None = None,
        kmers: KmerEncoding | None = None,
        qid: str | None = None,
    ) -> FeatureLayout:
        """``names`` (then the k-mer features of ``kmers``, all sparse counts), with count columns marked.

        A column is a count column when it matches ``zero_is_missing_pattern`` or is in
        ``always_sparse`` (packed columns); categorical columns never are: code 0 is a category.
        """
        pattern = re.compile(zero_is_missing_pattern) if zero_is_missing_pattern is not None else None
        categories = dict(categories or {})
        sparse = [name not in categories and (name in always_sparse or bool(pattern and pattern.search(name))) for name in names]
        kmer_names = kmers.feature_names() if kmers is not None else []
        return cls((*names, *kmer_names), (*sparse, *([True] * len(kmer_names))), label, label_map, kmers, categories, qid)

    @property
    def sparse_mask(self) -> np.ndarray:
        """Boolean array, True where zeros mean 'absent'."""
        return np.array(self.zero_is_missing, dtype=bool)

    @property
    def classes(self) -> list[str] | None:
        """Class names in class-id order, when labels map to classes: each id's first label in the map (several may share one)."""
        if self.label_map is None:
            return None
        first_label: dict[int, str] = {}
        for name, class_id in self.label_map.items():
            first_label.setdefault(class_id, name)
        return [first_label[class_id] for class_id in sorted(first_label)]

    @property
    def class_values(self) -> np.ndarray | None:
        """The label each class id predicts when the label map maps numbers (int64 if all are whole), else None."""
        classes = self.classes
        if classes is None or self.label_map is None or numeric_keys(self.label_map) is None:
            return None
        values = np.array([float(name) for name in classes])
        return values.astype(np.int64) if np.all(values == np.round(values)) else values

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
                "qid": self.qid,
            }
        )

    @classmethod
    def from_json(cls, text: str, where: str = "the model") -> FeatureLayout:
        """Inverse of :meth:`to_json`; anything malformed is a :class:`SchemaError` naming ``where``."""
        try:
            return _layout_from(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError, OptionError) as exc:
            msg = f"The feature layout recorded in {where} is invalid ({exc}); the model was not written by this extmem or is damaged."
            raise SchemaError(msg) from None


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        msg = f"{what} must be a list of strings"
        raise TypeError(msg)
    return value


def _layout_from(data: Any) -> FeatureLayout:
    if not isinstance(data, dict) or data.get("version") != LAYOUT_VERSION:
        msg = f"expected a layout of version {LAYOUT_VERSION}"
        raise ValueError(msg)
    names = tuple(_strings(data["features"], "features"))
    if len(set(names)) != len(names):
        msg = "a feature name is repeated"
        raise ValueError(msg)
    sparse = set(_strings(data["zero_is_missing"], "zero_is_missing"))
    label, qid = data.get("label"), data.get("qid")
    if any(column is not None and not isinstance(column, str) for column in (label, qid)):
        msg = "the label and query-id columns must be column names"
        raise TypeError(msg)
    label_map = data.get("label_map")
    if label_map is not None:
        if not isinstance(label_map, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in label_map.items()):
            msg = "the label map must map strings to class ids"
            raise TypeError(msg)
        if sorted(set(label_map.values())) != list(range(len(set(label_map.values())))):
            msg = "the label map's class ids must be 0..K-1"
            raise ValueError(msg)
    kmers_data = data.get("kmers")
    if kmers_data is not None and not isinstance(kmers_data, dict):
        msg = "the k-mer encoding must be an object"
        raise TypeError(msg)
    kmers = KmerEncoding(**kmers_data) if kmers_data else None
    categories_data = data.get("categories", {})
    if not isinstance(categories_data, dict):
        msg = "the categories must be an object"
        raise TypeError(msg)
    categories = {str(name): tuple(_strings(values, f"the categories of {name!r}")) for name, values in categories_data.items()}
    if not set(categories) <= set(names) or (kmers is not None and kmers.feature_count > len(names)):
        msg = "categories or k-mer features name columns the layout lacks"
        raise ValueError(msg)
    return FeatureLayout(names, tuple(name in sparse for name in names), label, label_map, kmers, categories, qid)
