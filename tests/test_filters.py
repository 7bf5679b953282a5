from __future__ import annotations

import pyarrow as pa
import pytest

from extmem.errors import FilterError
from extmem.read._filters import parse_filter

TABLE = pa.table({"position": [1, 5, 10, 20], "chrom": ["chr1", "chr2", "chr1", None], "odd name": [0.1, 0.2, 0.3, 0.4]})


def rows(text: str) -> list[int]:
    return TABLE.filter(parse_filter(text).expression).column("position").to_pylist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("position > 4", [5, 10, 20]),
        ("4 < position <= 10", [5, 10]),
        ("(chrom == 'chr1') & (position > 1)", [10]),
        ("chrom == 'chr1' or position == 5", [1, 5, 10]),
        ("not (position > 4)", [1]),
        ("~(position > 4) | (position == 20)", [1, 20]),
        ("chrom in ['chr2', 'chrX']", [5]),
        ("chrom not in ('chr2',)", [1, 10]),
        ("is_null(chrom)", [20]),
        ("chrom is None", [20]),
        ("(chrom is not None) & (position > 1)", [5, 10]),
        ("field('odd name') >= 0.25", [10, 20]),
        ("`odd name` >= 0.25 and `position` < 20", [10]),
        ("position > -1", [1, 5, 10, 20]),
    ],
)
def test_filters_select_rows(text: str, expected: list[int]) -> None:
    assert rows(text) == expected


def test_filter_reports_its_columns() -> None:
    assert parse_filter("(chrom == 'chr1') & (field('odd name') > 0)").columns == {"chrom", "odd name"}


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("position >", "Invalid 'filter' 'position >'"),
        ("__import__('os') == 1", "unknown function __import__"),
        ("__import__('os').system('x')", "expected a condition"),
        ("position + 1 > 2", "unsupported syntax"),
        ("1 < 2", "needs a column"),
        ("'odd name' > 0", r"needs a column; 'odd name' is a string: a column named so is `odd name` or field\('odd name'\)"),
        ("position", "expected a condition"),
        ("position and chrom == 'chr1'", "expected a condition"),
        ("chrom in chrom", "column in \\[value"),
        ("position.real > 1", "unsupported syntax"),
        ("chrom is null", "use 'column is None' or is_null\\(column\\) to select nulls"),
        ("position is 3", "to select nulls"),
    ],
)
def test_bad_filters_are_rejected(text: str, match: str) -> None:
    with pytest.raises(FilterError, match=match) as raised:
        parse_filter(text)
    message = str(raised.value)
    assert message.count("Invalid 'filter'") == 1 and not message.endswith(".."), message
