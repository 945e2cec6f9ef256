"""The spec's ``data.prepare`` steps and ``data.split``: shapes, defaults and errors."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from meguri.errors import SpecError
from meguri.spec import (
    PREPARE_KINDS,
    Impute,
    PrepareStep,
    SplitSpec,
    check_spec_text,
    load_yaml,
    parse_spec,
)
from meguri.testing.specs import MINIMAL_SPEC

HEAD = MINIMAL_SPEC


def spec(tail: str) -> str:
    return HEAD + textwrap.dedent(tail)


def test_steps_read_from_yaml_in_order() -> None:
    parsed = parse_spec(
        spec("""\
        data:
          prepare:
            - impute: {columns: [age], strategy: mean, indicator: true}
            - one_hot: {columns: [city], max_categories: 5, unseen: other}
            - expression: {name: per_person, expr: "income / household"}
            - select: {method: importance, k: 3}
          split: {method: stratified, by: churned, train: 0.8, validation: 0.1, test: 0.1}
        """)
    )
    steps = parsed.data.prepare
    assert [s.kind for s in steps] == ["impute", "one_hot", "expression", "select"]
    assert steps[0].config == Impute(columns=["age"], strategy="mean", indicator=True)
    assert steps[3].to_dict() == {
        "select": {
            "method": "importance",
            "columns": None,
            "threshold": None,
            "k": 3,
            "max_rows": 20_000,
        }
    }
    assert parsed.data.split.method == "stratified"
    assert parsed.data.split.fractions == {"train": 0.8, "validation": 0.1, "test": 0.1}


def test_defaults_are_empty_prepare_and_a_random_split() -> None:
    parsed = parse_spec(HEAD)
    assert parsed.data.prepare == []
    assert parsed.data.split == SplitSpec()
    assert parsed.data.split.method == "random"


def test_a_misspelt_kind_names_the_line_and_suggests() -> None:
    text = spec("""\
    data:
      prepare:
        - imput: {columns: [age]}
    """)
    [problem] = [str(p) for p in check_spec_text(text)]
    assert problem.startswith("meguri.yaml:13:7: data.prepare[0].imput")
    assert "did you mean 'impute'" in problem


def test_a_bad_setting_is_located() -> None:
    text = spec("""\
    data:
      prepare:
        - scale: {method: zscore}
    """)
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert "data.prepare[0].scale.method" in str(info.value)
    assert "standard" in str(info.value)


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({}, "exactly one kind"),
        ({"impute": {}, "scale": {}}, "found impute, scale"),
        ({"impute": {"strategy": "constant"}}, "needs a value"),
        ({"impute": {"strategy": "mean", "value": 0}}, "only read with strategy constant"),
        ({"impute": {"columns": ["a", "a"]}}, "more than once"),
        ({"impute": {"columns": []}}, "at least 1"),
        ({"clip": {"method": "quantile", "lower": 0.9, "upper": 0.1}}, "must be below"),
        ({"select": {"method": "mutual_info"}}, "needs k"),
        ({"select": {"method": "variance", "k": 3}}, "k is not read"),
        ({"one_hot": {"max_categories": 1}}, "greater than or equal to 2"),
        ({"target_encode": {"folds": 1}}, "greater than or equal to 2"),
    ],
)
def test_invalid_steps(step: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        PrepareStep.model_validate(step)


def test_every_kind_has_a_model_and_round_trips() -> None:
    samples = {
        "expression": {"name": "r", "expr": "a / b"},
        "ratio": {"name": "r", "numerator": "a", "denominator": "b"},
        "filter": {"where": "a > 0"},
        "sql": {"query": "SELECT * FROM data"},
        "sql_lookup": {"query": "SELECT k, avg(x) AS m FROM data GROUP BY k", "on": ["k"]},
        "select": {"method": "variance"},
        "drop": {"columns": ["id"]},
    }
    for kind in PREPARE_KINDS:
        step = PrepareStep.model_validate({kind: samples.get(kind, {})})
        assert step.kind == kind
        assert PrepareStep.model_validate(step.to_dict()) == step


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"train": 0.5, "validation": 0.2, "test": 0.2}, "must sum to 1"),
        ({"method": "group"}, "needs `by`, the group id column"),
        ({"method": "time"}, "needs `by`, the timestamp column"),
        ({"train": 0.0, "validation": 0.5, "test": 0.5}, "greater than 0"),
        ({"method": "kfold"}, "random"),
    ],
)
def test_invalid_splits(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        SplitSpec.model_validate(fields)


def test_a_bare_on_key_reads_as_the_word_not_a_boolean() -> None:
    """YAML 1.1 reads ``on``/``yes``/``off`` as booleans; the spec reads them as YAML 1.2 does,
    so ``sql_lookup``'s ``on:`` needs no quotes."""
    parsed = parse_spec(
        spec("""\
        data:
          prepare:
            - sql_lookup: {query: "SELECT k, avg(x) AS m FROM data GROUP BY k", on: [k]}
        """)
    )
    step = parsed.data.prepare[0]
    assert step.kind == "sql_lookup"
    assert step.to_dict()["sql_lookup"]["on"] == ["k"]
    assert load_yaml("a: yes\nb: on\nc: true\nd: False") == {
        "a": "yes",
        "b": "on",
        "c": True,
        "d": False,
    }
