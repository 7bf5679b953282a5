"""`Dataset`: the validated description of a parquet dataset that every stage reads."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from extmem._defaults import DEFAULT_BATCH_ROWS, DEFAULT_MAX_CATEGORIES, MAX_BATCH_ROWS
from extmem._presets import KMER_PATTERN, SPLICE_SITES
from extmem.encode._kmers import KmerEncoding
from extmem.errors import OptionError, check_positive_int

SPLICE_LABELS: Mapping[str, int] = SPLICE_SITES.label_map or {}
"""Default label map for string labels: the splice-site classes."""


def column_names(value: str | Sequence[str] | None, option: str) -> tuple[str, ...]:
    """Column names from a list or comma-separated text; ``option`` names the flag in errors."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    if any(not isinstance(item, str) for item in items):
        msg = f"The '{option}' option must be column names (a list or comma-separated text). Got {value!r} instead."
        raise OptionError(msg)
    return tuple(item.strip() for item in items if item.strip())


HOLDOUT_SIDES = ("train", "valid")


@dataclass(frozen=True)
class Holdout:
    """A deterministic split: ``fraction`` of the rows (of the ``group_by`` groups, if given) are validation rows.

    Which side a row falls on depends only on its group value (or its shard file name and
    position) and ``seed``, never on batch sizes, filters or machine, so every pass and every
    run agree. ``side`` says which side a dataset reads.
    """

    fraction: float
    group_by: str | None = None
    seed: int = 0
    side: str = "train"

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)) or not 0 < self.fraction < 1:
            msg = f"The 'valid_fraction' option must be a number between 0 and 1 (exclusive). Got {self.fraction!r} instead."
            raise OptionError(msg)
        if self.side not in HOLDOUT_SIDES:
            msg = f"The holdout side must be one of {HOLDOUT_SIDES}. Got {self.side!r} instead."
            raise OptionError(msg)
        if self.group_by is not None and (not isinstance(self.group_by, str) or not self.group_by):
            msg = f"The 'group_by' option must be a column name. Got {self.group_by!r} instead."
            raise OptionError(msg)


