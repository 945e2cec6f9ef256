"""The commented example spec that ``meguri init`` writes (the bundled breast-cancer demo)."""

from __future__ import annotations

import re
from datetime import date, timedelta

_TEMPLATE = """\
# meguri.yaml: the project spec, requirements as code.
# Every run, model and deployment records the version of this file it was built against;
# `meguri spec save` stores a version, `meguri spec diff latest file` shows what you changed.
# Unknown keys are errors (so typos are caught); `meguri spec validate` checks the file.
version: 1
project: __PROJECT__

# 1. Business requirements: why the project exists and how success is measured.
objective:
  problem: >-
    Fine-needle aspirate images of breast masses are read by hand; the backlog delays
    diagnoses. Flag the likely malignant cases first.
  expected_outcome: >-
    A model that ranks each new case by its probability of malignancy, so that
    pathologists read the riskiest cases first.
  kpi: Median days from aspirate to diagnosis for malignant cases, down from 6 to under 2.

# Each criterion is checked where its evidence appears: a metric on the test or validation
# split at evaluation, latency at the staging test, drift or accuracy in production.
# comparison: one of >=, >, <=, <, ==      measured_on: test, validation, staging, production
success_criteria:
  - id: auc-test
    metric: roc_auc
    measured_on: test
    comparison: ">="
    threshold: 0.95
    description: Ranks malignant above benign cases on held-out data.
  - id: recall-test
    metric: recall
    measured_on: test
    comparison: ">="
    threshold: 0.9
    description: Share of malignant cases flagged (a missed one costs most).
  - id: balanced-accuracy-validation
    metric: balanced_accuracy
    measured_on: validation
    comparison: ">="
    threshold: 0.92
  - id: latency-staging
    metric: latency_p95_ms
    measured_on: staging
    comparison: "<="
    threshold: 50
    description: Fast enough to score a case while the report is open.
  - id: drift-production
    metric: drift_share
    measured_on: production
    comparison: "<="
    threshold: 0.3
    description: Share of input columns drifting from the training data.
  - id: auc-production
    metric: roc_auc
    measured_on: production
    comparison: ">="
    threshold: 0.93
    description: Once diagnoses (labels) arrive.

requirements:
  functional:
    task: binary_classification  # or multiclass_classification, regression
    target: malignant            # 1 = malignant, 0 = benign
    # inputs: [mean_radius, mean_texture]  # default: every column but target and excluded
  non_functional:
    latency_p95_ms: 50
    throughput_rps: 100
    max_model_size_mb: 20
    training_time_budget_minutes: 10
    explainability: global       # none, global (feature importance) or local (per prediction)

constraints:
  # Columns that must never reach a model: identifiers, PII, leaks of the target.
  excluded_columns: []           # e.g. [patient_id, email]
  allowed_algorithms: [linear, random_forest, hist_gradient_boosting, lightgbm]

# Resource plan: who, with what, by when.
resources:
  team:
    - name: Aiko Tanaka
      role: data scientist
      skills: [python, machine learning, statistics]
    - name: Ben Okafor
      role: ML engineer
      skills: [python, deployment, monitoring]
    - name: Dr. Clara Silva
      role: pathologist (domain expert)
      skills: [cytology, labelling]
  skills_needed: [machine learning, deployment, cytology]
  tools: [meguri, scikit-learn, lightgbm]
  compute_budget:
    cpu_cores: 2
    memory_gb: 4
    gpus: 0
  schedule:
    start: __START__
    end: __END__
    milestones:
      - {name: requirements agreed, due: __M1__, phase: requirements}
      - {name: data prepared, due: __M2__, phase: data}
      - {name: model meets test criteria, due: __M3__, phase: model}
      - {name: in production, due: __M4__, phase: deploy}

# 2. Data: where it comes from (bundled://NAME is a dataset shipped with meguri).
data:
  sources:
    - name: breast_cancer
      uri: bundled://breast_cancer
      description: Breast Cancer Wisconsin (Diagnostic), UCI, CC BY 4.0; 569 cases, 30 features.
  # Checked on every new version; an error-level failure stops the pipeline with the rows at
  # fault. Inferred checks (constant columns, duplicates, target leakage, PII, type drift) run
  # too unless `infer: false`.
  quality:
    checks:
      - check: not_null
        column: malignant
      - check: allowed_values
        column: malignant
        values: [0, 1]
      - check: range
        column: mean_radius
        min: 0
        max: 50
      - check: row_count
        min: 500
  # Fitted on the training rows only and applied identically at serving time.
  prepare:
    - impute: {strategy: median, indicator: false}
    - clip: {method: iqr, factor: 3.0}
    - ratio: {name: area_per_perimeter, numerator: mean_area, denominator: mean_perimeter}
    - scale: {method: standard}
    - select: {method: correlation, threshold: 0.98}
  # Reproducible by row hash: the same rows land in the same part on every run.
  split: {method: stratified, train: 0.7, validation: 0.15, test: 0.15, seed: 42}

# 3. Model development.
model:
  seed: 42
  cv_folds: 5

pipeline:
  compute: local                 # or ray

# 4. Deployment environments.
deploy:
  environments:
    staging:
      workers: 1
      capture_rate: 1.0          # share of requests captured for monitoring
    production:
      workers: 2
      capture_rate: 0.5

# 5. Monitoring.
# Windows of captured traffic: data quality, drift against the training baseline, latency,
# errors, and accuracy once labels arrive (`meguri feedback`). Alerts fire when k of the last
# N windows breach; `retrain: true` runs the pipeline on fresh data and canaries the result.
monitor:
  window: 1h
  drift: {threshold: 0.1, p_value: 0.05, share: 0.5}   # Evidently's default rule
  alerts:
    - name: data-drift
      criterion: drift-production  # a window's drift share breaking the criterion
      windows: 1
      of: 2
      notify: [log]
      retrain: true
    - name: production-auc
      criterion: auc-production
      severity: critical
      notify: [log]
  notifiers:
    log: {kind: log}           # also webhook (Alertmanager JSON), slack, email
  retrain: {environment: production, cooldown: 1h}
"""


def slugify(name: str) -> str:
    """A valid project name from any folder name (``My Project`` → ``my-project``)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")
    return slug[:100] or "my-project"


def render_example_spec(project: str, today: date | None = None) -> str:
    """The example ``meguri.yaml`` for ``project``, its schedule starting ``today``."""
    start = today or date.today()
    weeks = {"__M1__": 1, "__M2__": 3, "__M3__": 6, "__M4__": 8, "__END__": 10}
    text = _TEMPLATE.replace("__PROJECT__", project).replace("__START__", start.isoformat())
    for marker, n in weeks.items():
        text = text.replace(marker, (start + timedelta(weeks=n)).isoformat())
    return text
