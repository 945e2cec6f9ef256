"""The quality checks meguri infers from the data: no spec entry needed.

- **type drift**: a column added, removed or of another type than in the previous version.
- **constant columns**: at most one distinct present value.
- **duplicate rows**: rows equal to an earlier row in every column (the copies are reported).
- **target leakage suspects**: one column alone predicts the target almost perfectly: ROC AUC
  above ``leakage_auc`` on a binary target (numeric and boolean columns; the AUC is the
  Mann-Whitney rank statistic, direction-free), ``|Pearson r|`` above ``leakage_correlation``
  on a regression target, or, for any classification target, a column with no more distinct
  values than the target whose values each map to one class on ``leakage_purity`` of rows.
- **PII-looking columns**: a name such as ``email`` or ``phone_number``, or text values of
  which ``pii_share`` of a sample look like email addresses, phone numbers (9 to 15 digits,
  not a date) or card numbers (13 to 19 digits passing the Luhn checksum).

Each runs as one Polars ``select`` over all the columns it concerns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

from meguri.data._profile import DatasetProfile, column_kind
from meguri.data._quality import QualityResult, rows_text, violations
from meguri.spec._quality import QualitySpec, Severity

__all__ = ["inferred_results"]

_PII_NAMES = [
    "email",
    "e_mail",
    "mail",
    "phone",
    "phone_number",
    "mobile",
    "telephone",
    "tel",
    "ssn",
    "social_security",
    "credit_card",
    "card_number",
    "cc_number",
    "passport",
    "iban",
    "first_name",
    "last_name",
    "surname",
    "full_name",
    "birth_date",
    "date_of_birth",
    "dob",
    "address",
    "street",
    "ip_address",
]
_EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
_PHONE = r"^(?:\+[0-9]|\(?[0-9])[0-9 ().-]*[0-9]$"
_DATE_LIKE = r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
_CARD = r"^(?:[0-9][ -]?){12,18}[0-9]$"


def inferred_results(
    data: pl.DataFrame,
    spec: QualitySpec,
    target: str | None,
    profile: DatasetProfile | None,
    previous_schema: Mapping[str, pl.DataType | str] | None,
    task: str | None,
) -> list[QualityResult]:
    settings = spec.inferred
    out: list[QualityResult] = []
    if previous_schema is not None:
        out += _or_passed(
            _type_drift(data.schema, previous_schema, settings.type_drift),
            "type_drift",
            settings.type_drift,
            "no column added, removed or retyped",
        )
    out += _or_passed(
        _constant(data, profile, settings.constant),
        "constant",
        settings.constant,
        "no constant column",
    )
    out += [_duplicates(data, spec.examples, settings.duplicate_rows)]
    if target is not None:
        out += _or_passed(
            _leakage(data, spec, target, task),
            "leakage",
            settings.leakage,
            f"no single column predicts {target!r} almost perfectly",
        )
    out += _or_passed(_pii(data, spec), "pii", settings.pii, "no PII-looking column")
    return out


def _found(
    check: str,
    columns: Sequence[str],
    severity: Severity,
    message: str,
    count: int = 0,
    examples: tuple[int, ...] = (),
) -> QualityResult:
    return QualityResult(
        check=check,
        name=f"{check}({', '.join(columns)})",
        columns=tuple(columns),
        severity=severity,
        passed=False,
        message=message,
        failing_rows=count,
        examples=examples,
        inferred=True,
    )


def _or_passed(
    found: list[QualityResult], check: str, severity: Severity, message: str
) -> list[QualityResult]:
    if found:
        return found
    return [QualityResult(check, check, (), severity, True, message, inferred=True)]


# -- type drift, constant columns, duplicates --------------------------------------------------


def _type_drift(
    schema: pl.Schema, previous: Mapping[str, pl.DataType | str], severity: Severity
) -> list[QualityResult]:
    out = []
    for name, before in previous.items():
        if name not in schema:
            out.append(
                _found(
                    "type_drift",
                    [name],
                    severity,
                    f"{name!r} ({before}) is gone; restore it in the source, or drop "
                    "it from the steps and checks that use it",
                )
            )
        elif str(schema[name]) != str(before):
            out.append(
                _found(
                    "type_drift",
                    [name],
                    severity,
                    f"{name!r} was {before} and is now {schema[name]}; fix the source "
                    "or pin the type in the source's schema",
                )
            )
    added = [name for name in schema if name not in previous]
    out += [
        _found(
            "type_drift",
            [name],
            "warning",
            f"{name!r} ({schema[name]}) is new; add it to the inputs or exclude it",
        )
        for name in added
    ]
    return out


def _constant(
    data: pl.DataFrame, profile: DatasetProfile | None, severity: Severity
) -> list[QualityResult]:
    names = [n for n, t in data.schema.items() if column_kind(t) != "other"]
    if profile is not None and {c.name for c in profile.columns} >= set(names):
        distinct = {c.name: c.distinct for c in profile.columns}
    else:
        exprs = [_present(n, data.schema[n]).drop_nulls().n_unique().alias(n) for n in names]
        distinct = data.lazy().select(exprs).collect().row(0, named=True) if exprs else {}
    return [
        _found(
            "constant",
            [n],
            severity,
            f"{n!r} has {distinct[n]} distinct value(s) in {data.height} rows: it carries "
            "no information; drop it (or check the source)",
        )
        for n in names
        if data.height > 0 and distinct[n] <= 1
    ]


def _present(name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(name).fill_nan(None) if dtype.is_float() else pl.col(name)


def _duplicates(data: pl.DataFrame, examples: int, severity: Severity) -> QualityResult:
    if data.width == 0:
        return QualityResult("duplicate_rows", "duplicate_rows", (), severity, True, "no columns")
    bad = ~pl.struct(data.columns).is_first_distinct()
    count, rows = violations(data, {"d": bad}, examples)["d"]
    if count == 0:
        return QualityResult(
            "duplicate_rows",
            "duplicate_rows",
            (),
            severity,
            True,
            "no duplicate rows",
            inferred=True,
        )
    return QualityResult(
        "duplicate_rows",
        "duplicate_rows",
        (),
        severity,
        False,
        f"{rows_text(count, rows)} repeat an earlier row in every column; drop the copies "
        "(they overweight those rows and leak between splits)",
        count,
        rows,
        inferred=True,
    )


# -- leakage -----------------------------------------------------------------------------------


def _task_of(data: pl.DataFrame, target: str, task: str | None) -> str:
    if task is not None:
        return task
    dtype, classes = data.schema[target], data.get_column(target).drop_nulls().n_unique()
    if column_kind(dtype) in ("string", "boolean") or (dtype.is_integer() and classes <= 20):
        return "binary_classification" if classes == 2 else "multiclass_classification"
    return "regression"


def _leakage(
    data: pl.DataFrame, spec: QualitySpec, target: str, task: str | None
) -> list[QualityResult]:
    rows = data.filter(pl.col(target).is_not_null())
    if rows.height < 2:
        return []
    kind = _task_of(rows, target, task)
    features = [n for n in rows.columns if n != target]
    scores: dict[str, tuple[str, float]] = {}
    if kind == "regression":
        scores |= _correlations(rows, target, features, spec.inferred.leakage_correlation)
    else:
        if kind == "binary_classification":
            scores |= _aucs(rows, target, features, spec.inferred.leakage_auc)
        scores |= _purities(rows, target, features, spec.inferred.leakage_purity)
    severity = spec.inferred.leakage
    return [
        _found(
            "leakage",
            [name],
            severity,
            f"{name!r} alone predicts {target!r} almost perfectly ({what} {value:.4f}); it "
            "may be derived from the target or known only after it: exclude it "
            "(constraints.excluded_columns) unless it is truly available at prediction time",
        )
        for name, (what, value) in scores.items()
    ]


def _numeric_features(data: pl.DataFrame, features: Sequence[str]) -> list[str]:
    return [n for n in features if column_kind(data.schema[n]) in ("numeric", "boolean")]


def _correlations(
    data: pl.DataFrame, target: str, features: Sequence[str], threshold: float
) -> dict[str, tuple[str, float]]:
    names = _numeric_features(data, features)
    y = _present(target, data.schema[target]).cast(pl.Float64)
    exprs = [pl.corr(_present(n, data.schema[n]).cast(pl.Float64), y).abs().alias(n) for n in names]
    row = data.lazy().select(exprs).collect().row(0, named=True) if exprs else {}
    return {n: ("|Pearson r|", r) for n, r in row.items() if r is not None and r > threshold}


def _aucs(
    data: pl.DataFrame, target: str, features: Sequence[str], threshold: float
) -> dict[str, tuple[str, float]]:
    positive = data.get_column(target).drop_nulls().unique().sort()[-1]
    y = pl.col(target) == positive
    exprs = [
        _auc_expr(_present(n, data.schema[n]).cast(pl.Float64), y).alias(n)
        for n in _numeric_features(data, features)
    ]
    row = data.lazy().select(exprs).collect().row(0, named=True) if exprs else {}
    out = {}
    for name, auc in row.items():
        score = None if auc is None else max(float(auc), 1 - float(auc))
        if score is not None and score > threshold:
            out[name] = ("ROC AUC", score)
    return out


def _auc_expr(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """Mann-Whitney ROC AUC of ``x`` for ``y`` over rows where ``x`` is present (ties count ½)."""
    present = x.is_not_null()
    positives = (y & present).sum().cast(pl.Float64)
    negatives = (~y & present).sum().cast(pl.Float64)
    rank_sum = x.rank("average").filter(y & present).sum()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _purities(
    data: pl.DataFrame, target: str, features: Sequence[str], threshold: float
) -> dict[str, tuple[str, float]]:
    classes = data.get_column(target).n_unique()
    names = [n for n in features if column_kind(data.schema[n]) != "other"]
    distinct = data.select(pl.col(n).drop_nulls().n_unique() for n in names).row(0, named=True)
    out = {}
    for name in (n for n in names if 1 < distinct[n] <= classes):
        pairs = data.filter(pl.col(name).is_not_null()).group_by(name, target).len()
        best = pairs.group_by(name).agg(pl.col("len").max())["len"].sum()
        purity = int(best) / max(int(pairs["len"].sum()), 1)
        if purity >= threshold:
            out[name] = ("share of rows mapped to one class", float(purity))
    return out


# -- PII ---------------------------------------------------------------------------------------


def _pii(data: pl.DataFrame, spec: QualitySpec) -> list[QualityResult]:
    settings = spec.inferred
    texts = [n for n, t in data.schema.items() if t == pl.String]
    shares: dict[tuple[str, str], float] = {}
    if texts and data.height:
        sample = data.select(texts).sample(min(data.height, settings.pii_sample_rows), seed=0)
        shares = _pattern_shares(sample, texts)
    flagged: dict[str, str] = {}
    for (name, kind), share in shares.items():
        if share >= settings.pii_share:
            flagged.setdefault(name, kind)
    checks = {n: _PATTERNS[k](pl.col(n).str.strip_chars()) for n, k in flagged.items()}
    counts = violations(data, checks, spec.examples)
    out = []
    for name in data.columns:
        by_name = _pii_name(name)
        if name in flagged:
            count, rows = counts[name]
            out.append(
                _found(
                    "pii",
                    [name],
                    settings.pii,
                    f"{name!r} looks like personal data: {rows_text(count, rows)} "
                    f"hold {flagged[name]}; {_PII_FIX}",
                    count,
                    rows,
                )
            )
        elif by_name:
            out.append(
                _found(
                    "pii",
                    [name],
                    settings.pii,
                    f"{name!r} is named like personal data ({by_name}); {_PII_FIX}",
                )
            )
    return out


_PII_FIX = (
    "exclude it from the inputs (constraints.excluded_columns), or drop, hash or mask it "
    "before the data is stored"
)


def _pii_name(name: str) -> str | None:
    joined = "_" + "_".join(t for t in re.split(r"[^a-z0-9]+", name.lower()) if t) + "_"
    return next((p for p in _PII_NAMES if f"_{p}_" in joined), None)


def _luhn(digits: pl.Expr) -> pl.Expr:
    e = pl.element()
    doubled = pl.when(e * 2 > 9).then(e * 2 - 9).otherwise(e * 2)
    weighted = pl.when(pl.int_range(pl.len()) % 2 == 1).then(doubled).otherwise(e)
    reversed_digits = digits.str.split("").list.eval(e.cast(pl.Int32).reverse())
    return reversed_digits.list.eval(weighted).list.sum() % 10 == 0


def _is_phone(x: pl.Expr) -> pl.Expr:
    digits = x.str.count_matches(r"[0-9]")
    return x.str.contains(_PHONE) & digits.is_between(9, 15) & ~x.str.contains(_DATE_LIKE)


def _is_card(x: pl.Expr) -> pl.Expr:
    return x.str.contains(_CARD) & _luhn(x.str.replace_all(r"[^0-9]", ""))


_PATTERNS = {
    "email addresses": lambda x: x.str.contains(_EMAIL),
    "card numbers": _is_card,
    "phone numbers": _is_phone,
}


def _pattern_shares(sample: pl.DataFrame, texts: Sequence[str]) -> dict[tuple[str, str], float]:
    exprs = [
        match(pl.col(n).str.strip_chars()).mean().alias(f"{n}\x1f{kind}")
        for n in texts
        for kind, match in _PATTERNS.items()
    ]
    if not exprs:
        return {}
    row = sample.lazy().select(exprs).collect().row(0, named=True)
    shares = {}
    for key, share in row.items():
        name, kind = key.split("\x1f")
        shares[(name, kind)] = 0.0 if share is None else float(share)
    return shares
