"""Candidates → cross-validation → the best model → evaluation → the spec's gates.

``train(spec)`` runs the data phase (``meguri.data.prepare``), then, as one parent run with a
child run per candidate of the zoo (limited by ``constraints.allowed_algorithms``):

* k-fold cross-validation on the training part (stratified for classification), refitting the
  preparation steps on each fold's training rows so that no fold sees statistics of its
  validation rows; per-fold metrics are logged with ``step=fold``, their mean and spread too;
* the candidate with the best cross-validated ``model.metric`` is refitted on the whole
  (prepared) training part and evaluated on the validation and test parts, with bootstrap
  confidence intervals on test, plots, slice metrics and the worst rows as artifacts;
* every success criterion measured on ``validation`` or ``test`` is checked and stored as a
  :class:`~meguri.store.metadata.CheckResult` linked to the spec version and the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from meguri.data import PreparedData, fit_transform, prepare
from meguri.errors import SpecError, TrainError
from meguri.spec import ProjectSpec
from meguri.store import Workspace, default_workspace
from meguri.store.metadata import CheckResult
from meguri.train._tracking import ActiveRun, start_run
from meguri.train._zoo import Candidate, candidates, model_size_bytes

if TYPE_CHECKING:
    from meguri.spec import PrepareStep
    from meguri.train._fairness import FairnessReport

Progress = Callable[[str], None]
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece", "mae", "rmse", "mape", "median_ae"})
Matrix = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Fold:
    x_train: Matrix
    y_train: Matrix
    x_valid: Matrix
    y_valid: Matrix


@dataclass(frozen=True)
class CandidateResult:
    name: str
    run_id: str
    params: dict[str, Any]
    cv: dict[str, tuple[float, float]]  # metric -> (mean, sd)
    fit_seconds: float
    tuned: bool = False


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    metric: str
    leaderboard: list[CandidateResult]
    best: CandidateResult
    model: Any
    metrics: dict[str, float]  # "validation/roc_auc", "test/roc_auc", ...
    intervals: dict[str, tuple[float, float]]  # test metric -> 95% bootstrap interval
    checks: list[CheckResult]
    prepared: PreparedData
    fairness: FairnessReport | None = None
    """``model.fairness``'s per-group rates and gaps on test (None when not declared)."""


def primary_metric(spec: ProjectSpec) -> str:
    if spec.model.metric:
        return spec.model.metric
    return "rmse" if spec.requirements.functional.task == "regression" else "roc_auc"


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def _matrix(frame: pl.DataFrame, target: str) -> tuple[Matrix, Matrix]:
    return frame.drop(target).to_numpy(), frame.get_column(target).to_numpy()


def folds(spec: ProjectSpec, prepared: PreparedData) -> list[Fold]:
    """Cross-validation folds of the training part, the preparation refitted per fold."""
    raw, target, seed = prepared.raw["train"], prepared.target, spec.model.seed
    steps: list[PrepareStep] = list(spec.data.prepare)
    out = []
    for train_idx, valid_idx in fold_indices(spec, raw, target):
        transform, train = fit_transform(raw[train_idx], steps, target=target, seed=seed)
        valid = transform.apply(raw[valid_idx]).collect()
        out.append(Fold(*_matrix(train, target), *_matrix(valid, target)))
    return out


