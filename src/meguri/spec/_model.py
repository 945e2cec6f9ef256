"""The project spec, ``meguri.yaml``, as pydantic models (requirements as code).

Every section forbids unknown keys, so a typo is an error that names the allowed keys. The
sections that later phases fill in (``data``, ``model``, ``pipeline``, ``deploy``, ``monitor``)
are *open*: they type the keys meguri reads today and keep any other key in ``model_extra``;
:meth:`ProjectSpec.warnings` lists those keys (with a suggestion for likely typos).

Checks that span several fields (unique criterion ids, a target that is not an excluded column,
...) raise :class:`SpecProblems`, which carries the location of each problem so that the loader
can point at the right line of the YAML.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from meguri.spec._deploy import DeployEnvironment as DeployEnvironment
from meguri.spec._deploy import DeploySpec as DeploySpec
from meguri.spec._monitor import MonitorSpec as MonitorSpec
from meguri.spec._names import check_duration
from meguri.spec._names import check_name as check_name
from meguri.spec._names import duration_seconds as duration_seconds
from meguri.spec._prepare import PrepareStep, SplitSpec
from meguri.spec._quality import QualitySpec

Loc = tuple[str | int, ...]

Task = Literal["binary_classification", "multiclass_classification", "regression"]
Stage = Literal["test", "validation", "staging", "production"]
Comparison = Literal[">=", ">", "<=", "<", "=="]
Explainability = Literal["none", "global", "local"]
Phase = Literal["requirements", "data", "model", "deploy", "monitor"]
SourceFormat = Literal["csv", "parquet", "jsonl", "json", "excel", "sql"]
Compute = Literal["local", "ray"]

TASKS: tuple[str, ...] = get_args(Task)
STAGES: tuple[str, ...] = get_args(Stage)
COMPARISONS: tuple[str, ...] = get_args(Comparison)

#: Algorithm names accepted in ``constraints.allowed_algorithms`` (the model zoo's names).
ALGORITHMS: tuple[str, ...] = (
    "linear",
    "random_forest",
    "hist_gradient_boosting",
    "lightgbm",
    "xgboost",
    "knn",
    "mlp",
)

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/@-]{0,199}")


class SpecProblems(ValueError):
    """Problems found across fields, each ``(loc, message)`` with ``loc`` relative to the model."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{dotted(loc)}: {msg}" for loc, msg in self.problems))


