"""`Dataset`: the validated description of a parquet dataset that every step reads."""

from __future__ import annotations

import csv
import difflib
import functools
import inspect
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from extmem._defaults import DEFAULT_BATCH_ROWS, DEFAULT_MAX_CATEGORIES, MAX_BATCH_ROWS
from extmem._layout import KmerEncoding
from extmem._presets import Preset, preset_named
from extmem.errors import NoRowsError, OptionError, check_positive_int, is_integer, is_number
from extmem.read._filters import quoted
from extmem.read._storage import absolute


def column_names(value: str | Sequence[str] | None, option: str) -> tuple[str, ...]:
    """Column names from a list or comma-separated text (a name holding a comma in double quotes: ``"a,b",c``); ``option`` names the option in errors."""
    if value is None:
        return ()
    items = next(csv.reader([value], skipinitialspace=True), []) if isinstance(value, str) else list(value)
    if any(not isinstance(item, str) for item in items):
        msg = f"The '{option}' option must be column names (a list or comma-separated text). Got {value!r} instead."
        raise OptionError(msg, options=(option,))
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))  # each once: "a,a" is a
    if isinstance(value, str) and not names:  # an empty shell variable, say: not the same as leaving the option out
        msg = f"The '{option}' option names no column (got {value!r}); leave it out, or name columns."
        raise OptionError(msg, options=(option,))
    return names


HOLDOUT_SIDES = ("train", "valid")


@dataclass(frozen=True)
class Holdout:
    """A deterministic split: ``fraction`` of the rows (of the ``group_by`` groups, if given) are validation rows.

    Which side a row falls on depends only on its group value (or its shard file name and
    position) and ``seed``, never on batch sizes, filters or machine, so every pass and every
    run agree. ``side`` says which side a dataset reads. Each row hashes to a number in [0, 1);
    the validation rows are those from ``start`` to ``start + fraction`` (folds of cross-validation
    are ``start = k * fraction``).
    """

    fraction: float
    group_by: str | None = None
    seed: int = 0
    side: str = "train"
    start: float = 0.0

    def __post_init__(self) -> None:
        if not is_number(self.fraction) or not 0 < self.fraction < 1:
            msg = f"The 'valid_fraction' option must be a number between 0 and 1 (exclusive). Got {self.fraction!r} instead."
            raise OptionError(msg, options=("valid_fraction",))
        if not is_number(self.start) or not 0 <= self.start <= 1 - self.fraction + 1e-9:
            msg = f"The holdout 'start' must be from 0 to 1 - fraction ({1 - self.fraction:g}). Got {self.start!r} instead."
            raise OptionError(msg)
        if self.side not in HOLDOUT_SIDES:
            msg = f"The holdout side must be one of {HOLDOUT_SIDES}. Got {self.side!r} instead."
            raise OptionError(msg)
        if self.group_by is not None and (not isinstance(self.group_by, str) or not self.group_by):
            msg = f"The 'group_by' option must be a column name. Got {self.group_by!r} instead."
            raise OptionError(msg, options=("group_by",))
        if not is_integer(self.seed):
            msg = f"The holdout 'seed' must be an integer. Got {self.seed!r} instead."
            raise OptionError(msg, options=("seed",))
        object.__setattr__(self, "seed", int(self.seed))  # numpy's numbers too: the seed keys a hash, the others are stored
        object.__setattr__(self, "fraction", float(self.fraction))
        object.__setattr__(self, "start", float(self.start))


