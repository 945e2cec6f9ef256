"""``meguri demo``: one turn of the foundation on a real bundled dataset, as a user would write it.

It writes the example spec, stores it as a spec version, keeps the dataset in the artifact
store, trains and cross-validates a logistic-regression baseline as a tracked run, checks the
spec's success criteria measured on validation and test, and prints a summary. Metrics measured
on a stage are logged as ``<stage>/<metric>`` (``test/roc_auc``, ``validation/roc_auc``).
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

    from meguri.spec import CriterionOutcome, ProjectSpec
    from meguri.store import Workspace
    from meguri.train import ActiveRun

console = Console(width=None if sys.stdout.isatty() else 120)
SEED = 42
FOLDS = 5


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


@dataclass
class Split:
    x_train: np.ndarray[Any, Any]
    x_test: np.ndarray[Any, Any]
    y_train: np.ndarray[Any, Any]
    y_test: np.ndarray[Any, Any]
    features: list[str]


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Where to create the demo project.")] = Path(
        "meguri-demo"
    ),
) -> None:
    """Create an example project from a bundled real dataset, track a run, print a summary."""
    from meguri.store import open_workspace

    folder.mkdir(parents=True, exist_ok=True)
    spec_text = _ensure_spec(folder)
    ws = open_workspace(folder)
    try:
        with console.status("storing the spec version…"):
            spec, spec_version_id = _save_spec(ws, spec_text)
        with console.status("reading the bundled dataset…"):
            dataset_ref, split = _load_data(ws, spec)
        with console.status("training and cross-validating the baseline…"):
            run_id = _train(ws, spec, spec_version_id, dataset_ref, split)
        _summary(ws, spec, spec_version_id, dataset_ref, run_id)
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


def _load_data(ws: Workspace, spec: ProjectSpec) -> tuple[str, Split]:
    import numpy as np
    from sklearn.model_selection import train_test_split

    from meguri import datasets

    stored = ws.artifacts.put_file(datasets.path("breast_cancer"))
    ref = f"bundled://breast_cancer@sha256:{stored.digest}"
    table = datasets.load("breast_cancer")
    target = spec.requirements.functional.target
    features = [c for c in table.column_names if c != target]
    x = np.column_stack([table.column(c).to_numpy() for c in features])
    y = table.column(target).to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=SEED
    )
    return ref, Split(x_train, x_test, y_train, y_test, features)


def _model(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))


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


def _train(ws: Workspace, spec: ProjectSpec, spec_version_id: str, ref: str, split: Split) -> str:
    import meguri

    params = {
        "model": "logistic_regression",
        "C": 1.0,
        "scaler": "standard",
        "cv_folds": FOLDS,
        "seed": SEED,
        "test_size": 0.2,
    }
    with meguri.start_run(
        "logreg-baseline",
        experiment="demo",
        workspace=ws,
        spec_version=spec_version_id,
        params=params,
        inputs={"dataset": ref},
        tags={"task": spec.requirements.functional.task},
    ) as run:
        _cross_validate(run, split)
        model = _model(1.0).fit(split.x_train, split.y_train)
        proba = model.predict_proba(split.x_test)[:, 1]
        run.log_metrics({f"test/{k}": v for k, v in _scores(split.y_test, proba).items()})
        run.log_figure(_roc_figure(split.y_test, proba), "plots/roc_test")
        coefs = dict(zip(split.features, model[-1].coef_[0].tolist(), strict=True))
        run.log_dict(
            {"intercept": float(model[-1].intercept_[0]), "coefficients": coefs},
            "model/coefficients.json",
        )
        return run.id


def _cross_validate(run: ActiveRun, split: Split) -> None:
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    per_fold = []
    for fold, (tr, va) in enumerate(folds.split(split.x_train, split.y_train)):
        model = _model(1.0).fit(split.x_train[tr], split.y_train[tr])
        scores = _scores(split.y_train[va], model.predict_proba(split.x_train[va])[:, 1])
        run.log_metrics({f"cv/{k}": v for k, v in scores.items()}, step=fold)
        per_fold.append(scores)
    for key in per_fold[0]:
        values = np.array([s[key] for s in per_fold])
        run.log_metrics(
            {
                f"validation/{key}": float(values.mean()),
                f"validation/{key}_std": float(values.std(ddof=1)),
            }
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


def _summary(ws: Workspace, spec: ProjectSpec, spec_version_id: str, ref: str, run_id: str) -> None:
    run = ws.metadata.runs.get_run(run_id)
    metrics = {k: p.value for k, p in run.metrics.items()}
    table = Table(title="Metrics", title_justify="left")
    for col in ("metric", "validation (5-fold mean ± sd)", "test"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key in ("roc_auc", "accuracy", "balanced_accuracy", "recall", "precision", "log_loss"):
        cv = f"{metrics[f'validation/{key}']:.4f} ± {metrics[f'validation/{key}_std']:.4f}"
        table.add_row(key, cv, f"{metrics[f'test/{key}']:.4f}")
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
                "[dim]at " + c.measured_on + "[/]",
            )
    peak = (run.peak_memory_bytes or 0) >> 20
    resources = f"wall {run.wall_seconds:.2f} s · cpu {run.cpu_seconds:.2f} s · peak {peak} MiB"
    console.print(
        Panel.fit(
            f"project [bold]{ws.project.name}[/] in {ws.root}\n"
            f"spec version [bold]{spec_version_id}[/]\ndataset {ref[:40]}…\n"
            f"run [bold]{run.id}[/] ({run.status.value}) · {resources}",
            title="meguri demo",
        )
    )
    console.print(table)
    console.print(checks)
    activate = (
        ""
        if sys.prefix != sys.base_prefix and "VIRTUAL_ENV" in os.environ
        else (f"source {Path(sys.prefix) / 'bin' / 'activate'} && ")
    )
    console.print(
        f"Next: [bold]{activate}cd {ws.root}[/], then try `meguri runs list`, "
        f"`meguri runs show {run.id}`, `meguri spec history`; run `meguri demo` again and "
        "`meguri runs compare` the two runs."
    )