def dotted(loc: Iterable[str | int]) -> str:
    """``("success_criteria", 1, "metric")`` → ``success_criteria[1].metric``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _metric(value: str) -> str:
    if not _METRIC.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid metric name; use letters, digits and '_' (e.g. roc_auc)"
        )
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty; describe it in a sentence")
    return value.strip()


Slug = Annotated[str, AfterValidator(check_name)]
MetricName = Annotated[str, AfterValidator(_metric)]
Text = Annotated[str, AfterValidator(_text)]
Duration = Annotated[str, AfterValidator(check_duration)]


def duplicates(values: Iterable[str], loc: Loc, what: str) -> list[tuple[Loc, str]]:
    """A problem at each repeated value (from its second occurrence), ``loc + (index,)``."""
    seen: Counter[str] = Counter()
    problems: list[tuple[Loc, str]] = []
    for index, value in enumerate(values):
        seen[value] += 1
        if seen[value] == 2:
            problems.append(
                ((*loc, index), f"{what} {value!r} appears more than once; {what}s must be unique")
            )
    return problems


def _raise_if(problems: list[tuple[Loc, str]]) -> None:
    if problems:
        raise SpecProblems(problems)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """A section that later phases extend: keys it does not know yet are kept, and warned about."""

    model_config = ConfigDict(extra="allow", frozen=True)


# -- phase 1: the business requirements -------------------------------------------------------


class Objective(_Closed):
    problem: Text
    expected_outcome: Text
    kpi: Text


class SuccessCriterion(_Closed):
    """A measurable condition of success, checked where its evidence appears (``measured_on``)."""

    id: Slug
    metric: MetricName
    measured_on: Stage
    comparison: Comparison
    threshold: float = Field(allow_inf_nan=False)
    description: str | None = None

    def check(self, value: float) -> bool:
        """Whether ``value`` meets this criterion (NaN never does)."""
        from meguri.spec._criteria import compare

        return compare(value, self.comparison, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.comparison} {self.threshold:g} on {self.measured_on}"


class FunctionalRequirements(_Closed):
    task: Task
    target: Annotated[str, AfterValidator(_text)]
    inputs: list[str] | None = None
    """The input columns; ``None`` means every column but the target and the excluded ones."""

    @model_validator(mode="after")
    def _check(self) -> FunctionalRequirements:
        inputs = self.inputs or []
        problems = duplicates(inputs, ("inputs",), "input column")
        problems += [
            (("inputs", i), f"the target {self.target!r} cannot also be an input; remove it")
            for i, column in enumerate(inputs)
            if column == self.target
        ]
        _raise_if(problems)
        return self


class NonFunctionalRequirements(_Closed):
    latency_p95_ms: PositiveFloat | None = None
    throughput_rps: PositiveFloat | None = None
    max_model_size_mb: PositiveFloat | None = None
    training_time_budget_minutes: PositiveFloat | None = None
    explainability: Explainability = "none"


class Requirements(_Closed):
    functional: FunctionalRequirements
    non_functional: NonFunctionalRequirements = NonFunctionalRequirements()


class Constraints(_Closed):
    excluded_columns: list[str] = []
    """Columns that must never reach a model (PII, identifiers, leaks)."""
    allowed_algorithms: list[str] | None = None
    """Algorithm names the model search may use; ``None`` allows all of :data:`ALGORITHMS`."""

    @model_validator(mode="after")
    def _check(self) -> Constraints:
        problems = duplicates(self.excluded_columns, ("excluded_columns",), "excluded column")
        algorithms = self.allowed_algorithms or []
        problems += duplicates(algorithms, ("allowed_algorithms",), "algorithm")
        problems += [
            (("allowed_algorithms", i), _unknown(name, ALGORITHMS, "algorithm"))
            for i, name in enumerate(algorithms)
            if name not in ALGORITHMS
        ]
        if self.allowed_algorithms == []:
            problems.append((("allowed_algorithms",), "is empty; name at least one algorithm"))
        _raise_if(problems)
        return self


class TeamMember(_Closed):
    name: Text
    role: str | None = None
    skills: list[str] = []


class ComputeBudget(_Closed):
    cpu_cores: PositiveInt | None = None
    memory_gb: PositiveFloat | None = None
    gpus: NonNegativeInt = 0
    monthly_cost: NonNegativeFloat | None = None
    currency: str = "USD"


class Milestone(_Closed):
    name: Text
    due: date
    phase: Phase | None = None
    description: str | None = None


class Schedule(_Closed):
    start: date | None = None
    end: date | None = None
    milestones: list[Milestone] = []

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        problems = duplicates([m.name for m in self.milestones], ("milestones",), "milestone")
        if self.start and self.end and self.end < self.start:
            problems.append((("end",), f"{self.end} is before the start {self.start}"))
        for i, milestone in enumerate(self.milestones):
            if not _within(milestone.due, self.start, self.end):
                span = f"{self.start or '…'} to {self.end or '…'}"
                problems.append(
                    (("milestones", i, "due"), f"{milestone.due} is outside the schedule ({span})")
                )
        _raise_if(problems)
        return self


def _within(day: date, start: date | None, end: date | None) -> bool:
    return (start is None or day >= start) and (end is None or day <= end)


class Resources(_Closed):
    team: list[TeamMember] = []
    skills_needed: list[str] = []
    tools: list[str] = []
    compute_budget: ComputeBudget = ComputeBudget()
    schedule: Schedule = Schedule()

    @model_validator(mode="after")
    def _check(self) -> Resources:
        _raise_if(duplicates([m.name for m in self.team], ("team",), "team member"))
        return self

    def uncovered_skills(self) -> list[str]:
        """Skills in ``skills_needed`` that no team member lists (case-insensitive)."""
        have = {skill.casefold() for member in self.team for skill in member.skills}
        return [skill for skill in self.skills_needed if skill.casefold() not in have]


# -- the sections later phases fill in --------------------------------------------------------


class DataSource(_Closed):
    name: Slug
    uri: Text
    """A path, any fsspec URL (``s3://...``), a database URL, or ``bundled://NAME``."""
    format: SourceFormat | None = None
    """Read as; ``None`` infers it from the URI's suffix."""
    options: dict[str, Any] = {}
    """Read options: ``separator``, ``null_values``... for the reader; ``table`` or ``query``
    for a database; ``sheet`` for Excel; ``max_bytes`` (memory budget of one read)."""
    column_types: dict[str, Text] = Field(default={}, alias="schema")
    """``schema:`` in YAML: per-column type overrides, column -> type (``int``, ``float``,
    ``str``, ``bool``, ``date``, ``datetime``, ``category`` or a Polars type name)."""
    description: str | None = None


class DataSpec(_Open):
    sources: list[DataSource] = []
    quality: QualitySpec = QualitySpec()
    prepare: list[PrepareStep] = []
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        _raise_if(duplicates([s.name for s in self.sources], ("sources",), "source name"))
        return self


class SearchSpec(_Closed):
    trials: PositiveInt = 20
    timeout_minutes: float | None = Field(None, gt=0)
    """Wall-clock budget of the search; default: the non-functional training-time budget."""
    parallelism: PositiveInt = 1


CvMethod = Literal["kfold", "stratified", "group", "time"]
CV_METHODS: tuple[str, ...] = get_args(CvMethod)

#: Per-group metrics ``model.fairness.metrics`` may name (those with a per-slice form).
FairnessMetric = Literal[
    "accuracy", "log_loss", "brier", "roc_auc", "recall", "precision", "f1", "mae", "rmse", "mape"
]
FAIRNESS_METRICS: tuple[str, ...] = get_args(FairnessMetric)
#: Gap names a criterion ``fairness/<column>/<gap>`` may use, besides ``<metric>_difference``.
FAIRNESS_GAPS: tuple[str, ...] = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equal_opportunity_difference",
    "equalized_odds_difference",
    "accuracy_difference",
)