def _label_map(value: Mapping[str | int | float, int] | None) -> dict[str, int] | None:
    """The label map with its keys as text: numeric keys (``{-1: 0, 1: 1}``) map numeric labels."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        msg = f"The 'label_map' option must map labels to class ids. Got {value!r} instead."
        raise OptionError(msg, options=("label_map",))
    bad = [k for k, v in value.items() if isinstance(k, bool) or not isinstance(k, (str, numbers.Real)) or not is_integer(v) or v < 0]
    label_map = {str(key): int(class_id) for key, class_id in value.items() if key not in bad}  # numpy's numbers too
    if not label_map or bad or len(label_map) < len(value):
        msg = f"The 'label_map' option must map labels (strings or numbers) to non-negative class ids. Got {value!r} instead."
        raise OptionError(msg, options=("label_map",))
    if sorted(set(label_map.values())) != list(range(len(set(label_map.values())))):
        msg = f"The 'label_map' class ids must be 0..K-1 without gaps. Got {sorted(set(label_map.values()))} instead."
        raise OptionError(msg, options=("label_map",))
    return label_map


@dataclass(frozen=True)
class Dataset:
    """A parquet dataset: where it is, which columns are features, which is the label and how it maps.

    ``path`` is a folder of shards, a glob pattern, a single file, or a list of these.
    ``label`` names the label column (None: no label, e.g. for prediction). ``features``
    selects feature columns (names or glob patterns; default: every numeric column); ``drop``
    removes columns from the features. String columns are never numeric features.
    ``label_map`` maps labels to class ids: strings, or numbers such as ``{-1: 0, 1: 1}``; without it,
    string labels become classes in sorted order and numeric labels are used as they are. ``qid`` names the
    query-id column of a ranking dataset (integers or text; each query's rows together, the ids in
    non-decreasing order through the shards, as XGBoost requires). ``filter`` is a pyarrow-style row filter such as
    ``"(chrom == 'chr1') & (position > 1000)"``, pushed down to row groups.
    ``zero_is_missing`` is a regular expression: matching (count) columns are stored sparsely,
    a zero meaning 'absent'; other columns keep zeros as values. ``preset`` (a name such as
    ``"splice-sites"``, or an :class:`extmem.Preset`) fills in ``label``, ``label_map`` (for its
    own label column only) and ``zero_is_missing`` where they are not given. ``holdout`` keeps one side of a deterministic
    train/validation split. ``kmers`` replaces the ``{k}mer_*`` columns by hashed features, or
    builds k-mer features from a sequence column. ``categorical`` string columns become
    categorical features (at most ``max_categories`` values each); when scoring, unseen values
    are missing, or an error with ``strict_categories``.
    """

    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
    label: str | None = None
    weight: str | None = None
    qid: str | None = None
    features: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    label_map: Mapping[str, int] | Mapping[int, int] | Mapping[float, int] | None = None
    filter: str | None = None
    max_rows: int | None = None
    batch_rows: int = DEFAULT_BATCH_ROWS
    zero_is_missing: str | None = None
    holdout: Holdout | None = None
    kmers: KmerEncoding | None = None
    categorical: tuple[str, ...] = ()
    max_categories: int = DEFAULT_MAX_CATEGORIES
    strict_categories: bool = False
    preset: str | Preset | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        paths = [self.path] if isinstance(self.path, (str, os.PathLike)) else self.path
        if (
            isinstance(paths, (bytes, Mapping))
            or not isinstance(paths, Sequence)
            or not paths
            or not all(isinstance(p, (str, os.PathLike)) for p in paths)
        ):
            msg = (
                f"A dataset's 'path' must be a folder of parquet shards, a glob, a file, or a list of these; got {'an empty list' if isinstance(paths, (list, tuple)) and not paths else type(self.path).__name__}. "
                "A DataFrame (pandas, polars, dask): write it to parquet first (frame.to_parquet(folder))."
            )
            raise OptionError(msg, options=("path",))
        if self.extra:
            raise unknown_options_error("Dataset", sorted(self.extra), Dataset.option_names())
        if self.preset is not None:
            preset = preset_named(self.preset)
            set_(self, "preset", preset.name)
            for name, value in preset.options(self.label).items():
                if getattr(self, name) is None:
                    set_(self, name, value)
        for option in ("label", "weight", "qid", "filter"):
            value = getattr(self, option)
            if value is not None and (not isinstance(value, str) or not value):
                what = "a row filter" if option == "filter" else "a column name"
                msg = f"The '{option}' option must be {what}. Got {value!r} instead."
                if option != "filter" and hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
                    msg = f"The '{option}' option names a column of the dataset, not values (got a {type(value).__name__}): extmem reads each row's {option} from the shards, so add it to them as a column."
                raise OptionError(msg, options=(option,))
        for option in ("features", "drop", "categorical"):
            set_(self, option, column_names(getattr(self, option), option))
        check_positive_int(self.max_categories, "max_categories")
        check_positive_int(self.max_rows, "max_rows", allow_none=True)
        check_positive_int(self.batch_rows, "batch_rows")
        for option in ("max_categories", "max_rows", "batch_rows"):  # numpy's integers become Python's, as stored in reports
            if getattr(self, option) is not None:
                set_(self, option, int(getattr(self, option)))
        if not isinstance(self.strict_categories, bool):
            msg = f"The 'strict_categories' option must be True or False. Got {self.strict_categories!r} instead."
            raise OptionError(msg, options=("strict_categories",))
        try:
            if self.zero_is_missing is not None:
                re.compile(self.zero_is_missing)
        except (re.error, TypeError) as exc:
            msg = f"The 'zero_is_missing' option must be a regular expression. Got {self.zero_is_missing!r} instead ({exc})."
            raise OptionError(msg, options=("zero_is_missing",)) from None
        if self.batch_rows > MAX_BATCH_ROWS:
            msg = (
                f"The 'batch_rows' option must be at most {MAX_BATCH_ROWS:,}. Got {self.batch_rows:,} instead: "
                "decoding memory grows with it (about 300 MB per 2,048 rows of 4,100 columns)."
            )
            raise OptionError(msg, options=("batch_rows",))
        if self.kmers is not None and not isinstance(self.kmers, KmerEncoding):
            msg = f"The 'kmers' option must be an extmem.KmerEncoding. Got {self.kmers!r} instead."
            raise OptionError(msg, options=("kmers",))
        if self.holdout is not None and not isinstance(self.holdout, Holdout):
            msg = f"The 'holdout' option must be an extmem.Holdout. Got {self.holdout!r} instead."
            raise OptionError(msg, options=("holdout",))
        set_(self, "label_map", _label_map(self.label_map))
        self._check_roles()

    def _check_roles(self) -> None:
        """A column has one role: label, weight, query, group and feature columns are distinct, but a group column may also be
        the query column or named as a feature."""
        roles = {"label": self.label, "weight": self.weight, "qid": self.qid}
        named = [(role, column) for role, column in roles.items() if column is not None]
        if self.holdout is not None and self.holdout.group_by is not None and self.holdout.group_by != self.qid:
            named.append(("group_by", self.holdout.group_by))
        named += [("categorical", column) for column in self.categorical]
        named += [("features", column) for column in self.features if not any(char in column for char in "*?[")]
        seen: dict[str, str] = {}
        for role, column in named:
            other = seen.setdefault(column, role)
            if other != role and not (other == "group_by" and role in ("categorical", "features")):
                msg = f"The column {column!r} is both the '{other}' and in the '{role}' option; a column can have one role only."
                raise OptionError(msg, options=(other, role))

    @staticmethod
    def option_names() -> list[str]:
        """Names accepted as keyword options (everything but ``path`` and ``extra``)."""
        return [f.name for f in fields(Dataset) if f.name not in ("path", "extra")]

    @classmethod
    def from_options(cls, path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset, **options: Any) -> Dataset:
        """Build a Dataset from a path and keyword options, rejecting unknown keys; a Dataset gets ``options`` applied."""
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
        """JSON-ready options with absolute paths (for checkpoints and reports); inverse of :meth:`from_dict`."""
        options = {name: getattr(self, name) for name in self.option_names()}
        for name in ("features", "drop", "categorical"):
            options[name] = list(options[name])
        options["holdout"] = asdict(self.holdout) if self.holdout is not None else None
        options["kmers"] = self.kmers.to_dict() if self.kmers is not None else None
        return {"path": [absolute(p) for p in self.paths], **options}

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
        return [os.fspath(p) for p in self.path]


DatasetLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Dataset


def is_dataset(data: Any) -> bool:
    """Whether ``data`` names a parquet dataset (a path or a :class:`Dataset`) rather than in-memory data."""
    return isinstance(data, (str, os.PathLike, Dataset))


def unknown_options_error(taker: str, unknown: Sequence[str], known: Sequence[str]) -> OptionError:
    """The error for keyword options ``taker`` does not take, suggesting the nearest it does."""
    nearest = {name: difflib.get_close_matches(name, known, n=1, cutoff=0.6) for name in unknown}
    named = ", ".join(f"{name} (did you mean {near[0]}?)" if near else name for name, near in nearest.items())
    msg = f"{taker} takes no option(s) {named}. It takes: {', '.join(known)}."
    return OptionError(msg)


Function = TypeVar("Function", bound=Callable[..., Any])


def takes_dataset_options(passed_on: Sequence[str] = ()) -> Callable[[Function], Function]:
    """A decorator: the function's ``**options`` are dataset options (and the names ``passed_on``, which it
    checks itself); any other keyword is refused before it runs, naming the function and the nearest names it takes."""

    def decorate(function: Function) -> Function:
        parameters = inspect.signature(function).parameters.values()
        known = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)] + Dataset.option_names()

        @functools.wraps(function)
        def checked(*args: Any, **keywords: Any) -> Any:
            unknown = [name for name in keywords if name not in known and name not in passed_on]
            if unknown:
                raise unknown_options_error(f"extmem.{function.__name__}", unknown, known)
            return function(*args, **keywords)

        return checked  # type: ignore[return-value]

    return decorate


def as_dataset(data: DatasetLike, options: Mapping[str, Any]) -> Dataset:
    """A Dataset from a path and options, or from a Dataset with ``options`` applied over its own."""
    return Dataset.from_options(data, **options)


def check_rows(dataset: Dataset, purpose: str, rows: int, weight_total: float | None) -> None:
    """Refuse a read of ``dataset`` that left nothing ``purpose`` ("to train on", ...): no row, or only rows of weight 0.

    ``weight_total`` None: the rows are a share of the dataset (a distributed worker's), whose weights alone say nothing.
    """
    if rows == 0:
        raise no_rows_error(dataset, purpose)
    if dataset.weight is not None and weight_total == 0:
        msg = f"The weight column {dataset.weight!r} is 0 in every row of {', '.join(dataset.paths)}; there is nothing {purpose}."
        raise NoRowsError(msg, options=("weight",))


def no_rows_error(dataset: Dataset, purpose: str) -> NoRowsError:
    """The error for a dataset that yielded no rows, saying which option left none (``purpose``: "to train on", ...)."""
    paths = ", ".join(dataset.paths)
    matching = f" matching the 'filter' {quoted(dataset.filter)}" if dataset.filter else ""
    holdout = dataset.holdout
    if holdout is None:
        return NoRowsError(f"No rows of {paths}{matching}; there is nothing {purpose}.", options=("filter",))
    groups = f" of the 'group_by' groups ({holdout.group_by!r})" if holdout.group_by else " of the rows"
    split = f"the 'valid_fraction' {holdout.fraction}{groups}"
    if holdout.side == "valid":
        msg = (
            f"The validation split of {paths}{matching} is empty: {split} selected no row. "
            "Raise 'valid_fraction', or give validation data with 'valid'."
        )
    else:
        msg = f"The training split of {paths}{matching} is empty: {split} took every row. Lower 'valid_fraction'."
        if holdout.group_by:
            msg += " Each group goes to one side whole; with few groups, give validation data with 'valid' instead."
    return NoRowsError(msg, options=("valid_fraction", "group_by", "valid", "filter"))