def fold_indices(spec: ProjectSpec, raw: pl.DataFrame, target: str) -> list[tuple[Matrix, Matrix]]:
    """(training rows, validation rows) of each fold of ``raw`` by ``model.cv``: kfold,
    stratified, group (GroupKFold: no group in two folds) or time (TimeSeriesSplit over the
    rows ordered by the time column: each fold validates on later rows than it trains on)."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold, TimeSeriesSplit

    cv, seed = spec.model.cross_validation, spec.model.seed
    method = cv.resolved_method(spec.requirements.functional.task)
    y = raw.get_column(target).to_numpy()
    if method == "time":
        order = _time_order(raw, cv.time or "")
        return [(order[a], order[b]) for a, b in TimeSeriesSplit(cv.folds).split(order)]
    if method == "group":
        groups = _cv_column(raw, cv.group or "", "group").cast(pl.String).fill_null("null")
        splitter: Any = GroupKFold(cv.folds)
        return _split(splitter, method, y, groups.to_numpy())
    if method == "stratified" and spec.requirements.functional.task == "regression":
        raise SpecError("model.cv.method: stratified needs classes; use kfold for regression.")
    if method == "kfold":
        splitter = KFold(cv.folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedKFold(cv.folds, shuffle=True, random_state=seed)
    return _split(splitter, method, y, None)


def _split(splitter: Any, method: str, y: Matrix, groups: Matrix | None) -> list[Any]:
    try:
        return list(splitter.split(np.zeros(len(y)), y, groups))
    except ValueError as err:  # too few rows, groups or class members for the folds
        raise SpecError(f"model.cv: {method} cross-validation cannot split ({err}); "
                        "lower model.cv.folds or choose another method.") from err  # fmt: skip


def _cv_column(raw: pl.DataFrame, column: str, key: str) -> pl.Series:
    if column not in raw.columns:
        known = ", ".join(raw.columns)
        raise SpecError(
            f"model.cv.{key}: {column!r} is not a column of the training data ({known}); "
            "name one of those (an input column: excluded columns are dropped before training)."
        )
    return raw.get_column(column)


def _time_order(raw: pl.DataFrame, column: str) -> Matrix:
    values = _cv_column(raw, column, "time")
    if values.null_count():
        raise SpecError(
            f"model.cv.time: {column!r} has {values.null_count()} missing values; time-ordered "
            "folds need a time on every row (fill or filter them in data.prepare)."
        )
    return np.argsort(values.to_numpy(), kind="stable")


def _scores(task: str, model: Any, x: Matrix, y: Matrix) -> dict[str, float]:
    from meguri.train._evaluate import evaluate

    if task == "regression":
        return evaluate(task, y, model.predict(x))
    return evaluate(task, y, y_proba=model.predict_proba(x), labels=list(model.classes_))


def _cross_validate(
    candidate: Candidate, params: dict[str, Any], cv: list[Fold], seed: int, run: ActiveRun
) -> dict[str, tuple[float, float]]:
    per_fold = []
    for step, fold in enumerate(cv):
        model = candidate.build(params, seed).fit(fold.x_train, fold.y_train)
        scores = _scores(candidate.task, model, fold.x_valid, fold.y_valid)
        run.log_metrics({f"cv/{k}": v for k, v in scores.items()}, step=step)
        per_fold.append(scores)
    summary = {}
    for key in per_fold[0]:
        values = np.array([s[key] for s in per_fold])
        summary[key] = (float(values.mean()), float(values.std(ddof=1)))
        run.log_metrics({f"cv/{key}_mean": summary[key][0], f"cv/{key}_std": summary[key][1]})
    return summary


def _candidate_run(
    candidate: Candidate, spec: ProjectSpec, cv: list[Fold], parent: ActiveRun
) -> CandidateResult:
    params = candidate.params(spec.model.params.get(candidate.name))
    with start_run(
        candidate.name,
        experiment=parent.experiment_name,
        workspace=parent.workspace,
        parent=parent,
        params={"algorithm": candidate.name, **params},
        tags={"role": "candidate"},
    ) as run:
        started = time.perf_counter()
        summary = _cross_validate(candidate, params, cv, spec.model.seed, run)
        seconds = time.perf_counter() - started
    return CandidateResult(candidate.name, run.id, params, summary, seconds)


def cv_objective(
    candidate: Candidate, cv: list[Fold], metric: str, seed: int, params: dict[str, Any], trial: Any
) -> float:
    """The cross-validated ``metric`` of ``candidate`` with ``params`` (a tuning objective:
    module-level, so it pickles to worker processes); reports each fold for pruning."""
    values = []
    for step, fold in enumerate(cv):
        model = candidate.build(candidate.params(params), seed).fit(fold.x_train, fold.y_train)
        values.append(_scores(candidate.task, model, fold.x_valid, fold.y_valid)[metric])
        trial.report(float(np.mean(values)), step)
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned()
    return float(np.mean(values))


def _search(
    spec: ProjectSpec, best: CandidateResult, cv: list[Fold], metric: str, run: ActiveRun
) -> CandidateResult | None:
    """Tune ``best``'s hyperparameters; the tuned result if it beats the defaults' CV."""
    from functools import partial

    from meguri.train._tune import tune

    search = spec.model.search
    assert search is not None
    candidate = candidates(spec.requirements.functional.task, [best.name])[0]
    budget = search.timeout_minutes or spec.requirements.non_functional.training_time_budget_minutes
    result = tune(
        partial(cv_objective, candidate, cv, metric, spec.model.seed),
        candidate.space,
        study_name=f"{run.id}-{best.name}",
        workspace=run.workspace,
        n_trials=search.trials,
        timeout=None if budget is None else budget * 60,
        parallelism=search.parallelism,
        direction="minimize" if metric in LOWER_IS_BETTER else "maximize",
        seed=spec.model.seed,
        parent_run=run,
        metric=metric,
    )
    found = result.best
    if found is None or found.value is None or not _better(metric, found.value, best.cv[metric][0]):
        return None
    run.log_params({f"tuned.{k}": v for k, v in found.params.items()})
    params = candidate.params(found.params)
    score = {metric: (found.value, float("nan"))}
    return CandidateResult(
        best.name, found.run_id or best.run_id, params, score, found.duration_s or 0.0, tuned=True
    )


def leaderboard(results: list[CandidateResult], metric: str) -> list[CandidateResult]:
    """Best first by the cross-validated ``metric``."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    return sorted(results, key=lambda r: sign * r.cv[metric][0])


