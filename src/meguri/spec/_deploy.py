"""The ``deploy:`` section of the spec: environments, their traffic strategy and baking thresholds.

::

    deploy:
      environments:
        staging:
          workers: 2
          capture_rate: 1.0
          port: 8081
          strategy: {kind: canary, steps: [10, 100], bake_seconds: 30}
          thresholds: {max_error_rate: 0.01, max_p99_ms: 50, max_schema_violation_rate: 0.05}
        production:
          auth_token_env: MEGURI_PRODUCTION_TOKEN   # requests send 'Authorization: Bearer …'
          max_body_bytes: 1048576

Strategies: ``all_at_once`` (switch every request to the new version), ``canary`` and ``linear``
(send ``steps`` percent of the requests to the new version in turn, each for ``bake_seconds``),
``shadow`` (mirror every request to the new version for ``bake_seconds``, serve only the old
one's answers, then switch). While a step bakes, the new version's error rate, p99 latency and
schema violations are held against ``thresholds``; a breach rolls back.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from meguri.spec._names import check_name

__all__ = ["DeployEnvironment", "DeploySpec", "DeployThresholds", "StrategyKind", "StrategySpec"]

StrategyKind = Literal["all_at_once", "canary", "linear", "shadow"]
_DEFAULT_STEPS: dict[str, list[float]] = {
    "all_at_once": [100.0],
    "canary": [10.0, 100.0],
    "linear": [25.0, 50.0, 75.0, 100.0],
    "shadow": [100.0],
}


EnvironmentName = Annotated[str, AfterValidator(check_name)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StrategySpec(_Closed):
    """How traffic moves to a new version (see the module docstring)."""

    kind: StrategyKind = "canary"
    steps: list[float] | None = None
    """Percent of requests to the new version at each step, rising, ending at 100."""
    bake_seconds: NonNegativeFloat = 60.0

    @model_validator(mode="after")
    def _check_steps(self) -> StrategySpec:
        steps = self.steps
        if steps is None:
            return self
        if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps):
            raise ValueError(
                f"strategy.steps {steps} must be percentages in (0, 100] ending at 100 "
                "(e.g. [10, 100])"
            )
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"strategy.steps {steps} must rise (e.g. [10, 50, 100])")
        return self

    @property
    def resolved_steps(self) -> list[float]:
        """The steps, or the strategy's default (``canary``: 10 then 100)."""
        if self.kind in ("all_at_once", "shadow"):
            return [100.0]
        return list(self.steps) if self.steps is not None else list(_DEFAULT_STEPS[self.kind])


class DeployThresholds(_Closed):
    """What the new version must keep to while it bakes (``None``: not checked)."""

    max_error_rate: float = Field(0.01, ge=0.0, le=1.0)
    max_p99_ms: PositiveFloat | None = None
    """Default: ``requirements.non_functional.latency_p95_ms`` when the spec sets it."""
    max_schema_violation_rate: float = Field(0.05, ge=0.0, le=1.0)
    min_requests: PositiveInt = 20
    """Requests the new version must answer before its rates are judged."""


class DeployEnvironment(_Closed):
    workers: PositiveInt = 1
    capture_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of requests whose inputs and predictions are captured for monitoring."""
    port: int = Field(0, ge=0, le=65535)
    """Port of the endpoint on 127.0.0.1 (0: a free one, chosen at the first deploy)."""
    strategy: StrategySpec = StrategySpec()
    thresholds: DeployThresholds = DeployThresholds()
    auth_token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """Name of the environment variable holding the bearer token every request but the health
    checks must send (the token itself never goes in the spec nor on disk: the endpoint keeps
    its sha256). Unset: no token needed, as fits an endpoint on 127.0.0.1."""
    max_body_bytes: PositiveInt = 8 * 1024 * 1024
    """Largest request body accepted (larger ones get 413)."""
    max_rows: PositiveInt = 10_000
    """Most rows in one request (more get 413)."""


class DeploySpec(BaseModel):
    """The environments a model can be deployed to (keys other than these are kept)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    environments: dict[EnvironmentName, DeployEnvironment] = {}
