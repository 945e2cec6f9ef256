"""Domain records returned by the repositories: plain, immutable, detached from any session."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple


class RunStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"

    @property
    def is_terminal(self) -> bool:
        return self is not RunStatus.RUNNING


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class SpecVersion:
    id: str
    project_id: str
    hash: str
    content: str
    message: str | None
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    project_id: str
    name: str
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    id: str
    document_id: str
    version: int
    hash: str
    content: str
    message: str | None
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class Experiment:
    """A named group of runs. ``deleted_at`` is set while it is deleted (hidden from listings,
    its runs with it, until restored)."""

    id: str
    project_id: str
    name: str
    created_at: float
    created_by: str
    deleted_at: float | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


class MetricPoint(NamedTuple):
    key: str
    value: float
    step: int
    timestamp: float


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A run's named artifact: the name is logical, the bytes live under ``digest``."""

    name: str
    digest: str
    size: int
    media_type: str
    created_at: float


@dataclass(slots=True)
class Run:
    """A run as stored when it was read: a snapshot (not frozen, for the speed of search).

    The first fields follow the columns of the ``runs`` table, in order. ``deleted_at`` is set
    while the run is deleted: searches leave it out unless asked, its records stay.
    """

    id: str
    experiment_id: str
    parent_run_id: str | None
    name: str
    status: RunStatus
    created_at: float
    created_by: str
    ended_at: float | None
    heartbeat_at: float | None
    status_reason: str | None
    spec_version_id: str | None
    code_version: str | None
    host: str | None
    pid: int | None
    wall_seconds: float | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None
    deleted_at: float | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, MetricPoint] = field(default_factory=dict)
    inputs: dict[str, list[str]] = field(default_factory=dict)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class Dataset:
    """A named dataset of a project; its content lives in numbered :class:`DatasetVersion` s."""

    id: str
    project_id: str
    name: str
    description: str | None
    created_at: float
    created_by: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One immutable version of a dataset: its data (Parquet under ``data_digest`` in the
    artifact store), schema (column -> Polars type name, in column order), where it came from
    (``source_uri``/``format``/``read_options`` for an ingest; ``parents``, ``operation`` and
    ``lineage`` for a derived version) and the digests of its profile and quality report."""

    id: str
    dataset_id: str
    name: str
    version: int
    content_hash: str
    schema: dict[str, str]
    row_count: int
    byte_size: int
    source_uri: str | None
    format: str | None
    read_options: dict[str, object]
    data_digest: str
    profile_digest: str | None
    quality_digest: str | None
    operation: str
    lineage: dict[str, object]
    created_at: float
    created_by: str
    parents: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``name@version``, the reference a person reads and types."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One success criterion measured on one subject (a run, a model version, a deployment).

    Build it with ``id=""`` and ``created_at=0.0``: the repository assigns both on record.
    """

    id: str
    project_id: str
    spec_version_id: str | None
    criterion_id: str
    stage: str
    metric: str
    comparison: str
    threshold: float
    value: float | None
    passed: bool
    subject_kind: str
    subject_id: str
    created_at: float
    created_by: str
    evidence: dict[str, object] = field(default_factory=dict)


class ModelStatus(StrEnum):
    READY = "ready"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Model:
    """A named model of a project; its packages are numbered :class:`ModelVersion` s.

    ``archived`` is set while none of its versions is ready (all archived)."""

    id: str
    project_id: str
    name: str
    description: str | None
    tags: dict[str, str]
    archived: bool
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One registered model package: the files of its package (logged as the artifacts
    ``model/<path>`` of run ``run_id``) with their sha256, the sha256 of its ``model.json``
    (``package_digest``), what it predicts (``task``, ``signature``), how (``runtime``), how well
    (``metrics``), and the aliases that point at it."""

    id: str
    model_id: str
    name: str
    version: int
    run_id: str
    spec_version_id: str | None
    package_digest: str
    files: dict[str, dict[str, object]]
    task: str
    signature: dict[str, object]
    metrics: dict[str, float]
    runtime: str
    status: ModelStatus
    description: str | None
    tags: dict[str, str]
    card_markdown_digest: str | None
    card_html_digest: str | None
    created_at: float
    created_by: str
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """``name@version``, the reference a person reads and types."""
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """``alias`` of model ``model_id`` points at version ``version_id`` (number ``version``)."""

    model_id: str
    alias: str
    version_id: str
    version: int
    updated_at: float
    updated_by: str


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """One entry of a model's append-only history: ``registered``, ``alias_set``,
    ``alias_removed``, ``promoted``, ``gate_override`` (with the reason), ``archived``."""

    id: str
    model_id: str
    version_id: str | None
    kind: str
    detail: dict[str, object]
    created_at: float
    created_by: str


class DeploymentState(StrEnum):
    """Where an environment's endpoint stands."""

    STARTING = "starting"
    SERVING = "serving"
    BAKING = "baking"
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"
    FAILED = "failed"


class RevisionState(StrEnum):
    """``pending`` until every worker serves it; then ``baking`` (a rollout step is watched) or
    ``live``; a later revision makes it ``superseded``, a breach ``rolled_back``."""

    PENDING = "pending"
    BAKING = "baking"
    LIVE = "live"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        """True while the rollout of the revision is still going on."""
        return self in (RevisionState.PENDING, RevisionState.BAKING)


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """One model version a revision serves: its share of requests (``weight``, percent) and
    ``role``: ``primary`` (answers), ``canary`` (answers ``weight`` percent) or ``shadow``
    (receives a copy of every request; its answers are compared, never returned)."""

    model_version_id: str
    ref: str
    package_digest: str
    weight: float
    role: str

    def to_dict(self) -> dict[str, object]:
        return {
            "model_version_id": self.model_version_id,
            "ref": self.ref,
            "package_digest": self.package_digest,
            "weight": self.weight,
            "role": self.role,
        }