def _evaluate_best(
    best: CandidateResult, spec: ProjectSpec, prepared: PreparedData, run: ActiveRun, model: Any
) -> tuple[Any, dict[str, float], dict[str, tuple[float, float]], FairnessReport | None]:
    from meguri.train._metrics_bootstrap import bootstrap_ci
    from meguri.train._plots import figures

    task, ws = spec.requirements.functional.task, run.workspace
    if model is None:
        x_train, y_train = _matrix(prepared.frame("train", workspace=ws), prepared.target)
        model = _fit_final(best, spec, x_train, y_train)
    metrics: dict[str, float] = {}
    for stage in ("validation", "test"):
        x, y = _matrix(prepared.frame(stage, workspace=ws), prepared.target)
        metrics |= {f"{stage}/{k}": v for k, v in _scores(task, model, x, y).items()}
    run.log_metrics(metrics)
    pred = model.predict(x)
    proba = None if task == "regression" else model.predict_proba(x)
    labels = None if task == "regression" else list(model.classes_)
    intervals = bootstrap_ci(task, y, pred, proba, n=1000, seed=spec.model.seed, labels=labels)
    run.log_dict({k: list(v) for k, v in intervals.items()}, "evaluation/test_intervals.json")
    names = [c for c in prepared.parts["train"].schema if c != prepared.target]
    for name, figure in figures(
        task,
        y,
        pred,
        proba,
        estimator=model,
        X=x,
        feature_names=names,
        labels=labels,
        seed=spec.model.seed,
    ).items():
        run.log_figure(figure, f"plots/{name}")
    run.log_metric("model_size_bytes", model_size_bytes(model))
    _log_error_analysis(task, prepared, y, pred, proba, labels, run)
    fairness = _log_fairness(spec, prepared, (y, pred, proba, labels), run)
    if fairness is not None:
        metrics |= {f"test/{k}": v for k, v in fairness.metrics().items()}
    return model, metrics, intervals, fairness


def _log_error_analysis(
    task: str,
    prepared: PreparedData,
    y: Matrix,
    pred: Matrix,
    proba: Matrix | None,
    labels: list[Any] | None,
    run: ActiveRun,
) -> None:
    """Slices of the test part (on its raw, readable columns) and its worst rows, as JSON."""
    from meguri.train._slices import slice_metrics, worst_rows

    raw = prepared.raw.get("test")
    if raw is None:
        return
    readable = raw.drop(prepared.target)
    slices = slice_metrics(readable, y, pred, proba, task=task, labels=labels)
    run.log_dict({"slices": slices.to_dicts()}, "evaluation/test_slices.json")
    worst = worst_rows(readable, y, pred, proba, task=task, labels=labels)
    run.log_dict({"rows": worst.to_dicts()}, "evaluation/test_worst_rows.json")


