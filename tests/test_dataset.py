from __future__ import annotations

import pytest

from extmem import Dataset, OptionError
from extmem.read._dataset import as_dataset


def test_names_accept_lists_and_comma_text() -> None:
    dataset = Dataset("data", features="a, b,,c", drop=["x"])
    assert dataset.features == ("a", "b", "c") and dataset.drop == ("x",)


def test_from_options_overrides_a_dataset_but_keeps_its_label() -> None:
    base = Dataset("data", label="y", max_rows=10)
    assert as_dataset(base, "splice_type", {}) is base
    changed = as_dataset(base, "splice_type", {"max_rows": 5})
    assert changed.label == "y" and changed.max_rows == 5 and changed.path == "data"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_rows": 0}, "'batch_rows' option must be a positive integer. Got 0 instead."),
        ({"max_rows": True}, "'max_rows' option must be a positive integer"),
        ({"features": [1, 2]}, "'features' option must be column names"),
        ({"label": ""}, "'label' option must be a column name"),
        ({"label_map": {"a": 0, "b": 2}}, "class ids must be 0..K-1"),
        ({"label_map": {"a": -1}}, "non-negative class ids"),
        ({"extra": {"bach_rows": 5}}, "Unknown dataset option\\(s\\): bach_rows"),
        ({"zero_is_missing": "^(kmer"}, "'zero_is_missing' option must be a regular expression"),
    ],
)
def test_invalid_options_say_what_was_given(options: dict, match: str) -> None:
    with pytest.raises(OptionError, match=match):
        Dataset("data", **options)
