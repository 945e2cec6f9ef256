"""Loading meguri.yaml: every problem with its file, line and column, and what is allowed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meguri.errors import SpecError
from meguri.spec import SpecProblem, check_spec_text, find_spec_file, load_spec, parse_spec
from meguri.testing.specs import MINIMAL_SPEC

HEAD = MINIMAL_SPEC


def spec(tail: str = "") -> str:
    return HEAD + textwrap.dedent(tail)


def problems(text: str) -> list[str]:
    return [str(p) for p in check_spec_text(text)]


def test_valid_spec_has_no_problems() -> None:
    assert check_spec_text(spec()) == []
    assert parse_spec(spec()).requirements.functional.target == "churned"


def test_a_wrong_choice_names_line_column_and_choices() -> None:
    text = spec("""\
        success_criteria:
          - {id: auc, metric: roc_auc, measured_on: test, comparison: ">=", threshold: 0.9}
          - id: latency
            metric: latency_p95_ms
            measured_on: prod
            comparison: "<="
            threshold: 50
        """)
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value) == (
        "meguri.yaml:15:18: success_criteria[1].measured_on: 'prod' is not allowed; "
        "use one of test, validation, staging, production"
    )


def test_problem_fields() -> None:
    found = check_spec_text(spec("constraints: {allowed_algorithms: [lgbm]}\n"), "x/meguri.yaml")
    assert found == [
        SpecProblem(
            source="x/meguri.yaml",
            line=11,
            column=36,
            path="constraints.allowed_algorithms[0]",
            message="'lgbm' is not a known algorithm (did you mean 'lightgbm'?); use one of "
            "linear, random_forest, hist_gradient_boosting, lightgbm, xgboost, knn, mlp",
        )
    ]


def test_unknown_key_points_at_the_key_and_suggests() -> None:
    text = spec("""\
        success_criteria:
          - id: auc
            metric: roc_auc
            measured_on: test
            comparison: ">="
            treshold: 0.9
        """)
    assert problems(text) == [
        "meguri.yaml:12:5: success_criteria[0].threshold: is required but missing; add it",
        "meguri.yaml:16:5: success_criteria[0].treshold: is not a known key (did you mean "
        "'threshold'?); allowed here: id, metric, measured_on, comparison, threshold, description",
    ]


def test_missing_key_points_at_its_parent() -> None:
    text = HEAD.replace("    target: churned\n", "")
    assert problems(text) == [
        "meguri.yaml:8:3: requirements.functional.target: is required but missing; add it"
    ]


def test_several_problems_are_reported_together_sorted_by_line() -> None:
    text = spec("""\
        requirements_typo: 1
        resources:
          compute_budget: {cpu_cores: -1}
        """).replace("binary_classification", "binary")
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    lines = str(info.value).splitlines()
    assert lines[0] == "meguri.yaml has 3 problems:"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [
        "meguri.yaml:9:11",
        "meguri.yaml:11:1",
        "meguri.yaml:13:31",
    ]
    assert "'binary' is not allowed; use one of binary_classification," in lines[1]
    assert "input should be greater than 0, not -1" in lines[3]


def test_cross_field_problems_point_at_the_field() -> None:
    text = spec("""\
        success_criteria:
          - {id: auc, metric: roc_auc, measured_on: test, comparison: ">=", threshold: 0.9}
          - {id: auc, metric: roc_auc, measured_on: validation, comparison: ">=", threshold: 0.9}
        constraints:
          excluded_columns: [email, churned]
        """)
    assert problems(text) == [
        "meguri.yaml:10:13: requirements.functional.target: 'churned' is listed in "
        "constraints.excluded_columns; a target cannot be excluded: remove it there",
        "meguri.yaml:13:10: success_criteria[1].id: criterion id 'auc' appears more than once;"
        " criterion ids must be unique",
    ]


def test_yaml_syntax_errors_have_a_position() -> None:
    assert problems(spec("constraints: [oops\n")) == [
        "meguri.yaml:12:1: YAML syntax error: expected ',' or ']', but got '<stream end>' "
        "while parsing a flow sequence that starts at line 11, column 14; check the indentation "
        "here, and quote values that contain ': ' or ' #'"
    ]
    tabbed = problems("version: 1\nproject:\n\tname: x\n")
    assert tabbed[0].startswith("meguri.yaml:3:1: YAML syntax error: found character '\\t'")
    assert tabbed[0].endswith("YAML indents with spaces, not tabs")


def test_duplicate_keys_are_reported() -> None:
    text = spec("project: again\n")
    assert problems(text) == [
        "meguri.yaml:11:1: project: appears twice (first on line 2); YAML would keep only "
        "the last: remove one"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "meguri.yaml:1:1: the file is empty; run `meguri init --force`"),
        ("# only a comment\n", "meguri.yaml:1:1: the file is empty"),
        ("- a\n", "meguri.yaml:1:1: the spec must be a mapping of keys (version, project,"),
        (HEAD.replace("version: 1", "version: 2"), "version: 2 is not supported; this meguri"),
        (spec("success_criteria: {a: 1}\n"), "should be a list (one `- item` per line)"),
        (HEAD.replace("objective:", "objective: 3\nx:"), "objective: should be a mapping of keys"),
    ],
)
def test_shapes_that_are_not_a_spec(text: str, expected: str) -> None:
    assert problems(text)[0].startswith(expected) or expected in problems(text)[0]


def test_bad_dictionary_key_points_at_the_key() -> None:
    text = spec("""\
        deploy:
          environments:
            "my env": {workers: 1}
        """)
    assert problems(text) == [
        "meguri.yaml:13:5: deploy.environments.my env: 'my env' is not a valid name; use "
        "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 "
        "characters (e.g. breast-cancer)"
    ]


def test_load_spec_finds_the_file_upwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "meguri.yaml").write_text(spec(), encoding="utf-8")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_spec_file() == tmp_path / "meguri.yaml"
    assert load_spec().project == "churn"
    assert load_spec(tmp_path).project == "churn"
    assert load_spec(tmp_path / "meguri.yaml").project == "churn"


def test_load_spec_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist; run `meguri init`"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match=r"No meguri.yaml in .* run `meguri init`"):
        find_spec_file(tmp_path)
    bad = tmp_path / "meguri.yaml"
    bad.write_bytes(b"version: 1\nproject: \xff\n")
    with pytest.raises(SpecError, match="is not UTF-8 text"):
        load_spec(bad)
    bad.write_text(spec("monitor: {window: soon}\n"), encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{bad}:11:19: monitor.window: 'soon' is not a duration"):
        load_spec(bad)


def test_wrong_types_say_what_is_expected() -> None:
    text = spec("""\
        resources:
          compute_budget: {cpu_cores: 1.5}
          schedule:
            milestones:
              - {name: m, due: someday}
        pipeline: {cache: maybe}
        """).replace("project: churn", "project: 5")
    assert [p.split(": ", 1)[1] for p in problems(text)] == [
        "project: should be text (quote it if YAML reads it as something else), not 5",
        "resources.compute_budget.cpu_cores: should be a whole number, not 1.5",
        "resources.schedule.milestones[0].due: should be a date written YYYY-MM-DD, not 'someday'",
        "pipeline.cache: should be true or false, not 'maybe'",
    ]