class CvSpec(_Closed):
    """Cross-validation of the training part: ``kfold`` (shuffled), ``stratified`` (class shares
    kept), ``group`` (each value of ``group`` in one fold: GroupKFold) or ``time`` (rows ordered
    by ``time``, each fold validated on later rows than it trains on: TimeSeriesSplit)."""

    method: CvMethod | None = None
    """``None``: stratified for classification, kfold for regression."""
    folds: int = Field(5, ge=2, le=100)
    group: str | None = None
    time: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CvSpec:
        problems: list[tuple[Loc, str]] = []
        for key in ("group", "time"):
            if self.method == key and not getattr(self, key):
                problems.append(((key,), f"method {key} needs the column: add {key}: COLUMN"))
            if getattr(self, key) and self.method != key:
                problems.append(((key,), f"is read only with method {key}; set it or drop {key}"))
        _raise_if(problems)
        return self

    def resolved_method(self, task: str) -> str:
        """The method used for ``task`` (by default stratified, or kfold for regression)."""
        return self.method or ("kfold" if task == "regression" else "stratified")


class FairnessSpec(_Closed):
    """Gaps between the groups of sensitive columns, measured on the test part."""

    sensitive: list[Text] = Field(min_length=1)
    """Raw columns whose values (or quantile bins, for many-valued numbers) form the groups."""
    metrics: list[FairnessMetric] = []
    """Task metrics per group (their max-min gap is ``<metric>_difference``); default: the
    primary metric when it has a per-group form."""
    min_rows: PositiveInt = 30
    """Groups with fewer test rows are reported but left out of the gaps (too noisy)."""
    bins: int = Field(5, ge=2, le=100)

    @model_validator(mode="after")
    def _check(self) -> FairnessSpec:
        problems = duplicates(self.sensitive, ("sensitive",), "sensitive column")
        problems += duplicates(self.metrics, ("metrics",), "metric")
        _raise_if(problems)
        return self


