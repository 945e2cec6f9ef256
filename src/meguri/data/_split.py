"""Train/validation/test splits decided by row content, so a re-run gives the same split.

Every row gets ``h = hash_rows(seed)`` over all its columns (Polars' row hash, seeded by the
spec's seed). Then, with ``n_train = round(n * train)`` and ``n_val = round(n * (train +
validation)) - n_train``:

``random``      rows in ascending ``h``: the first ``n_train`` to train, the next ``n_val`` to
                validation, the rest to test (the same rows whatever the input order; identical
                rows share a hash and so always a part: a duplicate never leaks across).
``stratified``  the same within each class of ``by`` (default: the target), so each part keeps
                the class proportions to within one row per class.
``group``       groups of ``by`` in ascending hash of the group value; a group goes to the part
                where the midpoint of its rows falls, so no group is ever in two parts.
``time``        rows in ascending ``by``: the earliest to train, the latest to test; rows with
                equal timestamps always share a part.

:func:`check_leakage` verifies the group and time guarantees on any three frames. The
:meth:`SplitResult.record` stores the counts, the rule, and a sha256 digest of each part's
sorted row hashes, from which the split can be checked or rebuilt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from meguri.data._steps_base import unknown_column
from meguri.errors import DataError
from meguri.spec._prepare import SplitSpec

__all__ = ["PARTS", "SplitResult", "check_leakage", "replay_split", "split"]

PARTS = ("train", "validation", "test")
_HASH = "__meguri_hash"
_PART = "__meguri_part"


@dataclass(frozen=True)
class SplitResult:
    """The three parts (rows in input order) and how they were made."""

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    spec: SplitSpec
    by: str | None
    hashes: Mapping[str, pl.Series]
    """Each part's row hashes (``hash_rows(seed)``), aligned with its rows."""

    def parts(self) -> dict[str, pl.DataFrame]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def record(self) -> dict[str, Any]:
        """JSON for the catalog's ``Split``: counts, rule and a digest of each part's rows."""
        parts = self.parts()
        record: dict[str, Any] = {
            "method": self.spec.method,
            "seed": self.spec.seed,
            "by": self.by,
            "fractions": self.spec.fractions,
            "rows": sum(frame.height for frame in parts.values()),
            "counts": {name: frame.height for name, frame in parts.items()},
            "hash": {"function": "polars.DataFrame.hash_rows", "seed": self.spec.seed},
            "polars_version": pl.__version__,
            "digests": {name: digest(self.hashes[name]) for name in PARTS},
            "rule": _RULES[self.spec.method],
        }
        record.update(_details(self.spec.method, self.by, parts))
        return record


def digest(hashes: pl.Series) -> str:
    """sha256 of the sorted row hashes (8 bytes each, little-endian): order-independent."""
    ordered = hashes.cast(pl.UInt64).sort().to_numpy().astype("<u8")
    return hashlib.sha256(ordered.tobytes()).hexdigest()


_RULES = {
    "random": "rows sorted by hash_rows(seed); cut at round(n*train), round(n*(train+validation))",
    "stratified": "within each class of `by`, rows sorted by hash_rows(seed) and cut as random",
    "group": "groups sorted by hash(seed) of `by`; a group goes where its rows' midpoint falls",
    "time": "rows sorted by `by`; cut as random, ties kept together (earliest in train)",
}


def _details(method: str, by: str | None, parts: dict[str, pl.DataFrame]) -> dict[str, Any]:
    if by is None or method == "random":
        return {}
    if method == "stratified":
        return {"classes": {name: _class_counts(frame, by) for name, frame in parts.items()}}
    if method == "group":
        return {"groups": {name: frame.get_column(by).n_unique() for name, frame in parts.items()}}
    return {"time_bounds": {name: _bounds(frame, by) for name, frame in parts.items()}}


def _class_counts(frame: pl.DataFrame, by: str) -> dict[str, int]:
    """Rows per class, by the class as text (``"null"`` for a null), in the order of the text.

    Counted on the column itself; only the few classes are turned into text."""
    counts = frame.get_column(by).value_counts(name="n")
    named = {_class_text(value): int(n) for value, n in counts.iter_rows()}
    return dict(sorted(named.items()))


def _class_text(value: Any) -> str:
    """A class as text: what casting its column to ``pl.String`` gives (``"null"`` for null)."""
    return "null" if value is None else str(pl.Series([value]).cast(pl.String)[0])


def _bounds(frame: pl.DataFrame, by: str) -> list[str] | None:
    if frame.height == 0:
        return None
    column = frame.get_column(by)
    return [str(column.min()), str(column.max())]