@dataclass(frozen=True, slots=True)
class Deployment:
    """The endpoint of one environment of a project: the revision it serves
    (``current_number``, 0 before the first), its supervisor's ``pid`` and ``port``."""

    id: str
    project_id: str
    environment: str
    model_name: str
    state: DeploymentState
    port: int | None
    pid: int | None
    current_revision_id: str | None
    current_number: int
    updated_at: float
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class DeploymentRevision:
    """One change of a deployment, numbered 1, 2, ... per deployment: what it serves
    (``targets``), how traffic moves (``strategy`` and its ``settings``), how far it got
    (``state``, ``step``), why it was made (``reason``: ``deploy``, ``rollback: ...``) and the
    evidence gathered while it baked (``detail``)."""

    id: str
    deployment_id: str
    number: int
    targets: tuple[DeploymentTarget, ...]
    strategy: str
    settings: dict[str, object]
    state: RevisionState
    step: int
    reason: str
    detail: dict[str, object]
    updated_at: float
    created_at: float
    created_by: str

    def target(self, role: str) -> DeploymentTarget | None:
        """The first target with ``role``, or None."""
        return next((t for t in self.targets if t.role == role), None)


@dataclass(frozen=True, slots=True)
class MonitorWindow:
    """What one deployment environment saw over the time window ``[start, end)`` (epoch
    seconds, UTC): ``rows`` captured predictions, how many each model version answered
    (``model_versions``: ``{"name@version": rows}``), the flat named ``figures`` that alerts,
    charts and Prometheus read (None: not measured, or not a number) and the ``details`` they
    came from (the drift report, quality, accuracy and system breakdowns).

    A window is identified by ``(project_id, environment, start, end)``: computing it again
    (late feedback brings labels) replaces its content and keeps its ``id``, so alerts that
    point at it stay valid; ``created_at`` is when its content was last computed."""

    id: str
    project_id: str
    environment: str
    start: float
    end: float
    rows: int
    model_versions: dict[str, int]
    figures: dict[str, float | None]
    details: dict[str, Any]
    created_at: float


class AlertState(StrEnum):
    """An alert ``firing`` until its rule clears (with hysteresis), then ``resolved``."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode of an alert rule firing in an environment: from ``started_at`` (fired by
    window ``window_id``) to ``resolved_at``; ``value`` and ``last_window_id`` follow the latest
    window evaluated. ``detail`` gathers what the alert caused: the notifications sent and their
    outcome, the retraining run, model version and deployment revision it started. At most one
    alert of a rule fires per project environment at a time."""

    id: str
    project_id: str
    environment: str
    rule: str
    severity: str
    state: AlertState
    value: float | None
    started_at: float
    resolved_at: float | None
    window_id: str
    last_window_id: str
    detail: dict[str, Any]
    created_at: float


# -- access control and the audit log ---------------------------------------------------------

#: The roles a user can hold in a project, weakest first: each can do what the ones before it
#: can (a viewer reads, an editor also writes, an admin also grants roles).
ROLES: tuple[str, ...] = ("viewer", "editor", "admin")


@dataclass(frozen=True, slots=True)
class User:
    """A person (or robot) who signs in. ``is_admin`` marks a platform admin, who may do
    anything in every project; everyone else needs a role per project. A disabled user can
    neither sign in nor use a token. The password hash never leaves the repository."""

    id: str
    name: str
    email: str | None
    is_admin: bool
    created_at: float
    created_by: str
    disabled: bool
    sessions_since: float | None = None
    """Browser sessions signed in before this time are void (the password changed, or the
    user was disabled); None: none voided."""


@dataclass(frozen=True, slots=True)
class Token:
    """An API token of a user. Only the sha256 of its secret is stored; ``prefix`` (the
    secret's first characters, not enough to guess the rest) lets people tell tokens apart."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def is_active(self, now: float) -> bool:
        """Neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class NewAuditEvent:
    """What a change says of itself before it is sealed into the audit log: who (``actor``)
    did what (``action``, e.g. ``model.alias_set``) to which subject, in which project (None
    for platform-wide changes: users, tokens), with ``detail`` (JSON-able, never a secret)."""

    actor: str
    action: str
    subject_kind: str
    subject_id: str
    project_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One sealed entry of the append-only audit log. ``seq`` counts 1, 2, ... without gaps;
    ``hash`` is sha256 of ``prev_hash`` (the previous event's hash) followed by the canonical
    JSON of the other fields, so editing, inserting or deleting an event breaks the chain."""

    seq: int
    id: str
    time: float
    actor: str
    action: str
    project_id: str | None
    subject_kind: str
    subject_id: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The outcome of walking the audit chain: ``ok``, how many events were ``checked``, and
    when broken the ``first_bad_seq`` and the ``reason``. ``head_seq``/``head_hash`` are the
    chain's recorded head: keep a copy elsewhere to detect a wholesale rewrite later."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None
    head_seq: int = 0
    head_hash: str | None = None
