"""Content-addressed artifact store over fsspec: a local folder by default, ``s3://`` for teams,
optionally encrypted at rest (AES-256-GCM, keys from ``MEGURI_ENCRYPTION_KEY_FILE``)."""

from meguri.store.artifacts._base import ArtifactStore, StoredArtifact
from meguri.store.artifacts._encrypted import EncryptedArtifactStore, RotationReport
from meguri.store.artifacts._fsspec import FsspecArtifactStore, open_artifact_store
from meguri.store.artifacts._http import HttpArtifactStore
from meguri.store.artifacts._keys import Key, KeyRing, load_key_ring
from meguri.store.artifacts._memory import memory_cache_folder

__all__ = [
    "ArtifactStore",
    "EncryptedArtifactStore",
    "FsspecArtifactStore",
    "HttpArtifactStore",
    "Key",
    "KeyRing",
    "RotationReport",
    "StoredArtifact",
    "load_key_ring",
    "memory_cache_folder",
    "open_artifact_store",
]