def split(
    frame: pl.DataFrame,
    spec: SplitSpec | None = None,
    *,
    target: str | None = None,
    consume: bool = False,
) -> SplitResult:
    """Split ``frame`` as ``spec`` says (default: random 70/15/15, seed 42); see the module.

    ``consume=True`` empties ``frame`` (every column dropped in place) while the parts are
    built, a few columns at a time: when nothing else holds the table, its rows are in
    memory about once during the split instead of twice. The parts are the same."""
    spec = spec or SplitSpec()
    by = _by(frame, spec, target)
    if frame.height == 0:
        raise DataError("cannot split an empty frame; check the source and the filters")
    # Decide on a narrow frame (hash, and the `by` column) and filter the input once per part:
    # widening the whole table with helper columns would copy it.
    hashes = frame.hash_rows(seed=spec.seed).alias(_HASH)
    keys = pl.DataFrame([hashes, *([frame.get_column(by)] if by is not None else [])])
    part = _ASSIGN[spec.method](keys, spec, by)  # each row's part, as its index in PARTS
    masks = {name: part == code for code, name in enumerate(PARTS)}
    del keys, part
    rows = _take(frame, masks) if consume else {n: frame.filter(m) for n, m in masks.items()}
    result = SplitResult(
        rows["train"],
        rows["validation"],
        rows["test"],
        spec=spec,
        by=by,
        hashes={name: hashes.filter(mask) for name, mask in masks.items()},
    )
    if by is not None and spec.method in ("group", "time"):
        check_leakage(result.parts(), spec.method, by)
    return result


_COLUMN_GROUPS = 8