@dataclass(frozen=True)
class Dataset:
    """A parquet dataset: where it is, which columns are features, how labels map.

    ``path`` is a folder of shards, a glob pattern, a single file, or a list of these.
    ``features`` selects feature columns (names or glob patterns; default: every numeric
    column); ``drop`` removes columns from the features. String columns are never
    features. ``label_map`` maps string labels to class ids (default: the splice
    classes). ``filter`` is a pyarrow-style row filter such as
    ``"(chrom == 'chr1') & (position > 1000)"``, pushed down to row groups.
    ``zero_is_missing`` is a regular expression: matching (count) columns are
    stored sparsely, a zero meaning 'absent'; other columns keep zeros as values.
    ``holdout`` keeps one side of a deterministic train/validation split. ``kmers`` replaces
    the ``{k}mer_*`` columns by hashed features, or builds k-mer features from a sequence column.
    ``categorical`` string columns become categorical features (at most ``max_categories``
    values each); when scoring, unseen values are missing, or an error with ``strict_categories``.
    """

    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    label: str | None = "splice_type"
    weight: str | None = None
    features: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    label_map: Mapping[str, int] | None = None
    filter: str | None = None
    max_rows: int | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    zero_is_missing: str | None = KMER_PATTERN
    holdout: Holdout | None = None
    kmers: KmerEncoding | None = None
    categorical: tuple[str, ...] = ()
    max_categories: int = DEFAULT_MAX_CATEGORIES
    strict_categories: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.extra:
            msg = f"Unknown dataset option(s): {', '.join(sorted(self.extra))}. Known: {', '.join(Dataset.option_names())}."
            raise OptionError(msg)
        if self.label is not None and (not isinstance(self.label, str) or not self.label):
            msg = f"The 'label' option must be a column name. Got {self.label!r} instead."
            raise OptionError(msg)
        set_(self, "features", column_names(self.features, "features"))
        set_(self, "drop", column_names(self.drop, "drop"))
        set_(self, "categorical", column_names(self.categorical, "categorical"))
        check_positive_int(self.max_categories, "max_categories")
        check_positive_int(self.max_rows, "max_rows", allow_none=True)
        try:
            if self.zero_is_missing is not None:
                re.compile(self.zero_is_missing)
        except (re.error, TypeError) as exc:
            msg = f"The 'zero_is_missing' option must be a regular expression. Got {self.zero_is_missing!r} instead ({exc})."
            raise OptionError(msg) from None
        check_positive_int(self.batch_rows, "batch_rows")
        if self.batch_rows > MAX_BATCH_ROWS:
            msg = (
                f"The 'batch_rows' option must be at most {MAX_BATCH_ROWS:,}. Got {self.batch_rows:,} instead: "
                "decoding memory grows with it (about 300 MB per 2,048 rows of 4,100 columns)."
            )
            raise OptionError(msg)
        if self.kmers is not None and not isinstance(self.kmers, KmerEncoding):
            msg = f"The 'kmers' option must be an extmem.KmerEncoding. Got {self.kmers!r} instead."
            raise OptionError(msg)
        if self.holdout is not None and not isinstance(self.holdout, Holdout):
            msg = f"The 'holdout' option must be an extmem.Holdout. Got {self.holdout!r} instead."
            raise OptionError(msg)
        if self.label_map is not None:
            label_map = dict(self.label_map)
            bad = [k for k, v in label_map.items() if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0]
            if not label_map or bad:
                msg = f"The 'label_map' option must map label strings to non-negative class ids. Got {self.label_map!r} instead."
                raise OptionError(msg)
            if sorted(set(label_map.values())) != list(range(len(set(label_map.values())))):
                msg = f"The 'label_map' class ids must be 0..K-1 without gaps. Got {sorted(set(label_map.values()))} instead."
                raise OptionError(msg)
            set_(self, "label_map", label_map)

    @staticmethod
    def option_names() -> list[str]:
        """Names accepted as keyword options (everything but ``path`` and ``extra``)."""
        return [f.name for f in fields(Dataset) if f.name not in ("path", "extra")]

    @classmethod
    def from_options(cls, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset, **options: Any) -> Dataset:
        """Build a Dataset from a path and keyword options, rejecting unknown keys."""
        if isinstance(path, Dataset):
            if not options:
                return path
            known = {name: getattr(path, name) for name in cls.option_names()}
            known.update(options)
            return cls.from_options(path.path, **known)
        known = {k: v for k, v in options.items() if k in cls.option_names()}
        unknown = {k: v for k, v in options.items() if k not in known}
        return cls(path=path, extra=unknown, **known)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options with absolute paths (for checkpoints); inverse of :meth:`from_dict`."""
        options = {name: getattr(self, name) for name in self.option_names()}
        options["features"], options["drop"], options["categorical"] = list(self.features), list(self.drop), list(self.categorical)
        options["holdout"] = asdict(self.holdout) if self.holdout is not None else None
        options["kmers"] = self.kmers.to_dict() if self.kmers is not None else None
        return {"path": [os.path.abspath(p) for p in self.paths], **options}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dataset:
        """Inverse of :meth:`to_dict`."""
        options = dict(data)
        holdout, kmers = options.pop("holdout", None), options.pop("kmers", None)
        return cls.from_options(
            options.pop("path"), holdout=Holdout(**holdout) if holdout else None, kmers=KmerEncoding(**kmers) if kmers else None, **options
        )

    @property
    def paths(self) -> list[str]:
        """The path argument as a list of strings."""
        if isinstance(self.path, (str, os.PathLike)):
            return [os.fspath(self.path)]
        return [os.fspath(Path(p)) for p in self.path]


DatasetLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset


def as_dataset(data: DatasetLike, label: str | None, options: Mapping[str, Any]) -> Dataset:
    """A Dataset from a path and options, or from a Dataset (keeping its label) with options applied."""
    if isinstance(data, Dataset):
        return Dataset.from_options(data, **options)
    return Dataset.from_options(data, label=label, **options)


def training_datasets(
    data: DatasetLike,
    label: str | None,
    options: Mapping[str, Any],
    valid: DatasetLike | None,
    valid_fraction: float | None,
    group_by: str | None,
    seed: int,
    early_stopping_rounds: int | None = None,
) -> tuple[Dataset, Dataset | None]:
    """The training dataset and its validation dataset, if any, as every trainer takes them.

    Validation data is either ``valid`` (read with the training options that define the
    features and labels) or the ``valid_fraction`` of rows split off deterministically (by
    ``group_by`` groups if given, with ``seed``). ``early_stopping_rounds`` needs one of them.
    """
    check_positive_int(early_stopping_rounds, "early_stopping_rounds", allow_none=True)
    if early_stopping_rounds is not None and valid is None and valid_fraction is None:
        msg = "The 'early_stopping_rounds' option needs validation data ('valid' or 'valid_fraction')."
        raise OptionError(msg)
    dataset = as_dataset(data, label, options)
    if dataset.label is None:
        msg = "Training needs a label column; the 'label' option is None."
        raise OptionError(msg)
    if valid_fraction is not None:
        if valid is not None:
            msg = "Give either 'valid' or 'valid_fraction', not both."
            raise OptionError(msg)
        holdout = Holdout(valid_fraction, group_by, seed)
        training = replace(dataset, holdout=holdout)
        return training, replace(training, holdout=replace(holdout, side="valid"), max_rows=None)
    if group_by is not None:
        msg = "The 'group_by' option needs 'valid_fraction'."
        raise OptionError(msg)
    if valid is None:
        return dataset, None
    shared = {
        "weight": dataset.weight,
        "label_map": dataset.label_map,
        "filter": dataset.filter,
        "batch_rows": dataset.batch_rows,
        "zero_is_missing": dataset.zero_is_missing,
    }
    return dataset, as_dataset(valid, dataset.label, shared)
