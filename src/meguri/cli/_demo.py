"""``meguri demo``: one turn of the phases built so far, on a real bundled dataset.

Spec → spec version → data phase (ingest, profile + HTML report, quality checks, split,
preparation fitted on the training rows; all recorded with lineage) → a logistic-regression
baseline trained on the prepared training part as a tracked run (5-fold CV on train, metrics on
the validation and test parts, ROC figure) → the spec's test/validation criteria → a summary.
Metrics measured on a stage are logged as ``<stage>/<metric>`` (``test/roc_auc``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np

    from meguri.data import PreparedData
    from meguri.spec import CriterionOutcome, ProjectSpec
    from meguri.store import Workspace
    from meguri.train import ActiveRun

console = Console(width=None if sys.stdout.isatty() else 120)
FOLDS = 5
METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "recall", "precision", "log_loss")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@dataclass
class Part:
    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where to create the demo project.")] = Path(
        "meguri-demo"
    ),
) -> None:
    """Create an example project from a bundled real dataset and take it through the phases."""
    from meguri.store import open_workspace

    folder.mkdir(parents=True, exist_ok=True)
    spec_text = _ensure_spec(folder)
    ws = open_workspace(folder)
    try:
        spec, spec_version_id = _save_spec(ws, spec_text)
        prepared = _prepare_data(ws, spec)
        with console.status("training the baseline (5-fold CV on train)…"):
            run_id = _train(ws, spec, spec_version_id, prepared)
        _summary(ws, spec, spec_version_id, prepared, run_id)
    finally:
        ws.close()


def _ensure_spec(folder: Path) -> str:
    from meguri.spec import SPEC_FILE, render_example_spec

    path = folder / SPEC_FILE
    if not path.exists():
        path.write_text(render_example_spec("breast-cancer-demo"), encoding="utf-8")
        console.print(f"wrote the example spec [bold]{path}[/]")
    return path.read_text(encoding="utf-8")


def _save_spec(ws: Workspace, text: str) -> tuple[ProjectSpec, str]:
    from meguri.spec import parse_spec, save_spec_version

    spec = parse_spec(text)
    version, created = save_spec_version(
        ws.metadata, ws.project.id, text, created_by=ws.user, message="meguri demo"
    )
    console.print(f"spec version [bold]{version.id}[/] ({'new' if created else 'unchanged'})")
    return spec, version.id


def _prepare_data(ws: Workspace, spec: ProjectSpec) -> PreparedData:
    from meguri.cli._data_phase import print_prepared
    from meguri.data import prepare, render_profile_html

    with console.status("data phase…") as status:
        prepared = prepare(spec, workspace=ws, progress=lambda m: status.update(f"{m}…"))
    print_prepared(prepared)
    report = ws.root / "reports" / f"{prepared.source.name}-profile.html"
    report.parent.mkdir(exist_ok=True)
    html = render_profile_html(prepared.profile, prepared.source.ref, quality=prepared.quality)
    report.write_text(html, encoding="utf-8")
    console.print(f"profile and quality report: [bold]{report}[/]")
    return prepared


def _part(ws: Workspace, prepared: PreparedData, name: str) -> Part:
    frame = prepared.frame(name, workspace=ws)
    features = frame.drop(prepared.target)
    return Part(features.to_numpy(), frame.get_column(prepared.target).to_numpy())


def _scores(y: np.ndarray[Any, Any], proba: np.ndarray[Any, Any]) -> dict[str, float]:
    from sklearn import metrics as m

    pred = (proba >= 0.5).astype(int)
    return {
        "roc_auc": float(m.roc_auc_score(y, proba)),
        "accuracy": float(m.accuracy_score(y, pred)),
        "balanced_accuracy": float(m.balanced_accuracy_score(y, pred)),
        "recall": float(m.recall_score(y, pred)),
        "precision": float(m.precision_score(y, pred)),
        "log_loss": float(m.log_loss(y, proba)),
    }


def _model() -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000)


def _train(ws: Workspace, spec: ProjectSpec, spec_version_id: str, prepared: PreparedData) -> str:
    import meguri

    seed = spec.data.split.seed
    params = {
        "model": "logistic_regression",
        "C": 1.0,
        "cv_folds": FOLDS,
        "seed": seed,
        "transform": f"sha256:{prepared.transform_digest}",
    }
    inputs = {"dataset_version": [v.id for v in prepared.parts.values()]}
    with meguri.start_run(
        "logreg-baseline",
        experiment="demo",
        workspace=ws,
        spec_version=spec_version_id,
        params=params,
        inputs=inputs,
        tags={"task": spec.requirements.functional.task},
    ) as run:
        train = _part(ws, prepared, "train")
        _cross_validate(run, train, seed)
        model = _model().fit(train.x, train.y)
        for stage in ("validation", "test"):
            part = _part(ws, prepared, stage)
            proba = model.predict_proba(part.x)[:, 1]
            run.log_metrics({f"{stage}/{k}": v for k, v in _scores(part.y, proba).items()})
        run.log_figure(_roc_figure(part.y, proba), "plots/roc_test")
        features = [c for c in prepared.parts["train"].schema if c != prepared.target]
        coefs = dict(zip(features, model.coef_[0].tolist(), strict=True))
        run.log_dict(
            {"intercept": float(model.intercept_[0]), "coefficients": coefs},
            "model/coefficients.json",
        )
        return run.id


def _cross_validate(run: ActiveRun, train: Part, seed: int) -> None:
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    per_fold = []
    for fold, (tr, va) in enumerate(folds.split(train.x, train.y)):
        model = _model().fit(train.x[tr], train.y[tr])
        scores = _scores(train.y[va], model.predict_proba(train.x[va])[:, 1])
        run.log_metrics({f"cv/{k}": v for k, v in scores.items()}, step=fold)
        per_fold.append(scores)
    for key in METRICS:
        values = np.array([s[key] for s in per_fold])
        run.log_metrics(
            {f"cv/{key}_mean": float(values.mean()), f"cv/{key}_std": float(values.std(ddof=1))}
        )


def _roc_figure(y: np.ndarray[Any, Any], proba: np.ndarray[Any, Any]) -> Any:
    import plotly.graph_objects as go
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, proba)
    fig = go.Figure(go.Scatter(x=fpr, y=tpr, mode="lines", name="test"))
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot"})
    fig.update_layout(
        title="ROC curve (test split)",
        xaxis_title="false positive rate",
        yaxis_title="true positive rate",
    )
    return fig


def _outcomes(spec: ProjectSpec, metrics: dict[str, float]) -> list[CriterionOutcome]:
    from meguri.spec import evaluate

    return [
        evaluate(c, metrics.get(f"{c.measured_on}/{c.metric}"))
        for c in spec.success_criteria
        if c.measured_on in ("test", "validation")
    ]


def _metrics_table(metrics: dict[str, float]) -> Table:
    table = Table(title="Metrics", title_justify="left")
    for col in ("metric", "cv on train (mean ± sd)", "validation", "test"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in METRICS:
        cv = f"{metrics[f'cv/{key}_mean']:.4f} ± {metrics[f'cv/{key}_std']:.4f}"
        table.add_row(
            key, cv, f"{metrics[f'validation/{key}']:.4f}", f"{metrics[f'test/{key}']:.4f}"
        )
    return table


def _criteria_table(spec: ProjectSpec, metrics: dict[str, float]) -> Table:
    checks = Table(title="Success criteria", title_justify="left")
    for col in ("criterion", "on", "requirement", "measured", "result"):
        checks.add_column(col, no_wrap=col != "result")
    for outcome in _outcomes(spec, metrics):
        c = outcome.criterion
        verdict = "[green]pass[/]" if outcome.passed else "[red]fail[/]"
        measured = "-" if outcome.value is None else f"{outcome.value:.4f}"
        checks.add_row(
            c.id, c.measured_on, f"{c.metric} {c.comparison} {c.threshold:g}", measured, verdict
        )
    for c in spec.success_criteria:
        if c.measured_on not in ("test", "validation"):
            checks.add_row(
                c.id,
                c.measured_on,
                f"{c.metric} {c.comparison} {c.threshold:g}",
                "-",
                f"[dim]at {c.measured_on}[/]",
            )
    return checks


def _summary(
    ws: Workspace, spec: ProjectSpec, spec_version_id: str, prepared: PreparedData, run_id: str
) -> None:
    run = ws.metadata.runs.get_run(run_id)
    metrics = {k: p.value for k, p in run.metrics.items()}
    peak = (run.peak_memory_bytes or 0) >> 20
    resources = f"wall {run.wall_seconds:.2f} s · cpu {run.cpu_seconds:.2f} s · peak {peak} MiB"
    parts = ", ".join(v.ref for v in prepared.parts.values())
    console.print(
        Panel.fit(
            f"project [bold]{ws.project.name}[/] in {ws.root}\n"
            f"spec version [bold]{spec_version_id}[/]\n"
            f"data {prepared.source.ref} → {parts}\n"
            f"run [bold]{run.id}[/] ({run.status.value}) · {resources}",
            title="meguri demo",
        )
    )
    console.print(_metrics_table(metrics))
    console.print(_criteria_table(spec, metrics))
    venv = sys.prefix != sys.base_prefix and "VIRTUAL_ENV" in os.environ
    activate = "" if venv else f"source {Path(sys.prefix) / 'bin' / 'activate'} && "
    console.print(
        f"Next: [bold]{activate}cd {ws.root}[/], then try `meguri runs list`, "
        f"`meguri runs show {run.id}`, `meguri data list`, `meguri data lineage "
        f"{prepared.parts['train'].ref}`, `meguri spec history`; run `meguri demo` again and "
        "`meguri runs compare` the two runs."
    )