def _take(frame: pl.DataFrame, masks: Mapping[str, pl.Series]) -> dict[str, pl.DataFrame]:
    """Each part's rows of ``frame``, moving a group of columns at a time out of ``frame``
    (dropped in place once filtered), so that at most one group is held twice."""
    names = frame.columns
    size = -(-len(names) // _COLUMN_GROUPS)
    columns: dict[str, list[pl.Series]] = {name: [] for name in masks}
    for start in range(0, len(names), size):
        group = pl.DataFrame([frame.drop_in_place(c) for c in names[start : start + size]])
        for name, mask in masks.items():
            columns[name].extend(group.filter(mask).get_columns())
        del group
    return {name: pl.DataFrame(found) for name, found in columns.items()}


def replay_split(frame: pl.DataFrame, record: Mapping[str, Any]) -> SplitResult:
    """Split ``frame`` again as ``record`` (from :meth:`SplitResult.record`) says, and check it.

    Raises :class:`DataError` naming the part whose rows differ from those recorded (other
    rows, or a Polars version whose row hash differs: see ``record["polars_version"]``).
    """
    spec = SplitSpec(
        method=record["method"], seed=record["seed"], by=record["by"], **record["fractions"]
    )
    result = split(frame, spec, target=record["by"])
    digests = result.record()["digests"]
    for name in PARTS:
        if digests[name] != record["digests"][name]:
            raise DataError(
                f"the {name} rows differ from the recorded split ({result.parts()[name].height} "
                f"rows now, {record['counts'][name]} recorded; hashed with Polars "
                f"{record['polars_version']}, now {pl.__version__}); use the recorded dataset "
                "version"
            )
    return result


def _by(frame: pl.DataFrame, spec: SplitSpec, target: str | None) -> str | None:
    by = spec.by or (target if spec.method == "stratified" else None)
    if spec.method == "stratified" and by is None:
        raise DataError("a stratified split needs `by` (the class column) or a target")
    if by is not None and by not in frame.columns:
        raise DataError(f"data.split.by: {unknown_column(by, frame.columns)}")
    return by


def _cut_ranks(n: int, spec: SplitSpec) -> tuple[int, int]:
    """:func:`_cuts` of ``n`` rows as plain numbers."""
    train, upto_validation = _cuts(n, spec)
    row = pl.select(train.alias("train"), upto_validation.alias("upto_validation")).row(0)
    return int(row[0]), int(row[1])


def _cuts(n: pl.Expr | int, spec: SplitSpec) -> tuple[pl.Expr, pl.Expr]:
    """The last rank (1-based) of train and of validation among ``n`` rows."""
    total = pl.lit(n) if isinstance(n, int) else n
    train = (total * spec.train).round().cast(pl.Int64)
    upto_validation = (total * (spec.train + spec.validation)).round().cast(pl.Int64)
    return train, upto_validation


def _part(train: pl.Expr, validation: pl.Expr) -> pl.Expr:
    """The part's index in :data:`PARTS`: train where ``train`` holds, else validation where
    ``validation`` holds, else test."""
    return pl.when(train).then(0).when(validation).then(1).otherwise(2).cast(pl.UInt8)


def _by_rank(rank: pl.Expr, n: pl.Expr | int, spec: SplitSpec) -> pl.Expr:
    train, upto_validation = _cuts(n, spec)
    return _part(rank <= train, rank <= upto_validation)


def _random(frame: pl.DataFrame, spec: SplitSpec, by: str | None) -> pl.Series:
    rank = pl.col(_HASH).rank("min")
    return frame.select(_by_rank(rank, frame.height, spec)).to_series()


_FEW_CLASSES = 32


def _stratified(frame: pl.DataFrame, spec: SplitSpec, by: str | None) -> pl.Series:
    """Within each class, the rank of a row's hash decides its part. With few classes (of a
    type without NaN) each class's cut points are read off its sorted hashes instead: a row
    whose hash is at most the ``k``-th smallest of its class has a ``"min"`` rank of at most
    ``k``, so the parts are the same, for one sort per class instead of a ranking window."""
    assert by is not None
    column = frame.get_column(by)
    classes = column.unique()
    if column.dtype.is_float() or classes.len() > _FEW_CLASSES:
        rank = pl.col(_HASH).rank("min").over(by)
        return frame.select(_by_rank(rank, pl.len().over(by), spec)).to_series()
    hashes = frame.get_column(_HASH)
    values = hashes.to_numpy()
    codes = np.full(frame.height, 2, dtype=np.uint8)
    for value in classes:
        member = column.eq_missing(value)
        ordered = hashes.filter(member).sort().to_numpy()
        train, upto_validation = _cut_ranks(ordered.size, spec)
        inside = member.to_numpy()
        if upto_validation:
            codes[inside & (values <= ordered[upto_validation - 1])] = 1
        if train:
            codes[inside & (values <= ordered[train - 1])] = 0
    return pl.Series(_PART, codes)


def _group(frame: pl.DataFrame, spec: SplitSpec, by: str | None) -> pl.Series:
    assert by is not None
    key = pl.col(by).hash(seed=spec.seed).alias("__group")
    groups = frame.select(key).group_by("__group").len().sort("__group")
    middle = pl.col("len").cum_sum() - pl.col("len") / 2
    train, upto_validation = _cuts(frame.height, spec)
    groups = groups.with_columns(_part(middle < train, middle < upto_validation).alias(_PART))
    rows = frame.select(key).join(groups, on="__group", how="left", maintain_order="left")
    return rows.get_column(_PART)


def _time(frame: pl.DataFrame, spec: SplitSpec, by: str | None) -> pl.Series:
    assert by is not None
    nulls = frame.get_column(by).null_count()
    if nulls:
        raise DataError(
            f"data.split.by: the timestamp column {by!r} has {nulls} null(s); a time split "
            "cannot place them: drop or fill them first"
        )
    rank = pl.col(by).rank("min")
    return frame.select(_by_rank(rank, frame.height, spec)).to_series()


_ASSIGN = {"random": _random, "stratified": _stratified, "group": _group, "time": _time}


def check_leakage(parts: Mapping[str, pl.DataFrame], method: str, by: str) -> None:
    """Raise :class:`DataError` if a group is in two parts, or time order is broken.

    For ``time``, every train timestamp must precede every validation and test one, and every
    validation timestamp every test one.
    """
    ordered = [(name, parts[name]) for name in PARTS if parts[name].height]
    for i, (early, first) in enumerate(ordered):
        for late, second in ordered[i + 1 :]:
            if method == "group":
                _check_groups(first, second, by, (early, late))
            elif method == "time":
                _check_times(first, second, by, (early, late))


def _check_groups(
    first: pl.DataFrame, second: pl.DataFrame, by: str, names: tuple[str, str]
) -> None:
    shared = first.select(by).unique().join(second.select(by).unique(), on=by, nulls_equal=True)
    if shared.height:
        value = shared.get_column(by)[0]
        raise DataError(
            f"leakage: group {value!r} of {by!r} is in both {names[0]} and {names[1]} "
            f"({shared.height} group(s) in all); split by group so each stays in one part"
        )


def _check_times(
    first: pl.DataFrame, second: pl.DataFrame, by: str, names: tuple[str, str]
) -> None:
    latest, earliest = first.get_column(by).max(), second.get_column(by).min()
    if latest is not None and earliest is not None and latest >= earliest:  # type: ignore[operator]
        raise DataError(
            f"leakage: {names[0]} has {by} = {latest!s} but {names[1]} starts at {earliest!s}; "
            f"every {names[0]} timestamp must precede every {names[1]} one (split by time)"
        )
