from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import encoded

import extmem
from extmem.cli import main
from extmem.read._selection import select_dataset

REGIONS = ["intron", "exon", "utr", "intergenic"]


def _write(path: Path, rows: int, seed: int, dictionary_order: list[str] | None = None) -> None:
    """Rows whose label depends on the region (a string) far more than on the numeric columns."""
    rng = np.random.default_rng(seed)
    region = rng.choice(REGIONS, size=rows)
    noise = rng.normal(size=rows)
    donor = (region == "exon") & (rng.random(rows) < 0.8)
    acceptor = (region == "utr") & (rng.random(rows) < 0.8)
    labels = np.where(donor, "donor", np.where(acceptor, "acceptor", "neither"))
    if dictionary_order is None:
        region_column = pa.array(region)
    else:
        codes = np.array([dictionary_order.index(value) for value in region], dtype=np.int32)
        region_column = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(dictionary_order))
    table = pa.table({"region": region_column, "noise": noise, "score": noise + rng.normal(size=rows), "splice_type": labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=500)


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regions")
    _write(root / "train" / "a.parquet", 3000, seed=1)
    _write(root / "train" / "b.parquet", 3000, seed=2, dictionary_order=["utr", "intergenic", "exon", "intron"])
    _write(root / "valid" / "a.parquet", 2000, seed=3)
    _write(root / "shuffled" / "a.parquet", 2000, seed=3, dictionary_order=["intergenic", "utr", "intron", "exon"])
    return {name: root / name for name in ("train", "valid", "shuffled")}


def test_codes_are_the_same_in_every_shard_whatever_the_value_order(regions: dict[str, Path]) -> None:
    source = select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="region"))
    assert source.layout.categories == {"region": ("exon", "intergenic", "intron", "utr")}
    assert source.layout.feature_types == ["q", "q", "c"]
    assert source.layout.zero_is_missing[-1] is False
    values = [v for p in sorted(regions["train"].glob("*.parquet")) for v in pq.read_table(p).column("region").to_pylist()]
    expected = [source.layout.categories["region"].index(v) for v in values]
    position = source.layout.names.index("region")
    codes = [c for block in encoded(source) for c in np.asarray(block.X[:, position]).ravel().tolist()]
    assert codes == expected


def test_a_category_with_signal_beats_dropping_it(regions: dict[str, Path]) -> None:
    with_category = extmem.train(regions["train"], preset="splice-sites", valid=regions["valid"], rounds=20, categorical=["region"]).report
    without = extmem.train(regions["train"], preset="splice-sites", valid=regions["valid"], rounds=20).report
    scored, dropped = with_category["evaluation"]["valid"], without["evaluation"]["valid"]
    assert scored["macro_f1"] > dropped["macro_f1"] + 0.3
    assert scored["mlogloss"] < dropped["mlogloss"] - 0.1


def test_scoring_data_with_another_dictionary_order_gives_the_same_predictions(regions: dict[str, Path], tmp_path: Path) -> None:
    extmem.train(regions["train"], preset="splice-sites", out=tmp_path / "model", rounds=10, categorical="region")
    model = extmem.Model.load(tmp_path / "model")
    assert model.layout.categories["region"] == ("exon", "intergenic", "intron", "utr")
    plain, shuffled = model.predict_proba(regions["valid"]), model.predict_proba(regions["shuffled"])
    np.testing.assert_array_equal(plain, shuffled)
    frame = pq.read_table(regions["valid"] / "a.parquet").to_pandas()
    np.testing.assert_allclose(model.predict_proba(frame), plain, atol=1e-6)