class ModelSpec(_Open):
    seed: int = 42
    cv_folds: int = Field(5, ge=2, le=100)
    """The older form of ``cv.folds`` (still read); set one of the two."""
    cv: CvSpec | None = None
    fairness: FairnessSpec | None = None
    metric: str | None = None
    """The metric that ranks candidates (on cross-validation); default: roc_auc for
    classification, rmse for regression. Lower is better for losses and errors."""
    params: dict[str, dict[str, Any]] = {}
    """Fixed hyperparameters per algorithm, e.g. ``{lightgbm: {n_estimators: 400}}``."""
    search: SearchSpec | None = None
    """Tune the leading candidate with Optuna after the defaults' cross-validation."""

    @model_validator(mode="before")
    @classmethod
    def _folds(cls, data: Any) -> Any:
        """``cv.folds`` and ``cv_folds`` are one setting: copy the newer into the older."""
        if not isinstance(data, dict) or not isinstance(data.get("cv"), dict):
            return data
        if "cv_folds" in data:
            raise SpecProblems(
                [(("cv_folds",), "is also set as model.cv.folds; keep only cv.folds")]
            )
        folds = data["cv"].get("folds", 5)
        return {**data, "cv_folds": folds} if isinstance(folds, int) else data

    @property
    def cross_validation(self) -> CvSpec:
        """The cross-validation settings, from ``cv`` or the older ``cv_folds``."""
        return self.cv or CvSpec(folds=self.cv_folds)


class PipelineSpec(_Open):
    compute: Compute = "local"
    cache: bool = True
    schedule: str | None = None
    """When to re-run the pipeline: a duration (``1d``) or a cron expression."""


_OPEN_SECTIONS = ("data", "model", "pipeline", "deploy", "monitor")


# -- the whole spec ---------------------------------------------------------------------------


