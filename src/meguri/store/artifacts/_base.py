"""The artifact store contract.

An artifact store keeps immutable blobs addressed by the sha256 of their content
(``sha256/ab/cdef…`` under the store's root). Its contract, which the suite in
``meguri.testing.contract_artifacts`` checks on every backend:

* ``put_*`` returns the hex sha256 digest and size; storing identical content twice keeps one
  copy and returns the same digest.
* A write is atomic: until it completes, readers see no object at that digest; a write killed
  half-way (even by SIGKILL) leaves no visible partial object.
* ``get_bytes``/``get_file`` verify the sha256 of what they read and raise
  :class:`~meguri.errors.ArtifactCorruptedError` on a mismatch; a missing digest raises
  :class:`~meguri.errors.NotFoundError`.
* Callers never choose storage paths: the store derives every path from the digest.
* With encryption at rest (``encrypts_at_rest``), the digest is still the sha256 of the
  plaintext; only the stored bytes differ (``meguri.store.artifacts._sealed``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    digest: str
    size: int


class ArtifactStore(ABC):
    """Content-addressed blob storage; see the module docstring for the contract."""

    url: str

    encrypts_at_rest: bool = False
    """Whether objects are encrypted on the storage: callers that would otherwise keep a
    plaintext copy on disk (the model package cache) keep it in memory instead."""

    @abstractmethod
    def put_bytes(self, data: bytes) -> StoredArtifact:
        """Store ``data``; return its digest and size."""

    @abstractmethod
    def put_file(self, path: str | Path) -> StoredArtifact:
        """Store the file at ``path`` (streamed, hashed while copying)."""

    @abstractmethod
    def get_bytes(self, digest: str) -> bytes:
        """The verified content stored under ``digest``."""

    @abstractmethod
    def get_file(self, digest: str, dest: str | Path) -> Path:
        """Copy the verified content under ``digest`` to the local file ``dest``."""

    @abstractmethod
    def exists(self, digest: str) -> bool:
        """Whether a complete object is stored under ``digest``."""