def _log_fairness(
    spec: ProjectSpec,
    prepared: PreparedData,
    predicted: tuple[Matrix, Matrix, Matrix | None, list[Any] | None],
    run: ActiveRun,
) -> FairnessReport | None:
    """``model.fairness``: per-group rates and gaps on the test part's raw columns, logged as
    metrics ``test/fairness/<column>/<gap>`` and the artifact evaluation/test_fairness.json."""
    from meguri.spec._model import FAIRNESS_METRICS
    from meguri.train._fairness import fairness_report

    settings, raw = spec.model.fairness, prepared.raw.get("test")
    if settings is None or raw is None:
        return None
    missing = [c for c in settings.sensitive if c not in raw.columns]
    if missing:
        known = ", ".join(c for c in raw.columns if c != prepared.target)
        raise SpecError(
            f"model.fairness.sensitive: {missing[0]!r} is not a column of the training data "
            f"({known}); name one of those."
        )
    metric = primary_metric(spec)
    chosen: list[str] = list(settings.metrics)
    chosen = chosen or ([metric] if metric in FAIRNESS_METRICS else [])
    y, pred, proba, labels = predicted
    report = fairness_report(
        raw.drop(prepared.target), y, pred, proba,
        task=spec.requirements.functional.task, sensitive=settings.sensitive, metrics=chosen,
        min_rows=settings.min_rows, bins=settings.bins, labels=labels,
    )  # fmt: skip
    run.log_metrics({f"test/{k}": v for k, v in report.metrics().items()})
    run.log_dict(report.to_dict(), "evaluation/test_fairness.json")
    return report


def _fit_final(best: CandidateResult, spec: ProjectSpec, x: Matrix, y: Matrix) -> Any:
    candidate = candidates(spec.requirements.functional.task, [best.name])[0]
    return candidate.build(best.params, spec.model.seed).fit(x, y)


def _within_size(
    board: list[CandidateResult], spec: ProjectSpec, prepared: PreparedData, run: ActiveRun
) -> tuple[CandidateResult, Any]:
    """The best candidate whose model, fitted on the training part, fits
    ``requirements.non_functional.max_model_size_mb``; a TrainError if none does."""
    limit = spec.requirements.non_functional.max_model_size_mb
    if limit is None:
        return board[0], None
    x, y = _matrix(prepared.frame("train", workspace=run.workspace), prepared.target)
    sizes = {}
    for item in board:
        model = _fit_final(item, spec, x, y)
        sizes[item.name] = size = model_size_bytes(model)
        if size <= limit * 1024 * 1024:
            return item, model
        run.set_tag(f"too_large.{item.name}", f"{size / 2**20:.2f} MiB")
    found = ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in sizes.items())
    raise TrainError(
        f"requirements.non_functional.max_model_size_mb is {limit:g} and every candidate's model "
        f"is larger ({found}); raise the limit, or allow smaller algorithms or settings "
        "(fewer trees, model.params)."
    )


def gate(
    spec: ProjectSpec,
    metrics: Mapping[str, float],
    *,
    workspace: Workspace,
    spec_version_id: str | None,
    subject_kind: str,
    subject_id: str,
    evidence: Mapping[str, Any] | None = None,
) -> list[CheckResult]:
    """Check every criterion measured on validation/test against ``metrics``; store them."""
    from meguri.spec import evaluate as check

    results = []
    for criterion in spec.success_criteria:
        if criterion.measured_on not in ("validation", "test"):
            continue
        outcome = check(criterion, metrics.get(f"{criterion.measured_on}/{criterion.metric}"))
        results.append(
            CheckResult(
                id="",
                project_id=workspace.project.id,
                spec_version_id=spec_version_id,
                criterion_id=criterion.id,
                stage=criterion.measured_on,
                metric=criterion.metric,
                comparison=criterion.comparison,
                threshold=criterion.threshold,
                value=outcome.value,
                passed=outcome.passed,
                subject_kind=subject_kind,
                subject_id=subject_id,
                created_at=0.0,
                created_by=workspace.user,
                evidence={"message": outcome.message, **dict(evidence or {})},
            )
        )
    return workspace.metadata.checks.record(results)


