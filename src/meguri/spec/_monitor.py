"""The ``monitor:`` section of the spec: windows, drift rule, alert rules, notifiers, retraining.

::

    monitor:
      window: 1h
      drift:
        threshold: 0.1            # distance methods (normed Wasserstein, Jensen-Shannon)
        p_value: 0.05             # statistical tests (KS, chi-square, z), small references
        share: 0.5                # dataset drift when this share of the columns drift
        columns:                  # per-column overrides of the default rule
          distance: {method: psi, threshold: 0.2}
        multivariate: {method: domain_classifier, threshold: 0.55}
      alerts:
        - name: data-drift
          figure: drift.share
          above: 0.3
          clear: 0.2              # hysteresis: resolves only once back at or below 0.2
          windows: 2              # fires when 2 ...
          of: 3                   # ... of the last 3 windows breach
          notify: [ops]
          retrain: true
        - name: production-auc
          criterion: auc-production   # a success criterion measured on production
          notify: [ops]
      notifiers:
        ops: {kind: webhook, url: "http://127.0.0.1:9093/hook"}
      retrain:
        environment: production

The default drift rule is Evidently's (see :mod:`meguri.monitor._drift`): a method named in
``columns`` replaces it for that column.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from meguri.spec._names import check_duration, check_name, duration_seconds

__all__ = [
    "DRIFT_METHODS",
    "AlertRuleSpec",
    "ColumnDriftSpec",
    "DriftMethod",
    "DriftSpec",
    "MonitorSpec",
    "MultivariateSpec",
    "NotifierSpec",
    "RetrainSpec",
]

DriftMethod = Literal[
    "wasserstein", "jensenshannon", "ks", "chisquare", "z", "psi", "kl_div", "hellinger"
]
DRIFT_METHODS: tuple[str, ...] = DriftMethod.__args__  # type: ignore[attr-defined]
_FIGURE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z0-9_<>@=-]+)*")


def _figure(value: str) -> str:
    if not _FIGURE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a window figure; name one such as drift.share, error_rate, "
            "latency_p99_ms, quality.missing_rate, drift.column.age or accuracy.roc_auc"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
Figure = Annotated[str, AfterValidator(_figure)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnDriftSpec(_Closed):
    """A column's own drift method and threshold (p-value for tests, distance otherwise)."""

    method: DriftMethod | None = None
    threshold: PositiveFloat | None = None


class MultivariateSpec(_Closed):
    """A domain classifier told reference from current rows: drift when its ROC AUC on held-out
    rows exceeds ``threshold``."""

    method: Literal["domain_classifier"] = "domain_classifier"
    threshold: float = Field(0.55, gt=0.5, le=1.0)
    sample_rows: PositiveInt = 5_000
    """Rows of each side the classifier sees (a uniform sample)."""


class DriftSpec(_Closed):
    threshold: PositiveFloat = 0.1
    p_value: float = Field(0.05, gt=0.0, lt=1.0)
    share: float = Field(0.5, gt=0.0, le=1.0)
    columns: dict[str, ColumnDriftSpec] = {}
    multivariate: MultivariateSpec | None = None
    prediction: bool = True
    """Whether the model's predictions are compared with its predictions on held-out rows."""


class AlertRuleSpec(_Closed):
    """Fires when ``windows`` of the last ``of`` windows breach; resolves (hysteresis) once the
    latest window's figure is back past ``clear`` and the rule no longer holds."""

    name: Name
    figure: Figure | None = None
    criterion: str | None = None
    """Id of a success criterion measured on ``production``: breached when a window's
    ``accuracy.<metric>`` fails it."""
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    windows: PositiveInt = 1
    of: PositiveInt = 1
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[Name] = []
    retrain: bool = False
    """Whether firing starts the pipeline (retrain, gates, canary) on fresh data."""

    @model_validator(mode="after")
    def _check(self) -> AlertRuleSpec:
        if (self.figure is None) == (self.criterion is None):
            raise ValueError(f"alert {self.name!r}: give exactly one of figure or criterion")
        if self.figure is not None and (self.above is None) == (self.below is None):
            raise ValueError(
                f"alert {self.name!r}: give exactly one of above or below for figure "
                f"{self.figure!r} (e.g. above: 0.3)"
            )
        if self.criterion is not None and (self.above is not None or self.below is not None):
            raise ValueError(
                f"alert {self.name!r}: a criterion carries its own threshold; remove above/below"
            )
        if self.windows > self.of:
            raise ValueError(
                f"alert {self.name!r}: windows ({self.windows}) cannot exceed of ({self.of})"
            )
        if self.clear is not None and self.above is not None and self.clear > self.above:
            raise ValueError(f"alert {self.name!r}: clear must be at or below above")
        if self.clear is not None and self.below is not None and self.clear < self.below:
            raise ValueError(f"alert {self.name!r}: clear must be at or above below")
        return self


class NotifierSpec(_Closed):
    """Where a firing or resolved alert is sent."""

    kind: Literal["log", "webhook", "slack", "email"]
    url: str | None = None
    """webhook (Alertmanager's webhook JSON) and slack (a Slack incoming-webhook URL)."""
    smtp: str | None = None
    """email: ``host:port`` of the SMTP server."""
    sender: str | None = None
    to: list[str] = []
    starttls: bool = False
    username_env: str | None = None
    password_env: str | None = None
    """Names of environment variables holding SMTP credentials (never the secrets)."""
    timeout_seconds: PositiveFloat = 5.0
    allow_private: bool = False
    """Let a webhook reach loopback and private addresses (a local receiver in a demo or a
    test); otherwise they are refused after resolving the host once (SSRF guard). Link-local
    addresses (cloud metadata services) are refused always."""

    @model_validator(mode="after")
    def _check(self) -> NotifierSpec:
        if self.kind in ("webhook", "slack") and not self.url:
            raise ValueError(f"a {self.kind} notifier needs url (e.g. https://hooks.example/x)")
        if self.kind == "email" and not (self.smtp and self.sender and self.to):
            raise ValueError(
                "an email notifier needs smtp (host:port), sender and to (a list of addresses)"
            )
        return self


class RetrainSpec(_Closed):
    environment: str = "production"
    """The environment whose alerts may retrain, and where the new candidate is deployed."""
    cooldown: Annotated[str, AfterValidator(check_duration)] = "1d"
    """At most one retraining per this long, however many alerts fire."""


class MonitorSpec(BaseModel):
    """The ``monitor:`` section (see the module docstring); unknown keys are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    window: Annotated[str, AfterValidator(check_duration)] = "1h"
    drift: DriftSpec = DriftSpec()
    alerts: list[AlertRuleSpec] = []
    notifiers: dict[Name, NotifierSpec] = {}
    retrain: RetrainSpec = RetrainSpec()

    @model_validator(mode="after")
    def _check(self) -> MonitorSpec:
        names = [a.name for a in self.alerts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"alert names must be unique; {repeated} appear more than once")
        for alert in self.alerts:
            unknown = [n for n in alert.notify if n not in self.notifiers]
            if unknown:
                known = sorted(self.notifiers) or "none declared"
                raise ValueError(
                    f"alert {alert.name!r} notifies {unknown}, which monitor.notifiers does not "
                    f"declare (declared: {known})"
                )
        return self

    def window_seconds(self) -> float:
        return duration_seconds(self.window)