class ProjectSpec(_Closed):
    """The whole of ``meguri.yaml``."""

    version: Literal[1]
    project: Slug
    objective: Objective
    success_criteria: list[SuccessCriterion] = []
    requirements: Requirements
    constraints: Constraints = Constraints()
    resources: Resources = Resources()
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    pipeline: PipelineSpec = PipelineSpec()
    deploy: DeploySpec = DeploySpec()
    monitor: MonitorSpec = MonitorSpec()

    @model_validator(mode="after")
    def _check(self) -> ProjectSpec:
        ids = [c.id for c in self.success_criteria]
        problems = duplicates(ids, ("success_criteria",), "criterion id")
        problems = [((*loc, "id"), msg) for loc, msg in problems]
        problems += self._excluded_column_problems()
        problems += self._model_column_problems()
        problems += self._fairness_criterion_problems()
        problems += self._alert_criterion_problems()
        _raise_if(problems)
        return self

    def _model_column_problems(self) -> list[tuple[Loc, str]]:
        """Columns the model section names must reach training: not the target, not excluded."""
        named: list[tuple[Loc, str]] = []
        if self.model.cv is not None:
            named += [
                (("model", "cv", key), column)
                for key in ("group", "time")
                if (column := getattr(self.model.cv, key))
            ]
        if self.model.fairness is not None:
            named += [
                (("model", "fairness", "sensitive", i), column)
                for i, column in enumerate(self.model.fairness.sensitive)
            ]
        return [(loc, msg) for loc, column in named if (msg := self._column_problem(column))]

    def _column_problem(self, column: str) -> str:
        if column == self.requirements.functional.target:
            return f"{column!r} is the target; name an input column"
        if column in self.constraints.excluded_columns:
            return (
                f"{column!r} is in constraints.excluded_columns, which the data phase drops "
                "before training; remove it there or name another column"
            )
        return ""

    def _fairness_criterion_problems(self) -> list[tuple[Loc, str]]:
        """``fairness/<column>/<gap>`` criteria: a declared column, a known gap, on test."""
        fairness = self.model.fairness
        declared = fairness.sensitive if fairness else []
        problems: list[tuple[Loc, str]] = []
        for i, criterion in enumerate(self.success_criteria):
            parts = criterion.metric.split("/")
            if parts[0] != "fairness":
                continue
            loc: Loc = ("success_criteria", i, "metric")
            if len(parts) != 3 or parts[1] not in declared:
                problems.append((loc, _fairness_name_problem(criterion.metric, declared)))
            elif parts[2] not in FAIRNESS_GAPS and not parts[2].endswith("_difference"):
                problems.append((loc, _unknown(parts[2], FAIRNESS_GAPS, "fairness gap")))
            if criterion.measured_on != "test":
                fix = "fairness gaps are measured on test; set measured_on: test"
                problems.append((("success_criteria", i, "measured_on"), fix))
        return problems

    def _alert_criterion_problems(self) -> list[tuple[Loc, str]]:
        """An alert on a criterion names one measured on production."""
        production = [c.id for c in self.criteria_on("production")]
        return [
            (
                ("monitor", "alerts", i, "criterion"),
                f"{alert.criterion!r} is not a success criterion measured on production "
                f"(those are: {production or 'none'}); name one or add it with "
                "measured_on: production",
            )
            for i, alert in enumerate(self.monitor.alerts)
            if alert.criterion is not None and alert.criterion not in production
        ]

    def _excluded_column_problems(self) -> list[tuple[Loc, str]]:
        excluded = set(self.constraints.excluded_columns)
        functional = self.requirements.functional
        where: Loc = ("requirements", "functional")
        listed = "is listed in constraints.excluded_columns"
        problems: list[tuple[Loc, str]] = [
            ((*where, "inputs", i), f"{column!r} {listed}; remove it from one of the two lists")
            for i, column in enumerate(functional.inputs or [])
            if column in excluded
        ]
        if functional.target in excluded:
            fix = "a target cannot be excluded: remove it there"
            problems.insert(0, ((*where, "target"), f"{functional.target!r} {listed}; {fix}"))
        return problems

    def criteria_on(self, stage: Stage) -> list[SuccessCriterion]:
        """The success criteria measured on ``stage`` (test, validation, staging, production)."""
        return [c for c in self.success_criteria if c.measured_on == stage]

    def criterion(self, criterion_id: str) -> SuccessCriterion:
        for criterion in self.success_criteria:
            if criterion.id == criterion_id:
                return criterion
        known = ", ".join(c.id for c in self.success_criteria) or "none"
        raise KeyError(f"No success criterion {criterion_id!r} in the spec (known: {known})")

    def warnings(self) -> list[str]:
        """Advice that does not make the spec invalid: unknown keys in open sections, gaps."""
        notes = [_extra_note(name, getattr(self, name)) for name in _OPEN_SECTIONS]
        out = [note for group in notes for note in group]
        if not self.success_criteria:
            out.append("success_criteria is empty: no gate can pass or fail; add criteria")
        out += [
            f"resources.skills_needed: no team member lists {skill!r}"
            for skill in self.resources.uncovered_skills()
        ]
        return out


def _extra_note(name: str, section: BaseModel) -> list[str]:
    known = tuple(type(section).model_fields)
    notes = []
    for key in section.model_extra or {}:
        hint = difflib.get_close_matches(key, known, n=1)
        tail = f"; did you mean {hint[0]!r}?" if hint else " by this version of meguri"
        notes.append(f"{name}.{key} is not read{tail}")
    return notes


def _fairness_name_problem(metric: str, declared: Sequence[str]) -> str:
    if not declared:
        return f"{metric!r} needs model.fairness.sensitive to declare the column"
    return (
        f"{metric!r} is not fairness/<column>/<gap> with a column of model.fairness.sensitive "
        f"({', '.join(declared)}), e.g. fairness/{declared[0]}/demographic_parity_ratio"
    )


def _unknown(value: str, allowed: Sequence[str], what: str) -> str:
    hint = difflib.get_close_matches(value, allowed, n=1)
    tail = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{value!r} is not a known {what}{tail}; use one of {', '.join(allowed)}"
