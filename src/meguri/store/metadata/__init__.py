"""The metadata store (SQLAlchemy 2 + Alembic): SQLite by default, PostgreSQL by URL."""

from meguri.store.metadata._entities import (
    ArtifactRef,
    CheckResult,
    Dataset,
    DatasetVersion,
    Document,
    DocumentVersion,
    Experiment,
    MetricPoint,
    Model,
    ModelAlias,
    ModelEvent,
    ModelStatus,
    ModelVersion,
    Project,
    Run,
    RunStatus,
    SpecVersion,
)
from meguri.store.metadata._store import MetadataStore, open_metadata_store

__all__ = [
    "ArtifactRef",
    "CheckResult",
    "Dataset",
    "DatasetVersion",
    "Document",
    "DocumentVersion",
    "Experiment",
    "MetadataStore",
    "MetricPoint",
    "Model",
    "ModelAlias",
    "ModelEvent",
    "ModelStatus",
    "ModelVersion",
    "Project",
    "Run",
    "RunStatus",
    "SpecVersion",
    "open_metadata_store",
]