def train(
    spec: ProjectSpec,
    *,
    workspace: Workspace | None = None,
    spec_version_id: str | None = None,
    prepared: PreparedData | None = None,
    experiment: str = "train",
    progress: Progress | None = None,
    tags: Mapping[str, str] | None = None,
) -> TrainResult:
    """Run the model phase of ``spec`` (see the module docstring) and return the leaderboard;
    ``tags`` go on the parent run (e.g. ``from_run`` for a re-run)."""
    ws = workspace or default_workspace()
    say = progress or (lambda _message: None)
    data = prepared or prepare(spec, workspace=ws, progress=say)
    task, metric = spec.requirements.functional.task, primary_metric(spec)
    zoo = candidates(task, spec.constraints.allowed_algorithms)
    cv_spec = spec.model.cross_validation
    cv_method = cv_spec.resolved_method(task)
    say(f"cross-validating {len(zoo)} candidates ({cv_spec.folds} {cv_method} folds)")
    cv = folds(spec, data)
    inputs = {"dataset_version": [v.id for v in data.parts.values()]}
    with start_run(
        "train",
        experiment=experiment,
        workspace=ws,
        spec_version=spec_version_id,
        inputs=inputs,
        params={
            "metric": metric,
            "cv_folds": cv_spec.folds,
            "cv_method": cv_method,
            "transform": f"sha256:{data.transform_digest}",
        },
        tags=tags,
    ) as run:
        results = _cross_validate_all(zoo, spec, cv, run, say)
        board = leaderboard(results, _check_metric(metric, results))
        if spec.model.search is not None:
            say(f"tuning {board[0].name} ({spec.model.search.trials} trials)")
            tuned = _search(spec, board[0], cv, metric, run)
            board = board if tuned is None else [tuned, *board]
        best, fitted = _within_size(board, spec, data, run)
        run.set_tags({"best_algorithm": best.name, "best_run": best.run_id})
        say(f"evaluating {best.name} on validation and test")
        model, metrics, intervals, fairness = _evaluate_best(best, spec, data, run, fitted)
        checks = gate(
            spec,
            metrics,
            workspace=ws,
            spec_version_id=spec_version_id,
            subject_kind="run",
            subject_id=run.id,
            evidence={"algorithm": best.name, "test_intervals": intervals},
        )
        run.set_tags({"gates": "pass" if all(c.passed for c in checks) else "fail"})
    return TrainResult(
        run.id, metric, board, best, model, metrics, intervals, checks, data, fairness
    )


def _cross_validate_all(
    zoo: list[Candidate], spec: ProjectSpec, cv: list[Fold], run: ActiveRun, say: Progress
) -> list[CandidateResult]:
    """Every candidate, until ``training_time_budget_minutes`` runs out (the first always
    runs; the ones left are named in the run's tag ``skipped_by_budget``)."""
    budget = spec.requirements.non_functional.training_time_budget_minutes
    deadline = None if budget is None else time.monotonic() + budget * 60
    results: list[CandidateResult] = []
    for i, candidate in enumerate(zoo):
        if results and deadline is not None and time.monotonic() >= deadline:
            skipped = [c.name for c in zoo[i:]]
            run.set_tag("skipped_by_budget", ", ".join(skipped))
            say(f"training-time budget spent: skipping {', '.join(skipped)}")
            break
        say(f"cross-validating {candidate.name}")
        results.append(_candidate_run(candidate, spec, cv, run))
    return results


def _check_metric(metric: str, results: list[CandidateResult]) -> str:
    if results and metric not in results[0].cv:
        known = ", ".join(sorted(results[0].cv))
        raise SpecError(
            f"model.metric: {metric!r} is not measured for this task; use one of {known}."
        )
    return metric
