"""pytest fixtures for every backend: ``metadata_store`` (SQLite, PostgreSQL) and
``artifact_store`` (local folder, S3 via moto's server)."""

from meguri.testing._artifact_backends import artifact_store, artifacts_url, s3_server
from meguri.testing._metadata_backends import metadata_store, metadata_url, postgres_url

__all__ = [
    "artifact_store",
    "artifacts_url",
    "metadata_store",
    "metadata_url",
    "postgres_url",
    "s3_server",
]
