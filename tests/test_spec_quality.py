"""The spec's data.quality section: models, defaults and line-numbered errors."""

from __future__ import annotations

import textwrap
from datetime import date

import pytest
from pydantic import ValidationError

from meguri.errors import SpecError
from meguri.spec import (
    FreshnessCheck,
    QualitySpec,
    RangeCheck,
    SqlCheck,
    UniqueCheck,
    check_spec_text,
    parse_spec,
)
from meguri.testing.specs import MINIMAL_SPEC

HEAD = (
    MINIMAL_SPEC
    + """\
data:
  quality:
"""
)


def spec(tail: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(tail), "    ")


def test_every_check_kind_parses_from_yaml() -> None:
    text = spec("""\
        checks:
          - {check: not_null, column: id}
          - {check: range, column: age, min: 0, max: 120, severity: warning}
          - {check: range, column: signup, min: 2020-01-01}
          - {check: allowed_values, column: plan, values: [basic, pro, 3]}
          - {check: unique, columns: [id, day], name: one-per-day}
          - {check: regex, column: zip, pattern: '[0-9]{3}-[0-9]{4}'}
          - {check: row_count, min: 100}
          - {check: freshness, column: updated, max_age: 7d}
          - {check: sql, query: SELECT _row FROM data WHERE refund > price}
        infer: false
        inferred: {leakage_auc: 0.995, pii: error}
        examples: 3
        """)
    quality = parse_spec(text).data.quality
    checks = quality.checks
    assert [c.check for c in checks] == [
        "not_null", "range", "range", "allowed_values", "unique", "regex", "row_count",
        "freshness", "sql",
    ]  # fmt: skip
    assert isinstance(checks[1], RangeCheck) and checks[1].severity == "warning"
    assert isinstance(checks[2], RangeCheck) and checks[2].min == date(2020, 1, 1)
    assert isinstance(checks[4], UniqueCheck) and checks[4].label() == "one-per-day"
    assert checks[0].label() == "not_null(id)" and checks[0].severity == "error"
    assert isinstance(checks[7], FreshnessCheck) and isinstance(checks[8], SqlCheck)
    assert (quality.infer, quality.inferred.leakage_auc, quality.examples) == (False, 0.995, 3)


def test_defaults_infer_with_no_checks() -> None:
    quality = parse_spec(HEAD.replace("  quality:\n", "  sources: []\n")).data.quality
    assert quality == QualitySpec()
    assert quality.infer and quality.checks == [] and quality.inferred.leakage == "error"


def test_unknown_check_kind_points_at_its_line() -> None:
    text = spec("""\
        checks:
          - {check: not_null, column: id}
          - {check: not_nul, column: id}
        """)
    found = [str(p) for p in check_spec_text(text)]
    assert len(found) == 1
    assert found[0].startswith("meguri.yaml:15:9: data.quality.checks[1]: names no known check")
    assert "'not_nul'" in found[0]


def test_unknown_key_in_a_check_names_the_allowed_keys() -> None:
    text = spec("""\
        checks:
          - check: range
            column: age
            minimum: 0
        """)
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    # The locator skips the union tag ("range") that pydantic puts in the error's location.
    assert message.startswith("meguri.yaml:16:"), message
    assert "minimum: is not a known key (did you mean 'min'?)" in message
    assert "allowed here: name, severity, column, check, min, max" in message


@pytest.mark.parametrize(
    ("check", "line", "expected"),
    [
        ("{check: range, column: age}", 14, "give min, max or both"),
        ("{check: range, column: age, min: 5, max: 1}", 14, "swap them"),
        ("{check: row_count, min: 9, max: 1}", 14, "swap them"),
        ("{check: freshness, column: t, max_age: soon}", 14, "is not an age"),
        ("{check: regex, column: t, pattern: '(['}", 14, "not a valid regular expression"),
        ("{check: unique, columns: []}", 14, "at least 1"),
        ("{check: allowed_values, column: t, values: []}", 14, "at least 1"),
        ("{check: not_null, column: a, severity: fatal}", 14, "use one of error, warning"),
    ],
)
def test_bad_checks_have_line_numbered_errors(check: str, line: int, expected: str) -> None:
    text = spec(f"checks:\n  - {check}\n")
    found = [str(p) for p in check_spec_text(text)]
    assert len(found) == 1, found
    assert found[0].startswith(f"meguri.yaml:{line}:"), found[0]
    assert expected in found[0]


def test_models_are_strict() -> None:
    with pytest.raises(ValidationError):
        QualitySpec.model_validate({"checks": [{"check": "not_null"}]})
    with pytest.raises(ValidationError):
        QualitySpec.model_validate({"inferred": {"leakage_auc": 0.3}})
