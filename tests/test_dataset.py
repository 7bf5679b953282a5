from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import extmem
from extmem import Dataset, Holdout, OptionError
from extmem.read._budget import Budget
from extmem.read._dataset import as_dataset
from extmem.xgb._build import MatrixOptions


def test_names_accept_lists_and_comma_text() -> None:
    dataset = Dataset("data", preset="splice-sites", features="a, b,,c", drop=["x"])
    assert dataset.features == ("a", "b", "c") and dataset.drop == ("x",)


def test_a_label_map_of_numpy_numbers_is_a_label_map() -> None:
    """Keys and class ids from numpy (a grid's values, np.unique's labels) map as Python's do, stored as text and ints."""
    label_map = Dataset("data", label_map={np.int64(-1): np.int64(0), np.float64(1.5): 1}).label_map
    assert label_map == {"-1": 0, "1.5": 1} and all(type(class_id) is int for class_id in label_map.values())


def test_numpy_floats_are_numbers_wherever_python_floats_are() -> None:
    """np.float32 is no Python float: a split fraction, a budget and XGBoost's 'missing' from numpy were refused; now stored as floats."""
    holdout = Holdout(np.float32(0.25), start=np.float32(0.5))
    assert (holdout.fraction, holdout.start) == (0.25, 0.5) and type(holdout.fraction) is float
    assert Budget.resolve(np.float32(2**30)).bytes == 2**30  # type: ignore[union-attr]
    assert MatrixOptions(missing=np.float32(-1)).missing == -1.0
    with pytest.raises(OptionError, match="'valid_fraction' option must be a number between 0 and 1"):
        Holdout(np.bool_(True))  # type: ignore[arg-type]


def test_options_apply_over_a_dataset_and_keep_the_rest() -> None:
    base = Dataset("data", label="y", max_rows=10)
    assert as_dataset(base, {}) is base
    changed = as_dataset(base, {"max_rows": 5})
    assert changed.label == "y" and changed.max_rows == 5 and changed.path == "data"


def test_the_library_has_no_domain_defaults_and_a_preset_fills_them_in() -> None:
    plain = Dataset("data")
    assert (plain.label, plain.label_map, plain.zero_is_missing) == (None, None, None)
    splice = Dataset("data", preset="splice-sites")
    assert splice.label == "splice_type" and splice.label_map == {"neither": 0, "donor": 1, "acceptor": 2}
    assert splice.zero_is_missing == r"^\d+mer_"
    own = Dataset("data", preset="splice-sites", label="target", label_map={"no": 0, "yes": 1})
    assert own.label == "target" and own.label_map == {"no": 0, "yes": 1} and own.zero_is_missing == splice.zero_is_missing
    other_label = Dataset("data", preset="splice-sites", label="target")
    assert other_label.label_map is None, "the preset's classes belong to its own label column"
    assert Dataset("data", preset="splice-sites", label="splice_type").label_map == splice.label_map
    with pytest.raises(OptionError, match="The 'preset' option must be one of none, splice-sites"):
        Dataset("data", preset="splice")


@pytest.mark.parametrize(
    ("options", "roles"),
    [
        ({"label": "y", "categorical": ["y"]}, "'label' and in the 'categorical'"),
        ({"label": "y", "weight": "y"}, "'label' and in the 'weight'"),
        ({"label": "y", "features": ["a", "y"]}, "'label' and in the 'features'"),
        ({"weight": "w", "categorical": "w"}, "'weight' and in the 'categorical'"),
    ],
)
def test_a_column_has_one_role(options: dict, roles: str) -> None:
    with pytest.raises(OptionError, match=f"is both the {roles} option; a column can have one role only"):
        Dataset("data", **options)


def test_a_group_column_named_as_a_feature_is_both(small_synth: Path) -> None:
    """--group-by chrom --categorical chrom was refused as two roles: grouping the split by a column and learning from it is
    sound (its values on the validation side are categories the model has not seen); the default features still leave it out."""
    from extmem.read._dataset import Holdout
    from extmem.read._selection import select_dataset

    grouped = Holdout(0.3, "chrom")
    both = select_dataset(Dataset(small_synth, preset="splice-sites", holdout=grouped, categorical=["chrom"]), announce=False)
    assert "chrom" in both.layout.categories and both.layout.names[-1] == "chrom"
    plain = select_dataset(Dataset(small_synth, preset="splice-sites", holdout=Holdout(0.3, "position")), announce=False)
    assert "position" not in plain.layout.names
    named = select_dataset(
        Dataset(small_synth, preset="splice-sites", holdout=Holdout(0.3, "position"), features=["position", "4mer_*"]), announce=False
    )
    assert "position" in named.layout.names and "4mer_AAAA" in named.layout.names


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_rows": 0}, "'batch_rows' option must be a positive integer. Got 0 instead."),
        ({"max_rows": True}, "'max_rows' option must be a positive integer"),
        ({"features": [1, 2]}, "'features' option must be column names"),
        ({"label": ""}, "'label' option must be a column name"),
        ({"features": ""}, "'features' option names no column \\(got ''\\); leave it out"),
        ({"drop": " , "}, "'drop' option names no column"),
        ({"weight": [1.0, 2.0]}, "'weight' option names a column of the dataset, not values \\(got a list\\)"),
        ({"label_map": {"a": 0, "b": 2}}, "class ids must be 0..K-1"),
        ({"label_map": {"a": -1}}, "non-negative class ids"),
        ({"extra": {"bach_rows": 5}}, "Dataset takes no option\\(s\\) bach_rows \\(did you mean batch_rows\\?\\)"),
        ({"zero_is_missing": "^(kmer"}, "'zero_is_missing' option must be a regular expression"),
    ],
)
def test_invalid_options_say_what_was_given(options: dict, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        Dataset("data", **options)


@pytest.mark.parametrize(("path", "given"), [([], "an empty list"), (5, "int"), ({"a": 1}, "dict")])
def test_a_path_of_another_kind_says_what_was_given(path: object, given: str) -> None:
    with pytest.raises(OptionError, match=f"a file, or a list of these; got {given}\\."):
        Dataset(path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "misspelt", "nearest"),
    [
        (lambda **kw: extmem.train("data", **kw), "early_stoping_rounds", "early_stopping_rounds"),
        (lambda **kw: extmem.cross_validate("data", **kw), "fold", "folds"),
        (lambda **kw: extmem.dmatrix("data", **kw), "page_row", "page_rows"),
        (lambda **kw: extmem.predict("model", "data", "out.parquet", **kw), "kep", "keep"),
        (lambda **kw: extmem.evaluate("model", "data", **kw), "plott", "plot"),
        (lambda **kw: extmem.explain("model", "data", "why", **kw), "topp", "top"),
        (lambda **kw: extmem.train_incremental("data", **kw), "epoch", "epochs"),
        (lambda **kw: extmem.train("data", **kw), "filtre", "filter"),
    ],
)
def test_a_misspelt_keyword_is_refused_by_the_function_with_the_nearest_name(call: Any, misspelt: str, nearest: str) -> None:
    """Every function whose **options are dataset options: its own keywords were missing from the error ("Unknown dataset option")."""
    with pytest.raises(OptionError, match=rf"takes no option\(s\) {misspelt} \(did you mean {nearest}\?\)"):
        call(**{misspelt: 1})
