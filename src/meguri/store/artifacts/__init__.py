"""Content-addressed artifact store over fsspec: a local folder by default, ``s3://`` for teams."""

from meguri.store.artifacts._base import ArtifactStore, StoredArtifact
from meguri.store.artifacts._fsspec import FsspecArtifactStore, open_artifact_store

__all__ = ["ArtifactStore", "FsspecArtifactStore", "StoredArtifact", "open_artifact_store"]
