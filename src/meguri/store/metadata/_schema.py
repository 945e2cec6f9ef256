"""Tables of the metadata store (SQLAlchemy Core).

Times are seconds since the epoch as double precision. Metric values are doubles where NULL
stands for NaN (SQLite cannot store NaN). Alembic migrations under ``migrations/`` create and
evolve these tables; a test checks that the migrations and this module agree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_ID = sa.String(40)
_KEY = sa.String(250)


def _created() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    ]


projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    *_created(),
)

spec_versions = sa.Table(
    "spec_versions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    *_created(),
    sa.UniqueConstraint("project_id", "hash"),
)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    *_created(),
    sa.UniqueConstraint("project_id", "name"),
)

document_versions = sa.Table(
    "document_versions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("document_id", _ID, sa.ForeignKey("documents.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    *_created(),
    sa.UniqueConstraint("document_id", "version"),
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    *_created(),
    sa.Column("deleted_at", sa.Double, nullable=True),
    sa.UniqueConstraint("project_id", "name"),
)

experiment_tags = sa.Table(
    "experiment_tags",
    metadata,
    sa.Column("experiment_id", _ID, sa.ForeignKey("experiments.id"), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# ``deleted_at``: NULL while the run is active; a deleted run is hidden from searches (not
# erased) until restored. Runs deleted with their experiment share its ``deleted_at``. The
# partial index over active runs serves what every face asks (an experiment's active runs,
# newest first, and their count) from the index alone; the full one serves the other views.
_ACTIVE = sa.text("deleted_at IS NULL")
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("experiment_id", _ID, sa.ForeignKey("experiments.id"), nullable=False),
    sa.Column("parent_run_id", _ID, sa.ForeignKey("runs.id"), nullable=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    *_created(),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("heartbeat_at", sa.Double, nullable=True),
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("spec_version_id", _ID, sa.ForeignKey("spec_versions.id"), nullable=True),
    sa.Column("code_version", sa.String(200), nullable=True),
    sa.Column("host", sa.String(200), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("wall_seconds", sa.Double, nullable=True),
    sa.Column("cpu_seconds", sa.Double, nullable=True),
    sa.Column("peak_memory_bytes", sa.BigInteger, nullable=True),
    sa.Column("deleted_at", sa.Double, nullable=True),
    sa.Index(None, "experiment_id", "created_at"),
    sa.Index(
        "ix_runs_active_experiment_id_created_at",
        "experiment_id",
        "created_at",
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    ),
    sa.Index(None, "status", "heartbeat_at"),
)

run_params = sa.Table(
    "run_params",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

run_tags = sa.Table(
    "run_tags",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("key", _KEY, nullable=False),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Index(None, "run_id", "key", "step"),
)

latest_metrics = sa.Table(
    "latest_metrics",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("timestamp", sa.Double, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Index(None, "key", "value"),
)

run_inputs = sa.Table(
    "run_inputs",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("ref", sa.String(200), primary_key=True),
)

run_artifacts = sa.Table(
    "run_artifacts",
    metadata,
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("media_type", sa.String(100), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    *_created(),
    sa.UniqueConstraint("project_id", "name"),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("dataset_id", _ID, sa.ForeignKey("datasets.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("schema_json", sa.Text, nullable=False),
    sa.Column("row_count", sa.BigInteger, nullable=False),
    sa.Column("byte_size", sa.BigInteger, nullable=False),
    sa.Column("source_uri", sa.Text, nullable=True),
    sa.Column("format", sa.String(40), nullable=True),
    sa.Column("read_options_json", sa.Text, nullable=False),
    sa.Column("data_digest", sa.String(64), nullable=False),
    sa.Column("profile_digest", sa.String(64), nullable=True),
    sa.Column("quality_digest", sa.String(64), nullable=True),
    sa.Column("operation", sa.String(40), nullable=False),
    sa.Column("lineage_json", sa.Text, nullable=False),
    *_created(),
    sa.UniqueConstraint("dataset_id", "version"),
    sa.UniqueConstraint("dataset_id", "content_hash"),
)

dataset_version_parents = sa.Table(
    "dataset_version_parents",
    metadata,
    sa.Column("child_id", _ID, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Column("parent_id", _ID, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Index(None, "parent_id"),
)

dataset_tags = sa.Table(
    "dataset_tags",
    metadata,
    sa.Column("dataset_id", _ID, sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("key", _KEY, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

check_results = sa.Table(
    "check_results",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("spec_version_id", _ID, sa.ForeignKey("spec_versions.id"), nullable=True),
    sa.Column("criterion_id", sa.String(200), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("metric", sa.String(200), nullable=False),
    sa.Column("comparison", sa.String(4), nullable=False),
    sa.Column("threshold", sa.Double, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("passed", sa.Boolean, nullable=False),
    sa.Column("subject_kind", sa.String(40), nullable=False),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("evidence_json", sa.Text, nullable=False),
    *_created(),
    sa.Index(None, "project_id", "criterion_id", "created_at"),
    sa.Index(None, "subject_kind", "subject_id"),
)

optuna_journal = sa.Table(
    "optuna_journal",
    metadata,
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("log_json", sa.Text, nullable=False),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags_json", sa.Text, nullable=False),
    sa.Column("archived", sa.Boolean, nullable=False),
    *_created(),
    sa.UniqueConstraint("project_id", "name"),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("model_id", _ID, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", _ID, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("spec_version_id", _ID, sa.ForeignKey("spec_versions.id"), nullable=True),
    sa.Column("package_digest", sa.String(64), nullable=False),
    sa.Column("files_json", sa.Text, nullable=False),
    sa.Column("task", sa.String(40), nullable=False),
    sa.Column("signature_json", sa.Text, nullable=False),
    sa.Column("metrics_json", sa.Text, nullable=False),
    sa.Column("runtime", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("tags_json", sa.Text, nullable=False),
    sa.Column("card_markdown_digest", sa.String(64), nullable=True),
    sa.Column("card_html_digest", sa.String(64), nullable=True),
    *_created(),
    sa.UniqueConstraint("model_id", "version"),
    sa.Index(None, "run_id"),
)

model_aliases = sa.Table(
    "model_aliases",
    metadata,
    sa.Column("model_id", _ID, sa.ForeignKey("models.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version_id", _ID, sa.ForeignKey("model_versions.id"), nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Index(None, "version_id"),
)

model_events = sa.Table(
    "model_events",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("model_id", _ID, sa.ForeignKey("models.id"), nullable=False),
    sa.Column("version_id", _ID, sa.ForeignKey("model_versions.id"), nullable=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("detail_json", sa.Text, nullable=False),
    *_created(),
    sa.Index(None, "model_id", "created_at"),
    sa.Index(None, "version_id"),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("environment", sa.String(100), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("port", sa.Integer, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("current_revision_id", _ID, nullable=True),
    sa.Column("current_number", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    *_created(),
    sa.UniqueConstraint("project_id", "environment"),
)

deployment_revisions = sa.Table(
    "deployment_revisions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("deployment_id", _ID, sa.ForeignKey("deployments.id"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("targets_json", sa.Text, nullable=False),
    sa.Column("strategy", sa.String(20), nullable=False),
    sa.Column("settings_json", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail_json", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    *_created(),
    sa.UniqueConstraint("deployment_id", "number"),
)

# A window is identified by (project, environment, start, end); the unique index also serves
# the one hot query, a project environment's windows over a time range ordered by start.
# ``figures`` is a JSON column (not text) so that ad-hoc SQL can read one figure over time
# (``figures ->> 'drift.share'`` on PostgreSQL, ``JSON_EXTRACT`` on SQLite).
monitor_windows = sa.Table(
    "monitor_windows",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("environment", sa.String(100), nullable=False),
    sa.Column("start", sa.Double, nullable=False),
    sa.Column("end", sa.Double, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("model_versions_json", sa.Text, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("project_id", "environment", "start", "end"),
    sa.Index(None, "project_id", "environment", "end"),
)

# At most one firing alert per (project, environment, rule): ``firing_rule`` holds the rule
# while the alert fires and NULL once resolved, and NULLs never collide in a unique constraint
# (SQLite and PostgreSQL alike), so the database refuses a second firing alert even when two
# writers race past the repository's own check.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("environment", sa.String(100), nullable=False),
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("severity", sa.String(20), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("firing_rule", sa.String(200), nullable=True),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("resolved_at", sa.Double, nullable=True),
    sa.Column("window_id", _ID, sa.ForeignKey("monitor_windows.id"), nullable=False),
    sa.Column("last_window_id", _ID, sa.ForeignKey("monitor_windows.id"), nullable=False),
    sa.Column("detail_json", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.UniqueConstraint("project_id", "environment", "firing_rule"),
    sa.Index(None, "project_id", "created_at"),
    sa.Index(None, "window_id"),
    sa.Index(None, "last_window_id"),
)

# -- access control ---------------------------------------------------------------------------
# Passwords are stored as scrypt hashes with their parameters (``scrypt$n$r$p$salt$hash``) and
# tokens as the sha256 of their secret: a copy of the database gives no way in.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("is_admin", sa.Boolean, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
    sa.Column("password_hash", sa.String(200), nullable=True),
    *_created(),
    # browser sessions signed in before this time are void (password changed, user disabled)
    sa.Column("sessions_since", sa.Double, nullable=True),
    sa.UniqueConstraint("name"),
)

# Browser sessions ended before their cookie expires (signed out), kept until that expiry so
# that a copied cookie stays void across server restarts.
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("sid", sa.String(64), primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=False),
    sa.Index(None, "expires_at"),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=True),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("last_used_at", sa.Double, nullable=True),
    *_created(),
    sa.UniqueConstraint("secret_hash"),
    sa.Index(None, "user_id"),
)

project_roles = sa.Table(
    "project_roles",
    metadata,
    sa.Column("project_id", _ID, sa.ForeignKey("projects.id"), primary_key=True),
    sa.Column("user_id", _ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Index(None, "user_id"),
)

# -- the audit log ----------------------------------------------------------------------------
# ``seq`` is allocated from the single row of ``audit_head`` (id 1), which also records the
# chain's last hash: appending locks that row (SQLite's write lock serialises anyway), so
# concurrent writers queue instead of forking the chain, and deleting the newest events is
# detected because the head no longer matches. ``project_id`` has no foreign key: the log
# outlives whatever it records.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", _ID, nullable=False),
    sa.Column("time", sa.Double, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("project_id", _ID, nullable=True),
    sa.Column("subject_kind", sa.String(40), nullable=False),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("detail_json", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("id"),
    sa.Index(None, "project_id", "seq"),
    sa.Index(None, "time"),
)

audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