def test_unseen_categories_are_missing_or_an_error(regions: dict[str, Path], tmp_path: Path) -> None:
    extmem.train(regions["train"], preset="splice-sites", out=tmp_path / "model", rounds=5, categorical="region")
    table = pq.read_table(regions["valid"] / "a.parquet")
    unseen = table.set_column(0, "region", pa.array(["novel"] * table.num_rows))
    missing = table.set_column(0, "region", pa.nulls(table.num_rows, pa.string()))
    (tmp_path / "unseen").mkdir()
    (tmp_path / "missing").mkdir()
    pq.write_table(unseen, tmp_path / "unseen" / "a.parquet")
    pq.write_table(missing, tmp_path / "missing" / "a.parquet")
    model = extmem.Model.load(tmp_path / "model")
    np.testing.assert_array_equal(model.predict_proba(tmp_path / "unseen"), model.predict_proba(tmp_path / "missing"))
    with pytest.raises(extmem.SchemaError, match=r"'region' has value\(s\) \['novel'\] in row group 0 of .* \('strict_categories'\)"):
        extmem.predict(tmp_path / "model", tmp_path / "unseen", tmp_path / "p.parquet", strict_categories=True)
    assert not (tmp_path / "p.parquet").exists()


def test_bad_categorical_columns_are_refused(regions: dict[str, Path]) -> None:
    with pytest.raises(extmem.SchemaError, match="The 'categorical' column 'region' has more than 3 distinct values"):
        select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="region", max_categories=3))
    with pytest.raises(extmem.SchemaError, match="The 'categorical' column 'noise' has more than 1,024 distinct values"):
        select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="noise"))
    with pytest.raises(extmem.SchemaError, match="The 'categorical' column 'nope' is in none"):
        select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="nope"))


def test_categorical_takes_patterns_as_features_do(regions: dict[str, Path]) -> None:
    """--categorical 'reg*' was "the column 'reg*' is in none of the shards"; --features and --drop took patterns."""
    by_name = select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="region"))
    by_pattern = select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="reg*"))
    assert by_pattern.layout == by_name.layout and by_pattern.dataset.categorical == ("region",)
    with pytest.raises(extmem.SchemaError, match=r"The 'categorical' entry 'nothing_\*' matches no column"):
        select_dataset(extmem.Dataset(regions["train"], preset="splice-sites", categorical="nothing_*"))


def test_the_notice_suggests_categorical_for_small_string_columns(
    regions: dict[str, Path], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The command line names the flag, the library the option, whichever ran first in the process."""
    assert (
        main(["train", str(regions["train"]), "--preset", "splice-sites", "--rounds", "1", "--out", str(tmp_path / "m"), "--no-progress"])
        == 0
    )
    assert "usable as --categorical: region" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="extmem"):
        select_dataset(extmem.Dataset(regions["train"], preset="splice-sites"))
    assert "not using 1 non-numeric column(s) as features: region" in caplog.text
    assert "usable as 'categorical': region" in caplog.text
    assert "--categorical" not in caplog.text


def test_numbers_are_categories_like_their_text(tmp_path: Path) -> None:
    """A column of integer codes (chromosome 1..22) as a categorical feature: the same model as the same codes written as strings;
    a date column is refused by name (categorical columns hold strings or numbers)."""
    rng = np.random.default_rng(0)
    codes = rng.integers(1, 23, 2000)
    labels = np.where(np.isin(codes, [2, 7, 11]), "donor", "neither")
    for name, column in (("numbers", pa.array(codes, pa.int32())), ("text", pa.array(codes.astype(str)))):
        path = tmp_path / name / "a.parquet"
        path.parent.mkdir()
        pq.write_table(pa.table({"chrom": column, "day": pa.array(codes, pa.int32()).cast(pa.date32()), "splice_type": labels}), path)
    models = {name: extmem.train(tmp_path / name, preset="splice-sites", categorical="chrom", rounds=5) for name in ("numbers", "text")}
    assert models["numbers"].report["features"] == 1
    numbers, text = (extmem.Model.from_booster(models[name].booster) for name in ("numbers", "text"))
    assert numbers.layout.categories == text.layout.categories
    np.testing.assert_array_equal(numbers.predict_proba(tmp_path / "numbers"), text.predict_proba(tmp_path / "text"))
    np.testing.assert_array_equal(numbers.predict_proba(tmp_path / "text"), text.predict_proba(tmp_path / "numbers"))
    with pytest.raises(
        extmem.SchemaError, match=r"'categorical' column 'day' is date32\[day\] .*; categorical columns hold strings or numbers"
    ):
        select_dataset(extmem.Dataset(tmp_path / "numbers", preset="splice-sites", categorical="day"))
