"""Splits: decided by row content, stratified within one row, groups and time never leak."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meguri.data import _split
from meguri.data._split import PARTS, check_leakage, digest, replay_split, split
from meguri.errors import DataError
from meguri.spec import SplitSpec


def frame(n: int = 2000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "x": rng.normal(size=n),
            "label": rng.choice(["a", "b", "c"], n, p=[0.7, 0.2, 0.1]),
            "customer": rng.integers(0, 120, n),
            "at": [start + dt.timedelta(hours=int(h)) for h in rng.integers(0, 5000, n)],
        }
    )


def shuffled(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    return df.sample(fraction=1.0, shuffle=True, seed=seed)


def sorted_parts(df: pl.DataFrame, spec: SplitSpec) -> dict[str, pl.DataFrame]:
    result = split(df, spec, target="label")
    return {name: part.sort(part.columns) for name, part in result.parts().items()}


@pytest.mark.parametrize(
    "spec",
    [
        SplitSpec(),
        SplitSpec(method="stratified", by="label", seed=3),
        SplitSpec(method="group", by="customer"),
        SplitSpec(method="time", by="at"),
    ],
    ids=["random", "stratified", "group", "time"],
)
def test_the_same_rows_land_in_the_same_part_whatever_the_order(spec: SplitSpec) -> None:
    df = frame()
    first, again = sorted_parts(df, spec), sorted_parts(shuffled(df, 1), spec)
    for name in PARTS:
        assert first[name].equals(again[name])
    assert split(df, spec).record()["digests"] == split(shuffled(df, 2), spec).record()["digests"]


def test_random_counts_follow_the_fractions() -> None:
    df = frame(1001)
    result = split(df, SplitSpec(train=0.6, validation=0.25, test=0.15))
    assert result.record()["counts"] == {"train": 601, "validation": 250, "test": 150}
    rows = pl.concat([result.train, result.validation, result.test])
    assert rows.sort(rows.columns).equals(df.sort(df.columns))


def test_a_different_seed_gives_a_different_split() -> None:
    df = frame()
    assert not split(df, SplitSpec(seed=1)).train.equals(split(df, SplitSpec(seed=2)).train)


def test_random_part_is_the_lowest_hashes() -> None:
    df = frame(500)
    result = split(df, SplitSpec(seed=9))
    hashes = np.sort(df.hash_rows(seed=9).to_numpy())
    assert set(result.hashes["train"].to_list()) == set(hashes[:350].tolist())
    assert result.record()["digests"]["train"] == digest(pl.Series(hashes[:350]))


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    train=st.floats(0.1, 0.8),
    seed=st.integers(0, 1000),
)
def test_stratified_keeps_class_proportions_within_one_row(
    counts: list[int], train: float, seed: int
) -> None:
    labels = [f"k{i}" for i, n in enumerate(counts) for _ in range(n)]
    df = pl.DataFrame({"label": labels, "i": range(len(labels))})
    validation = (1 - train) / 2
    spec = SplitSpec(
        method="stratified",
        train=train,
        validation=validation,
        test=1 - train - validation,
        seed=seed,
    )
    result = split(df, spec, target="label")
    fractions = spec.fractions
    for name, part in result.parts().items():
        got = dict(part.get_column("label").value_counts().iter_rows())
        for i, n in enumerate(counts):
            assert abs(got.get(f"k{i}", 0) - n * fractions[name]) <= 1


def test_stratified_record_lists_classes() -> None:
    result = split(frame(), SplitSpec(method="stratified"), target="label")
    record = result.record()
    assert record["by"] == "label"
    total = {k: sum(record["classes"][p].get(k, 0) for p in PARTS) for k in "abc"}
    assert total == dict(frame().get_column("label").value_counts().iter_rows())


def test_group_split_never_shares_a_group() -> None:
    result = split(frame(), SplitSpec(method="group", by="customer", seed=5))
    sets = {name: set(part.get_column("customer")) for name, part in result.parts().items()}
    assert not sets["train"] & sets["test"]
    assert not sets["train"] & sets["validation"]
    assert not sets["validation"] & sets["test"]
    assert 0.6 < result.train.height / 2000 < 0.8
    assert sum(result.record()["groups"].values()) == 120


def test_time_split_puts_the_latest_rows_in_test() -> None:
    df = frame().with_columns(pl.col("at").dt.truncate("1d"))  # many equal timestamps
    result = split(df, SplitSpec(method="time", by="at"))
    assert result.train.get_column("at").max() < result.validation.get_column("at").min()  # type: ignore[operator]
    assert result.validation.get_column("at").max() < result.test.get_column("at").min()  # type: ignore[operator]
    assert result.test.get_column("at").max() == df.get_column("at").max()
    bounds = result.record()["time_bounds"]
    assert bounds["train"][0] == str(df.get_column("at").min())


def test_leakage_guard_names_the_group_and_the_timestamp() -> None:
    df = frame(300)
    train, test = df.head(200), df.tail(150)  # 50 rows in both
    parts = {"train": train, "validation": df.head(0), "test": test}
    with pytest.raises(
        DataError, match=r"leakage: group \d+ of 'customer' is in both train and test"
    ):
        check_leakage(parts, "group", "customer")
    late = df.sort("at")
    parts = {"train": late.tail(100), "validation": df.head(0), "test": late.head(100)}
    with pytest.raises(DataError, match=r"leakage: train has at = .* but test starts at"):
        check_leakage(parts, "time", "at")


def test_bad_settings_are_data_errors() -> None:
    with pytest.raises(DataError, match="did you mean 'customer'"):
        split(frame(), SplitSpec(method="group", by="custmer"))
    with pytest.raises(DataError, match="needs `by`"):
        split(frame(), SplitSpec(method="stratified"))
    with pytest.raises(DataError, match="empty frame"):
        split(frame().head(0))
    nulls = frame().with_columns(pl.lit(None, dtype=pl.Datetime).alias("at"))
    with pytest.raises(DataError, match="'at' has 2000 null"):
        split(nulls, SplitSpec(method="time", by="at"))


def test_identical_rows_always_share_a_part() -> None:
    df = pl.concat([frame(300)] * 3)
    result = split(df, SplitSpec(seed=4))
    for name, part in result.parts().items():
        assert part.height % 3 == 0, name
    train, test = set(result.train.iter_rows()), set(result.test.iter_rows())
    assert not train & test


def test_replay_checks_the_recorded_split() -> None:
    df = frame()
    record = split(df, SplitSpec(method="stratified", seed=8), target="label").record()
    again = replay_split(shuffled(df, 3), json.loads(json.dumps(record)))
    assert again.record()["digests"] == record["digests"]
    with pytest.raises(DataError, match="the train rows differ from the recorded split"):
        replay_split(df.with_columns(pl.col("x") + 1), record)


@pytest.mark.parametrize("method", ["random", "stratified", "group", "time"])
def test_a_consuming_split_gives_the_same_parts_and_empties_the_frame(method: str) -> None:
    data = frame(3000)
    by = {"random": None, "stratified": "label", "group": "customer", "time": "at"}[method]
    spec = SplitSpec(method=method, by=by)  # type: ignore[arg-type]
    kept = split(data, spec)
    moved = data.clone()
    taken = split(moved, spec, consume=True)
    assert moved.width == 0  # the table's columns moved into the parts
    for name in PARTS:
        assert getattr(taken, name).equals(getattr(kept, name))
    assert taken.record() == kept.record()


def test_stratified_cut_points_equal_the_ranking_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few classes take each class's cut points off its sorted hashes; many take a ranking
    window: the same parts, with duplicate rows (tied hashes) and a null class."""
    rng = np.random.default_rng(11)
    n = 3_000
    labels = rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]).astype(object)
    labels[rng.choice(n, 40, replace=False)] = None
    df = pl.DataFrame({"x": rng.integers(0, 50, n), "label": pl.Series(labels, dtype=pl.String)})
    df = pl.concat([df, df.head(500)])  # 500 duplicated rows: ties in the row hash
    spec = SplitSpec(method="stratified", by="label", seed=5)
    few = split(df, spec)
    monkeypatch.setattr(_split, "_FEW_CLASSES", 0)
    window = split(df, spec)
    for name in PARTS:
        assert few.parts()[name].equals(window.parts()[name])
    assert few.record() == window.record()
